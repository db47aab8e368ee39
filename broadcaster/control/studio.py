"""Studio sessions: who may go live where, and what a live session does.

The ingest connection (protocols/ingest.py) hands each source request to
``StudioDesk.open``: HTTP Basic credentials are checked against the stored
users, the mount names a channel (``/ingest/{channel}``) or zones
(``/ingest/zone/{zone}[,{zone}...]``: all their channels), and an operator
may only go live inside its zones. A session decodes the stream once and
pushes the PCM to a LiveSource on every target channel, records the session
to an Ogg/Opus file, and writes one broadcast-log entry per channel.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
from twisted.internet.defer import Deferred

from broadcaster import metrics
from broadcaster.codecs.decoders import StreamDecoder, sniff_decoder
from broadcaster.codecs.ogg import OggOpusWriter
from broadcaster.codecs.opus import OpusEncoder, OpusSettings
from broadcaster.codecs.pcm import Audio
from broadcaster.control.auth import Action, Forbidden, Principal, authorize
from broadcaster.control.logins import LoginGuard
from broadcaster.control.space import DiskFull, is_full, require
from broadcaster.core.commands import AddInput, InputEnded, LiveAudio, LiveEnd, RemoveInput
from broadcaster.core.mixer import Priority
from broadcaster.core.sources.live import LiveSpec
from broadcaster.protocols.ingest import Refusal, SourceRequest

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer
    from broadcaster.control.channels import ChannelView as Channel

log = logging.getLogger(__name__)
MOUNT = re.compile(r"^/ingest/(?:zone/(?P<zones>[^/]+)|(?P<channel>[^/]+))$")
SNIFF_BYTES = 64 * 1024  # give up on a stream that is neither Ogg nor MP3 after this much


class SessionRecording:
    """The session's audio as an Ogg/Opus file, written as it goes."""

    def __init__(self, path: Path, frame_samples: int = 960) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.encoder = OpusEncoder(OpusSettings(frame_samples=frame_samples, bitrate=48000))
        self.writer = OggOpusWriter(serial=uuid.uuid4().int & 0x7FFFFFFF, pre_skip=self.encoder.lookahead,
                                    page_samples=48000)
        self.file = path.open("wb")
        self.file.write(self.writer.header_pages)
        self._pending = np.zeros(0, dtype=np.float32)
        self.frame_samples = frame_samples

    def write(self, pcm: Audio) -> None:
        self._pending = np.concatenate([self._pending, pcm])
        n = self.frame_samples
        while self._pending.size >= n:
            frame, self._pending = self._pending[:n], self._pending[n:]
            page = self.writer.add_packet(self.encoder.encode(frame), n)
            if page:
                self.file.write(page)

    def close(self) -> None:
        page = self.writer.flush(eos=True)
        if page:
            self.file.write(page)
        self.file.close()


