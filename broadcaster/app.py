"""Wiring: build channels, the subscription table and the listening ports
from a Config, and drive every channel from one FrameClock."""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
import weakref
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidTag
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool

from broadcaster import metrics
from broadcaster.codecs.audiofile import AudioFileError
from broadcaster.config import ChannelConfig, Config, Multicast
from broadcaster.control.alerts import AlertDesk, EspeakTTS
from broadcaster.control.auth import ZoneTree
from broadcaster.control.programmes import ProgrammeRunner, programme_from_row
from broadcaster.control.schedule import Schedule, ScheduleError
from broadcaster.control.studio import describe_live
from broadcaster.core.channel import Channel
from broadcaster.core.clock import FrameClock
from broadcaster.core.fanout import LoopFanout, make_fanout
from broadcaster.core.mixer import Priority
from broadcaster.core.sources import BufferSource
from broadcaster.core.subscriptions import Device, Subscription, SubscriptionTable
from broadcaster.protocols.speaker import BoundedUdpPort, SpeakerDatagramProtocol
from broadcaster.storage import KeySealer, Storage, seed_from_config
from broadcaster.web.site import make_site

log = logging.getLogger(__name__)

RESTORE_RETRY_S = 30.0
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


def multicast_sender(group: str, port: int, ttl: int) -> LoopFanout:
    """The channel's RTP to its multicast group: a fan-out of one, on a socket of
    its own that carries the group's TTL."""
    family = socket.AF_INET6 if ":" in group else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
    sender = LoopFanout(sock)
    sender.set_targets([(group, port)])
    return sender


