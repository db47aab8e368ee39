"""The reference loudspeaker: what a device maker implements, in Python.

It subscribes with its key, repeats the subscription as a keepalive with its
status, receives RTP, reorders it in a jitter buffer, decodes Opus (with
packet-loss concealment for gaps) and writes the audio to a WAV file or
discards it. Tests and benchmarks run this same code.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall

from broadcaster.codecs.opus import OpusCodecError, OpusDecoder
from broadcaster.codecs.pcm import Audio
from broadcaster.protocols.rtp import RtpError, parse_rtp, seq_delta
from broadcaster.protocols.speaker import (
    MAGIC,
    MessageType,
    ProtocolError,
    SpeakerStatus,
    encode_message,
    parse_envelope,
)
from broadcaster.speaker.jitter import JitterBuffer

RETRY_S = 1.0  # subscribe retry interval until the first ACK
COMMAND_WINDOW_S = 30.0


class SubscriptionMessages:
    """Builds a device's signed requests; (ts, seq) always increases."""

    def __init__(self, device: str, key: bytes, channel: str, wall: Callable[[], float] = time.time) -> None:
        self.device = device
        self.key = key
        self.channel = channel
        self.wall = wall
        self._seq = itertools.count()
        self.cookie: str | None = None  # from the server's last ACK; echoing it proves our address

    def subscribe(self, status: SpeakerStatus | None = None) -> bytes:
        body: dict[str, Any] = {"channel": self.channel, "ts": int(self.wall() * 1000), "seq": next(self._seq)}
        if self.cookie:
            body["cookie"] = self.cookie
        if status is not None:
            body["status"] = status.as_dict()
        return encode_message(MessageType.SUBSCRIBE, self.device, body, self.key)

    def command_ack(self, command_seq: int) -> bytes:
        body = {"ts": int(self.wall() * 1000), "seq": next(self._seq), "command": command_seq}
        return encode_message(MessageType.COMMAND_ACK, self.device, body, self.key)

    def unsubscribe(self) -> bytes:
        body = {"channel": self.channel, "ts": int(self.wall() * 1000), "seq": next(self._seq)}
        return encode_message(MessageType.UNSUBSCRIBE, self.device, body, self.key)