class LiveSession:
    def __init__(self, desk: StudioDesk, principal: Principal, request: SourceRequest,
                 channels: list[Channel]) -> None:
        self.desk = desk
        self.id = uuid.uuid4().hex[:12]
        self.principal = principal
        self.channels = channels
        self.name = request.headers.get("ice-name") or f"live {principal.name}"
        self.description = request.headers.get("ice-description", "")
        self.decoder: StreamDecoder | None = None
        self._head = b""
        self.bytes = 0
        self.closed = False
        self.connection: Any = None
        settings = desk.app.config.live
        # No bytes for this long and the connection is dropped: a studio whose
        # network died without a FIN must not hold the channel.
        self.idle_timeout_s = max(30.0, 3 * settings.stall_timeout_ms / 1000)
        self.last_data = desk.app.reactor.seconds()
        # Records first, so a failure here leaves nothing on air and nothing half-made.
        day = time.strftime("%Y-%m-%d")
        self.recording: SessionRecording | None = SessionRecording(settings.recordings_dir / day / f"{self.id}.ogg")
        self.entry = desk.app.records.open(channels, "live", self.name, principal.name,
                                             detail=f"recording={self.recording.path}")
        self.input_id = "l-" + self.id
        spec = LiveSpec(target_delay_s=settings.target_delay_ms / 1000, max_delay_s=settings.max_delay_ms / 1000,
                        stall_s=settings.stall_timeout_ms / 1000, name=self.name)
        desk.app.track(self.input_id, lambda event: None, self._ended)
        desk.app.core.send(AddInput(self.input_id, tuple(c.id for c in channels), spec, priority=int(Priority.LIVE)))
        for channel in channels:
            channel.live = self
        metrics.live_sessions.inc()
        log.info("live session %s (%s) by %s from %s on %s", self.id, self.name, principal.name, request.peer,
                 ", ".join(c.id for c in channels))

    def attach(self, connection: Any) -> None:
        self.connection = connection

    @property
    def stalled(self) -> bool:
        """No bytes from the studio for longer than the stall timeout."""
        quiet_s = self.desk.app.reactor.seconds() - self.last_data
        return quiet_s > self.desk.app.config.live.stall_timeout_ms / 1000

    def feed(self, data: bytes) -> None:
        self.bytes += len(data)
        self.last_data = self.desk.app.reactor.seconds()
        if self.decoder is None:
            self._head += data
            try:
                self.decoder = sniff_decoder(self._head)
                if self.decoder is None and len(self._head) > SNIFF_BYTES:
                    raise ValueError("no audio format recognised")
            except ValueError as exc:
                metrics.ingest_refused_total.labels("unsupported_format").inc()
                raise Refusal(415, "unsupported_format", f"{exc}: send Ogg/Opus or MP3") from None
            if self.decoder is None:
                return
            data, self._head = self._head, b""
        errors = self.decoder.errors
        try:
            chunks = self.decoder.feed(data)
        except ValueError as exc:  # e.g. an Ogg stream that is not Opus
            metrics.ingest_refused_total.labels("unsupported_format").inc()
            raise Refusal(415, "unsupported_format", str(exc)) from None
        metrics.ingest_bytes_total.labels(self.decoder.format).inc(len(data))
        if self.decoder.errors > errors:
            metrics.ingest_decode_errors_total.labels(self.decoder.format).inc(self.decoder.errors - errors)
        core = self.desk.app.core
        for pcm in chunks:
            core.send(LiveAudio(self.input_id, pcm.astype(np.float32, copy=False).tobytes()))
            if self.recording is not None:
                try:
                    self.recording.write(pcm)
                except OSError as exc:  # a full disk stops the recording, never the broadcast
                    log.error("live session %s: recording stopped: %s", self.id, exc)
                    self.recording = None
                    self.desk.app.records.note(self.entry, f"recording stopped at {self.desk.app.wall():.0f}: "
                                                           f"{exc.strerror or exc}")

    def _ended(self, event: InputEnded) -> None:
        if event.how == "refused":  # the channel went away under the session
            log.error("live session %s: the core refused it on %s", self.id, event.channel)
            self.kick()

    def stop(self) -> None:
        """The server is stopping: the session ends as stopped, its recording closed properly."""
        self.close(clean=False, outcome="stopped")
        if self.connection is not None:
            self.connection.hang_up()

    def close(self, clean: bool, outcome: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self.desk.app.untrack(self.input_id)
        self.desk.app.core.send(LiveEnd(self.input_id))  # what is buffered plays out, then the channel falls back
        for channel in self.channels:
            if channel.live is self:
                channel.live = None
        if self.recording is not None:
            try:
                self.recording.close()
            except OSError as exc:
                log.error("live session %s: closing the recording failed: %s", self.id, exc)
        outcome = outcome or ("completed" if clean else "failed")
        self.desk.app.records.close(self.entry, outcome)
        metrics.live_sessions.dec()
        log.info("live session %s ended (%s), %d bytes", self.id, outcome, self.bytes)

    def kick(self) -> None:
        """Take this session off air at once (a stalled studio replaced by a new source)."""
        self.desk.app.core.send(RemoveInput(self.input_id))
        if self.connection is not None:
            self.connection.hang_up()  # closes the session as failed and drops the socket
        else:
            self.close(clean=False)


class StudioDesk:
    def __init__(self, app: BroadcastServer) -> None:
        self.app = app
        self.logins = LoginGuard()

    def open(self, request: SourceRequest) -> Deferred[LiveSession]:
        """Check the password off the reactor (scrypt takes tens of milliseconds),
        then decide on the reactor. An address with too many recent failures is
        refused before any password check: a flood costs no scrypt."""
        user, password = self._credentials(request)
        now = self.app.reactor.seconds()
        if not self.logins.allowed(request.peer, now):
            wait = self.logins.retry_after_s(request.peer, now)
            raise self._refuse(429, "too_many_failures",
                               f"too many wrong passwords from {request.peer}; try again in {wait:.0f} s")
        check = self.app.storage.users.by_password(user, password)  # the auth pool: a flood waits there
        return check.addCallback(self._decide, request)

    def _decide(self, row: dict[str, Any] | None, request: SourceRequest) -> LiveSession:
        if row is None:
            metrics.auth_failures_total.labels("ingest").inc()
            self.logins.failed(request.peer, self.app.reactor.seconds())
            raise self._refuse(401, "unauthenticated", "wrong user name or password")
        self.logins.succeeded(request.peer)
        principal = Principal.from_row(row, request.peer)
        path = unquote(request.path.split("?", 1)[0])
        match = MOUNT.match(path)
        if match is None:
            raise self._refuse(404, "unknown_mount", f"no mount {path!r}: use /ingest/CHANNEL or /ingest/zone/ZONE")
        if match["channel"]:
            channel = self.app.channels.get(match["channel"])
            if channel is None:
                raise self._refuse(404, "unknown_mount", f"no channel {match['channel']!r}")
            channels = [channel]
        else:
            zones = [z for z in match["zones"].split(",") if z]
            unknown = [z for z in zones if z not in self.app.zones]
            if unknown:
                raise self._refuse(404, "unknown_mount", f"no zone {unknown[0]!r}")
            channels = [self.app.channels[c] for c in self.app.channels_in(zones)]
            if not channels:
                raise self._refuse(404, "unknown_mount", f"no channel in zones {', '.join(zones)}")
        try:
            authorize(principal, Action.WRITE, [c.config.zone for c in channels], self.app.zones)
        except Forbidden as exc:
            raise self._refuse(403, "forbidden", str(exc)) from None
        current = [c.live for c in channels if c.live is not None]
        busy = [s for s in current if not s.stalled]
        if busy:
            raise self._refuse(409, "already_live", f"channel {busy[0].channels[0].id!r} is already live: "
                               f"{busy[0].name!r} by {busy[0].principal.name} (session {busy[0].id})")
        self._room()
        for stale in set(current):
            stale.kick()  # a dead studio connection must not lock the channel
        try:
            return LiveSession(self, principal, request, channels)
        except OSError as exc:
            if is_full(exc):  # the recording could not be made: nothing went on air
                raise self._refuse(507, "disk_full", str(DiskFull(self.app.config.live.recordings_dir, None,
                                                                   "live session refused"))) from None
            raise

    def _room(self) -> None:
        """A live session is recorded (the record of what went on air): with the recordings' disk
        short of ``storage.min_free_bytes``, a new one is refused (507) rather than left unrecorded.
        A session already on air when the disk fills goes on; its recording stops, and its
        broadcast-log entry says so."""
        try:
            require(self.app.config.live.recordings_dir, 0, self.app.config.storage.min_free_bytes,
                    "live session refused")
        except DiskFull as exc:
            raise self._refuse(507, "disk_full", str(exc)) from None

    def _credentials(self, request: SourceRequest) -> tuple[str, str]:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise self._refuse(401, "unauthenticated", "send HTTP Basic credentials of a broadcaster user")
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise self._refuse(401, "unauthenticated", "malformed Basic credentials") from None
        return user, password

    def _refuse(self, status: int, reason: str, message: str) -> Refusal:
        metrics.ingest_refused_total.labels(reason).inc()
        return Refusal(status, reason, message)


def describe_live(channel: Any) -> dict[str, Any] | None:
    session: LiveSession | None = getattr(channel, "live", None)
    if session is None:
        return None
    live = channel.status.get("live", {}).get(session.input_id, {})
    return {"session": session.id, "name": session.name, "by": session.principal.name,
            "buffer_s": live.get("buffer_s", 0.0)}