class BroadcastServer:
    """The running server. The database is the truth for zones, channels and
    loudspeakers; the configuration file only seeds an empty database."""

    FLUSH_S = 1.0

    def __init__(self, config: Config, reactor: Any, storage: Storage | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.storage = storage or Storage(config.storage.path, KeySealer.from_file(config.storage.secret_file))
        if self.storage.is_empty():
            seed_from_config(self.storage, config)
        config.storage.media_dir.mkdir(parents=True, exist_ok=True)
        self.clock = FrameClock(reactor, config.audio.frame_ms / 1000.0)
        self.channels: dict[str, Channel] = {}
        self.multicast: list[LoopFanout] = []
        self.udp_port: BoundedUdpPort | None = None
        self.http_port: IListeningPort | None = None
        self._socket: socket.socket | None = None
        self._loop_log: dict[str, int] = {}
        self._live_seen: weakref.WeakKeyDictionary[Any, tuple[int, int]] = weakref.WeakKeyDictionary()
        # Two clocks: the reactor's (monotonic under `broadcaster serve`) paces audio and
        # timeouts; wall-clock time stamps records and checks device timestamps.
        self.wall = time.time
        self._cleaner = LoopingCall(self._clean_recordings)
        self._cleaner.clock = reactor
        self.schedule = Schedule(ZoneInfo(config.schedule.timezone))
        self.programmes = ProgrammeRunner(self, self.schedule)
        self._scheduler = LoopingCall(self.programmes.poll)
        self._scheduler.clock = reactor
        try:
            tts: EspeakTTS | None = EspeakTTS()
        except RuntimeError as exc:
            log.warning("text alerts will play only their attention signal: %s", exc)
            tts = None
        self.alerts = AlertDesk(self, tts)
        self._command_alert: dict[int, tuple[Any, bool]] = {}  # command seq -> (alert, on)
        self.zones = ZoneTree()
        self._expiry = LoopingCall(self._expire)
        self._expiry.clock = reactor
        self._flusher = LoopingCall(self._flush)
        self._flusher.clock = reactor
        self.subscriptions = SubscriptionTable(
            (), config.speakers,
            channel_info=lambda cid: self.channels[cid].rtp_info if cid in self.channels else None,
            on_change=self._speakers_changed,
            on_session=self._session,
        )
        self.subscriptions.on_command_ack = self._command_ack

    def start(self, http_port: int | None = None, udp_port: int | None = None) -> tuple[int, int]:
        """Listen and start the clock; returns the bound (http, udp) ports."""
        self._close_dangling()
        host = self.config.server.host
        # Subscriptions compare device timestamps: wall-clock time, not the audio clock.
        protocol = SpeakerDatagramProtocol(self.subscriptions, self.wall)
        self.udp_port = BoundedUdpPort(self.config.server.udp_port if udp_port is None else udp_port, protocol,
                                       interface=host, reactor=self.reactor)
        self.udp_port.startListening()
        self._socket = self.udp_port.socket
        _grow_buffers(self._socket, 4 * 1024 * 1024)
        self.reload_zones()
        self.reload_channels()
        self.reload_devices()
        self.reload_programmes()
        self.http_port = self.reactor.listenTCP(
            self.config.server.http_port if http_port is None else http_port, make_site(self), interface=host)
        self.clock.start()
        self._expiry.start(1.0, now=False)
        self._flusher.start(self.FLUSH_S, now=False)
        self._cleaner.start(86400, now=True)
        self._scheduler.start(0.5, now=True)
        return self.http_port.getHost().port, self.udp_port.getHost().port  # type: ignore[union-attr]

    def stop(self) -> None:
        self.clock.stop()
        for loop in (self._expiry, self._flusher, self._cleaner, self._scheduler):
            if loop.running:
                loop.stop()
        self.subscriptions.end_all(self.wall())
        self.programmes.stop()
        self.end_play(list(self._loop_log.values()), "stopped")
        self._loop_log.clear()
        for port in (self.http_port, self.udp_port):
            if port is not None:
                port.stopListening()
        for sender in self.multicast:
            sender.sock.close()
        self.storage.flush()

    # --- the database is the truth -------------------------------------------

    def reload_zones(self) -> None:
        self.zones = ZoneTree.from_rows(self.storage.query("SELECT id, name, kind, parent FROM zones"))

    def reload_channels(self) -> None:
        """Build channels that exist in the database but not yet here (added live by the API)."""
        assert self._socket is not None
        for row in self.storage.query("SELECT * FROM channels ORDER BY id"):
            if row["id"] in self.channels:
                continue
            cfg = channel_config(row)
            multicast = None
            if cfg.multicast is not None:
                multicast = multicast_sender(cfg.multicast.group, cfg.multicast.port, cfg.multicast.ttl)
                self.multicast.append(multicast)
            fanout = LoopFanout(self._socket) if self.config.server.udp_fanout == "loop" else make_fanout(self._socket)
            channel = Channel(cfg, self.config.audio, self.config.http, fanout, multicast,
                              speaker_addresses=partial(self.subscriptions.addresses, cfg.id))
            if cfg.loop is not None:
                try:
                    source = BufferSource.from_file(cfg.loop, frame_samples=channel.frame_samples, loop=True)
                except AudioFileError as exc:
                    log.error("channel %s: cannot play its loop programme: %s", cfg.id, exc)
                else:
                    channel.mixer.add(source, gain_db=cfg.loop_gain_db, priority=Priority.BACKGROUND)
                    self._log_loop(cfg)
            self.channels[cfg.id] = channel
            self.clock.add_handler(channel.tick)

    def channels_in(self, zones: list[str]) -> tuple[str, ...]:
        """The channels a set of target zones resolves to (their whole subtrees)."""
        covered: set[str] = set()
        for zone in zones:
            covered |= self.zones.subtree(zone)
        return tuple(sorted(c.id for c in self.channels.values() if c.config.zone in covered))

    def reload_programmes(self) -> None:
        for row in self.storage.query("SELECT * FROM programmes ORDER BY created_at"):
            programme = programme_from_row(row, self.channels_in(json.loads(row["zones"])))
            try:
                self.schedule.add(programme)
            except ScheduleError as exc:  # stored before a channel moved zones, say
                log.error("programme %s not scheduled: %s", programme.id, exc)

    def device_changed(self, device_id: str) -> None:
        """The API registered, edited, re-keyed or deleted one loudspeaker."""
        self.reload_devices()

    def speaker_session(self, device_id: str) -> Subscription | None:
        """The loudspeaker's live subscription (address, last heartbeat, status), if online."""
        return self.subscriptions.subscriptions.get(device_id)

    def reload_devices(self) -> None:
        devices = []
        for row in self.storage.query("SELECT id, zone, channel, key_sealed, volume FROM loudspeakers"):
            try:
                key = self.storage.sealer.open(row["id"], row["key_sealed"])
            except InvalidTag:
                log.error("loudspeaker %s: its stored key does not open with this server's secret", row["id"])
                continue
            devices.append(Device(id=row["id"], key=key, channel=row["channel"], zone=row["zone"],
                                  volume=row["volume"]))
        self.subscriptions.set_devices(devices, self.wall())

    # --- records -----------------------------------------------------------------

    def _log_loop(self, cfg: ChannelConfig) -> None:
        assert cfg.loop is not None
        self._loop_log[cfg.id] = self.log_play([cfg], "loop", cfg.loop.name, "system")[0]

    def log_play(self, channels: list[Any], kind: str, item: str, by: str, detail: str = "") -> list[int]:
        """One broadcast-log entry per channel; returns their ids for end_play.

        Written at once (a few rows, on the reactor thread) because the ids are
        needed to close the entries; the closing updates are queued."""
        ids = []
        with self.storage.transaction() as db:
            for channel in channels:
                config = getattr(channel, "config", channel)
                cursor = db.execute("INSERT INTO broadcast_log (channel, zone, kind, item, started_at, started_by, "
                                    "detail) VALUES (?,?,?,?,?,?,?)",
                                    (config.id, config.zone, kind, item, self.wall(), by, detail))
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def note_play(self, ids: list[int], note: str) -> None:
        for entry in ids:
            self.storage.enqueue("UPDATE broadcast_log SET detail = TRIM(detail || ' ' || ?) WHERE id = ?",
                                 (note, entry))

    def command_speakers(self, alert: Any, on: bool, channels: list[str] | None = None,
                         skip: set[str] | frozenset[str] = frozenset(), only: set[str] | None = None) -> None:
        """Amplifier on and alert volume at the start, the devices' own volume after.
        Repeated every second to those that have not acknowledged (see _resend_commands)."""
        assert self.udp_port is not None
        body = {"alert": alert.id, "amp": True, "volume": alert.volume} if on else {"alert": None}
        seq, datagrams = self.subscriptions.command(alert.channels if channels is None else channels, body,
                                                    self.wall())
        if len(self._command_alert) > 10000:
            self._command_alert.clear()  # acknowledgements of long-gone commands are no longer wanted
        self._command_alert[seq] = (alert, on)
        for address, datagram, device_id in datagrams:
            if device_id in skip or (only is not None and device_id not in only):
                continue
            if on:
                alert.commanded.add(device_id)
            try:
                self.udp_port.write(datagram, address)
            except OSError:
                continue
            metrics.speaker_commands_total.labels("sent").inc()

    def _command_ack(self, device_id: str, seq: int) -> None:
        metrics.speaker_commands_total.labels("acknowledged").inc()
        alert, on = self._command_alert.get(seq, (None, True))
        if alert is not None:
            (alert.acknowledged if on else alert.restored).add(device_id)

    def _resend_commands(self) -> None:
        """UDP loses datagrams: a loudspeaker that missed its alert command (or subscribed
        during the alert) is told again each second until it acknowledges; after the alert,
        the restore is repeated for RESTORE_RETRY_S."""
        for alert in list(self.alerts.active.values()):
            if alert.log_ids:  # its first frame has gone and the first round of commands with it
                self.command_speakers(alert, on=True, skip=alert.acknowledged)
        on_air = {c for a in self.alerts.active.values() for c in a.channels}
        now = self.reactor.seconds()
        for alert in list(self.alerts.recent.values()):
            pending = alert.commanded - alert.restored
            if pending and alert.ended_at and now - alert.ended_at < RESTORE_RETRY_S:
                self.command_speakers(alert, on=False, channels=[c for c in alert.channels if c not in on_air],
                                      only=pending)

    def end_play(self, ids: list[int], outcome: str) -> None:
        now = self.wall()
        for entry in ids:
            self.storage.enqueue("UPDATE broadcast_log SET ended_at = ?, outcome = ? WHERE id = ? AND ended_at IS NULL",
                                 (now, outcome, entry))

    def _session(self, event: str, subscription: Subscription, now: float) -> None:
        device = self.subscriptions.devices.get(subscription.device_id)
        if event == "start":
            self.storage.enqueue("INSERT INTO speaker_sessions (loudspeaker, zone, channel, started_at) "
                                 "VALUES (?,?,?,?)", (subscription.device_id, device.zone if device else "",
                                                      subscription.channel, now))
        else:
            self.storage.enqueue("UPDATE speaker_sessions SET ended_at = ? WHERE loudspeaker = ? AND ended_at IS NULL",
                                 (now, subscription.device_id))

    def _close_dangling(self) -> None:
        """What a crash left open ends at the last heartbeat the server wrote."""
        rows = self.storage.query("SELECT value FROM meta WHERE key = 'heartbeat'")
        if not rows:
            return
        beat = rows[0]["value"]
        with self.storage.transaction() as db:
            db.execute("UPDATE speaker_sessions SET ended_at = MAX(started_at, ?) WHERE ended_at IS NULL", (beat,))
            db.execute("UPDATE broadcast_log SET ended_at = MAX(started_at, ?), outcome = 'interrupted' "
                       "WHERE ended_at IS NULL", (beat,))

    def _flush(self) -> Any:
        self.storage.enqueue("INSERT OR REPLACE INTO meta (key, value) VALUES ('heartbeat', ?)",
                             (self.wall(),))
        deferred = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.storage.flush)

        def failed(failure: Any) -> None:
            metrics.storage_flush_errors_total.inc()
            log.error("writing the broadcast log failed (kept for the next try): %s", failure.getErrorMessage())

        deferred.addErrback(failed)
        return None

    def _expire(self) -> None:
        """Once a second: end silent subscriptions, repeat unacknowledged commands, export live-buffer state."""
        self.subscriptions.expire(self.wall())
        self._resend_commands()
        for channel in self.channels.values():
            session = channel.live
            if session is None:
                continue
            source = session.sources[channel.id]
            metrics.live_buffer_seconds.labels(channel.id).set(source.depth_s)
            seen = self._live_seen.get(source, (0, 0))
            metrics.live_underruns_total.labels(channel.id).inc(source.stats.underruns - seen[0])
            metrics.live_overrun_seconds_total.labels(channel.id).inc((source.stats.overruns - seen[1]) / 48000)
            self._live_seen[source] = (source.stats.underruns, source.stats.overruns)

    def _clean_recordings(self) -> int:
        """Delete studio recordings older than the retention setting."""
        cutoff = self.wall() - self.config.live.recording_retention_days * 86400
        removed = 0
        root = self.config.live.recordings_dir
        if root.is_dir():
            for path in root.glob("*/*.ogg"):
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.info("removed %d studio recordings older than %d days", removed,
                     self.config.live.recording_retention_days)
        return removed

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
            "live": describe_live(channel),
        }

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "channels": len(self.channels), "schema_version": self.storage.version,
                "loudspeakers_online": len(self.subscriptions.subscriptions),
                "ticks": self.clock.tick_index, "ticks_missed": self.clock.missed}


def channel_config(row: dict[str, Any]) -> ChannelConfig:
    multicast = None
    if row["multicast_group"]:
        multicast = Multicast(group=row["multicast_group"], port=row["multicast_port"], ttl=row["multicast_ttl"])
    return ChannelConfig(id=row["id"], name=row["name"], zone=row["zone"], public=bool(row["public"]),
                         multicast=multicast, loop=Path(row["loop_path"]) if row["loop_path"] else None,
                         loop_gain_db=row["loop_gain_db"])