class SpeakerClient(DatagramProtocol):
    def __init__(self, messages: SubscriptionMessages, server: tuple[str, int], reactor: Any, *,
                 sink: Callable[[Audio], None] | None = None, target_delay_s: float = 0.12) -> None:
        self.messages = messages
        self.server = server
        self.reactor = reactor
        self.sink = sink
        self.target_delay_s = target_delay_s
        self.started = reactor.seconds()
        self.acks = 0
        self.refusals: list[str] = []
        self.ignored = 0
        self.decode_errors = 0
        self.rtp_info: dict[str, Any] = {}
        self.commands: list[dict[str, Any]] = []
        self._last_command = (-1, -1)
        self.jitter: JitterBuffer | None = None
        self.decoder: OpusDecoder | None = None
        self._keepalive = LoopingCall(self._send_subscribe)
        self._keepalive.clock = reactor
        self._playout = LoopingCall(self._play)
        self._playout.clock = reactor

    def startProtocol(self) -> None:  # noqa: N802
        self._keepalive.start(RETRY_S, now=True)

    def _send_subscribe(self) -> None:
        status = SpeakerStatus(volume=80, signal_dbm=-70, uptime_s=int(self.reactor.seconds() - self.started),
                               amplifier_on=True)
        self._send(self.messages.subscribe(status))

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            try:
                self.transport.write(data, self.server)
            except OSError:
                pass  # retried at the next keepalive

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        if addr != self.server:
            self.ignored += 1  # only the server we subscribed to may send us anything
            return
        if data[:4] == MAGIC:
            self._control(data)
        elif self.jitter is not None:
            try:
                packet = parse_rtp(data)
            except RtpError:
                self.ignored += 1
                return
            self.jitter.push(packet, self.reactor.seconds())

    def _control(self, data: bytes) -> None:
        try:
            envelope = parse_envelope(data)
            if envelope.device_id != self.messages.device or not envelope.verify(self.messages.key):
                raise ProtocolError("bad_mac", "reply not signed with our key")
            body = envelope.json()
        except ProtocolError:
            self.ignored += 1
            return
        if envelope.type is MessageType.COMMAND:
            self._command(body)
            return
        if envelope.type is MessageType.REFUSE:
            self.refusals.append(str(body.get("reason")))
            return
        if envelope.type is not MessageType.ACK:
            return
        if isinstance(body.get("cookie"), str):
            self.messages.cookie = body["cookie"]
        if body.get("verified") is False:
            self._send_subscribe()  # echo the cookie at once: audio starts on the next ACK
            return
        if not body.get("expires_s"):
            return
        self.acks += 1
        if self.jitter is None:
            self.rtp_info = dict(body.get("rtp") or {})
            frame_s = int(self.rtp_info.get("frame_ms", 20)) / 1000.0
            self.jitter = JitterBuffer(frame_s=frame_s, target_delay_s=self.target_delay_s)
            self.decoder = OpusDecoder(int(frame_s * 48000))
            self._playout.start(frame_s / 2, now=False)
            keepalive_s = float(body.get("keepalive_s", 5.0))
            self._keepalive.stop()
            self._keepalive.start(keepalive_s, now=False)

    def _command(self, body: dict[str, Any]) -> None:
        """Apply an alert command (a real device switches its amplifier and volume here) and acknowledge it.
        Only fresh commands: ts within the window and (ts, seq) newer than the last one applied."""
        ts, seq = body.get("ts"), body.get("seq")
        if not isinstance(ts, int) or not isinstance(seq, int):
            return
        if abs(ts / 1000 - self.messages.wall()) > COMMAND_WINDOW_S or (ts, seq) <= self._last_command:
            self.ignored += 1
            return
        self._last_command = (ts, seq)
        self.commands.append({k: body.get(k) for k in ("alert", "amp", "volume")})
        if isinstance(body.get("seq"), int):
            self._send(self.messages.command_ack(body["seq"]))

    def _play(self) -> None:
        assert self.jitter is not None and self.decoder is not None
        for payload in self.jitter.pop_due(self.reactor.seconds()):
            try:
                frame = self.decoder.decode(payload) if payload is not None else self.decoder.conceal()
            except OpusCodecError:
                self.decode_errors += 1
                frame = self.decoder.conceal()
            if self.sink is not None:
                self.sink(frame)

    def stop(self) -> None:
        for loop in (self._keepalive, self._playout):
            if loop.running:
                loop.stop()
        self._send(self.messages.unsubscribe())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = {"acked": self.acks > 0, "acks": self.acks, "refusals": self.refusals,
                                  "commands": self.commands,
                                  "ignored": self.ignored, "decode_errors": self.decode_errors}
        if self.jitter is not None:
            result.update(asdict(self.jitter.stats))
        return result


def parse_server(text: str) -> tuple[str, int]:
    """HOST:PORT to the (address, port) replies will come from (names resolved once)."""
    import socket

    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return socket.gethostbyname(host.strip("[]")), int(port)


def run_speaker(*, device: str, key: bytes, channel: str, server: str, out: Path | None,
                duration_s: float | None, target_delay_s: float = 0.12) -> dict[str, Any]:
    """Run one loudspeaker on the global reactor until duration_s passes or it is interrupted."""
    from twisted.internet import reactor

    wav = soundfile.SoundFile(str(out), "w", samplerate=48000, channels=1, subtype="PCM_16") if out else None

    def sink(frame: Audio) -> None:
        if wav is not None:
            wav.write(np.clip(frame, -1.0, 1.0))

    client = SpeakerClient(SubscriptionMessages(device, key, channel), parse_server(server), reactor,
                           sink=sink, target_delay_s=target_delay_s)
    reactor.listenUDP(0, client)  # type: ignore[attr-defined]

    def finish() -> None:
        client.stop()
        reactor.callLater(0.05, reactor.stop)

    if duration_s is not None:
        reactor.callLater(duration_s, finish)
    try:
        reactor.run()
    finally:
        if wav is not None:
            wav.close()
    return client.stats()


