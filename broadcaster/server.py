"""Wiring: build channels, the subscription table and the listening ports
from a Config, and drive every channel from one FrameClock."""

from __future__ import annotations

import logging
import socket
import sys
from functools import partial
from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall

from broadcaster.channel import Channel
from broadcaster.clock import FrameClock
from broadcaster.config import Config
from broadcaster.fanout import LoopFanout, make_fanout
from broadcaster.http import make_site
from broadcaster.mixer import Priority
from broadcaster.protocols.speaker import SpeakerDatagramProtocol
from broadcaster.sources import BufferSource
from broadcaster.subscriptions import Device, SubscriptionTable

log = logging.getLogger(__name__)

SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # Linux <asm-generic/socket.h>; Python does not export them


def _grow_buffers(sock: socket.socket, size: int) -> None:
    """Room for a frame's fan-out and for a fleet's keepalives arriving together.

    The plain options are capped by net.core.[rw]mem_max; the FORCE variants
    (root only) are not, so try them first."""
    linux = sys.platform.startswith("linux")
    for force, plain in ((SO_SNDBUFFORCE if linux else None, socket.SO_SNDBUF),
                         (SO_RCVBUFFORCE if linux else None, socket.SO_RCVBUF)):
        try:
            if force is None:
                raise PermissionError
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


class MulticastSender:
    """The channel's RTP to its multicast group, on a socket of its own with the group's TTL."""

    def __init__(self, group: str, port: int, ttl: int) -> None:
        family = socket.AF_INET6 if ":" in group else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        if family == socket.AF_INET:
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        else:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
        self.address = (group, port)

    def send(self, packet: bytes) -> tuple[int, int]:
        try:
            self.sock.sendto(packet, self.address)
        except OSError:
            return 0, 1
        return 1, 0

    def __len__(self) -> int:
        return 1

    def close(self) -> None:
        self.sock.close()


class BroadcastServer:
    def __init__(self, config: Config, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.clock = FrameClock(reactor, config.audio.frame_ms / 1000.0)
        self.channels: dict[str, Channel] = {}
        self.multicast: list[MulticastSender] = []
        self.udp_port: IListeningPort | None = None
        self.http_port: IListeningPort | None = None
        self._expiry = LoopingCall(self._expire)
        self._expiry.clock = reactor
        self.subscriptions = SubscriptionTable(
            (Device(id=s.id, key=s.key.encode("utf-8"), channel=s.channel, zone=s.zone)
             for s in config.loudspeakers),
            config.speakers,
            channel_info=lambda cid: self.channels[cid].rtp_info if cid in self.channels else None,
            on_change=self._speakers_changed,
        )

    def start(self, http_port: int | None = None, udp_port: int | None = None) -> tuple[int, int]:
        """Listen and start the clock; returns the bound (http, udp) ports."""
        host = self.config.server.host
        protocol = SpeakerDatagramProtocol(self.subscriptions, self.reactor.seconds)
        self.udp_port = self.reactor.listenUDP(
            self.config.server.udp_port if udp_port is None else udp_port, protocol, interface=host)
        sock = self.udp_port.socket  # type: ignore[union-attr]
        _grow_buffers(sock, 4 * 1024 * 1024)
        for cfg in self.config.channels:
            multicast = None
            if cfg.multicast is not None:
                multicast = MulticastSender(cfg.multicast.group, cfg.multicast.port, cfg.multicast.ttl)
                self.multicast.append(multicast)
            fanout = LoopFanout(sock) if self.config.server.udp_fanout == "loop" else make_fanout(sock)
            channel = Channel(cfg, self.config.audio, self.config.http, fanout, multicast,
                              speaker_addresses=partial(self.subscriptions.addresses, cfg.id))
            if cfg.loop is not None:
                channel.mixer.add(BufferSource.from_file(cfg.loop, frame_samples=channel.frame_samples, loop=True),
                                  gain_db=cfg.loop_gain_db, priority=Priority.BACKGROUND)
            self.channels[cfg.id] = channel
            self.clock.add_handler(channel.tick)
        self.http_port = self.reactor.listenTCP(
            self.config.server.http_port if http_port is None else http_port, make_site(self), interface=host)
        self.clock.start()
        self._expiry.start(1.0, now=False)
        return self.http_port.getHost().port, self.udp_port.getHost().port  # type: ignore[union-attr]

    def stop(self) -> None:
        self.clock.stop()
        if self._expiry.running:
            self._expiry.stop()
        for port in (self.http_port, self.udp_port):
            if port is not None:
                port.stopListening()
        for sender in self.multicast:
            sender.close()

    def _expire(self) -> None:
        self.subscriptions.expire(self.reactor.seconds())

    def _speakers_changed(self, channel_id: str) -> None:
        channel = self.channels.get(channel_id)
        if channel is not None:
            channel.speakers_changed()

    def describe_channel(self, channel: Channel) -> dict[str, Any]:
        cfg = channel.config
        return {
            "id": cfg.id,
            "name": cfg.name,
            "zone": cfg.zone,
            "public": cfg.public,
            "listeners": len(channel.listeners),
            "loudspeakers": len(channel.speakers),
            "multicast": None if cfg.multicast is None else {
                "group": cfg.multicast.group, "port": cfg.multicast.port, "ttl": cfg.multicast.ttl},
            "stream": f"/channels/{cfg.id}.ogg",
            "sdp": f"/channels/{cfg.id}.sdp" if cfg.multicast else None,
        }

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "channels": len(self.channels),
                "loudspeakers_online": len(self.subscriptions.subscriptions),
                "ticks": self.clock.tick_index, "ticks_missed": self.clock.missed}