class SpeakerSwarm:
    """Many loudspeakers in one process, for load tests.

    Each simulated loudspeaker has its own UDP socket and key and speaks the
    same protocol as SpeakerClient (SubscriptionMessages), but only counts
    RTP sequence numbers instead of decoding: thousands of decoders would
    measure this process, not the server. A plain epoll loop, not the
    reactor, keeps the per-packet cost to one recv and one struct read.
    """

    def __init__(self, devices: list[tuple[str, bytes]], channel: str | list[str], server: tuple[str, int],
                 rcvbuf_bytes: int = 1 << 18) -> None:
        """channel: one for all, or one per device."""
        import select
        import socket

        self.server = server
        self.poller = select.epoll()
        channels = channel if isinstance(channel, list) else [channel] * len(devices)
        self.messages = [SubscriptionMessages(device, key, c) for (device, key), c in zip(devices, channels,
                                                                                            strict=True)]
        self.sockets = []
        for _ in devices:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            self.sockets.append(sock)
        self._index = {sock.fileno(): i for i, sock in enumerate(self.sockets)}
        for sock in self.sockets:
            self.poller.register(sock.fileno(), select.EPOLLIN)
        n = len(devices)
        self.acked = [False] * n
        self.first = [-1] * n          # first RTP sequence seen (extended)
        self.highest = [-1] * n        # highest extended sequence seen
        self.received = [0] * n
        self.late = [0] * n            # arrived after a higher sequence number
        self.marker_after: float | None = None  # when set: note the first marked packet after this time
        self.first_marker: list[float | None] = [None] * n

    def subscribe_all(self, only_unacked: bool = False, batch: int = 100) -> None:
        """Send a SUBSCRIBE from every loudspeaker, in batches with a short receive
        in between, as a fleet of real devices would not all fire in the same millisecond."""
        for i, (sock, messages) in enumerate(zip(self.sockets, self.messages, strict=True)):
            if only_unacked and self.acked[i]:
                continue
            try:
                sock.sendto(messages.subscribe(), self.server)
            except BlockingIOError:
                pass  # retried at the next keepalive
            if i % batch == batch - 1:
                self.run(0.005)

    def subscribe_until_acked(self, timeout_s: float = 30.0) -> int:
        """Retry like a device does (every second) until every loudspeaker has its ACK."""
        deadline = time.monotonic() + timeout_s
        self.subscribe_all()
        while sum(self.acked) < len(self.sockets) and time.monotonic() < deadline:
            self.run(RETRY_S, keepalive_s=3600)
            self.subscribe_all(only_unacked=True)
        return sum(self.acked)

    def run(self, duration_s: float, keepalive_s: float = 2.0) -> None:
        """Receive for duration_s, re-subscribing every keepalive_s."""
        from broadcaster.protocols.rtp import rtp_sequence

        end = time.monotonic() + duration_s
        next_keepalive = time.monotonic() + keepalive_s
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_keepalive:
                self.subscribe_all()
                next_keepalive = now + keepalive_s
            for fd, _ in self.poller.poll(min(0.05, end - now)):
                i = self._index[fd]
                sock = self.sockets[i]
                while True:
                    try:
                        data = sock.recv(2048)
                    except BlockingIOError:
                        break
                    if data[:4] == MAGIC:
                        self._control(i, data)
                        continue
                    self._count(i, rtp_sequence(data))
                    if self.marker_after is not None and data[1] & 0x80 and self.first_marker[i] is None:
                        now = time.monotonic()
                        if now >= self.marker_after:
                            self.first_marker[i] = now

    def _control(self, i: int, data: bytes) -> None:
        messages = self.messages[i]
        try:
            envelope = parse_envelope(data)
            if not envelope.verify(messages.key):
                return
            body = envelope.json()
        except ProtocolError:
            return
        if isinstance(body.get("cookie"), str):
            messages.cookie = body["cookie"]
        if body.get("verified") is False:
            try:
                self.sockets[i].sendto(messages.subscribe(), self.server)
            except BlockingIOError:
                pass
        elif envelope.type is MessageType.ACK and body.get("expires_s"):
            self.acked[i] = True

    def _count(self, i: int, seq: int) -> None:
        highest = self.highest[i]
        if highest < 0:
            self.first[i] = self.highest[i] = seq
            self.received[i] = 1
            return
        extended = highest + seq_delta(highest & 0xFFFF, seq)  # extended around the highest seen
        self.received[i] += 1
        if extended > highest:
            self.highest[i] = extended
        else:
            self.late[i] += 1

    def reset_counts(self) -> None:
        n = len(self.sockets)
        self.first, self.highest, self.received, self.late = [-1] * n, [-1] * n, [0] * n, [0] * n

    def totals(self) -> dict[str, int]:
        expected = sum(h - f + 1 for f, h in zip(self.first, self.highest, strict=True) if h >= 0)
        received = sum(self.received)
        return {"speakers": len(self.sockets), "acked": sum(self.acked),
                "hearing": sum(1 for h in self.highest if h >= 0), "received": received,
                "expected": expected, "lost": max(0, expected - received), "late": sum(self.late)}

    def close(self) -> None:
        for sock, messages in zip(self.sockets, self.messages, strict=True):
            try:
                sock.sendto(messages.unsubscribe(), self.server)
            except OSError:
                pass
            sock.close()
        self.poller.close()
