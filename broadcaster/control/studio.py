"""Studio sessions: who may go live where, and what a live session does.

The ingest connection (protocols/ingest.py) hands each source request to
``StudioDesk.open``: HTTP Basic credentials are checked against the stored
users, the mount names a channel (``/ingest/{channel}``) or zones
(``/ingest/zone/{zone}[,{zone}...]``: all their channels), and an operator
may only go live inside its zones. A declared format we cannot decode, or a
console whose last stream here was unplayable, is refused (415) before the
200. A session decodes the stream once (the format told from its bytes) and,
from its first decodable audio, pushes the PCM to a LiveSource on every
target channel, records the session to an Ogg/Opus file, and writes one
broadcast-log entry per channel.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
import unicodedata
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
from twisted.internet.defer import Deferred

from broadcaster import metrics
from broadcaster.codecs.decoders import StreamDecoder, UnsupportedFormat, check_declared_type, describe, sniff_decoder
from broadcaster.codecs.ogg import OggOpusWriter
from broadcaster.codecs.opus import OpusEncoder, OpusSettings
from broadcaster.codecs.pcm import Audio
from broadcaster.control.auth import Action, Forbidden, Principal, authorize
from broadcaster.control.logins import LoginGuard
from broadcaster.control.space import DiskFull, is_full, require
from broadcaster.control.unplayable import UnplayableSources
from broadcaster.core.commands import AddInput, InputEnded, LiveAudio, LiveEnd, RemoveInput
from broadcaster.core.mixer import Priority
from broadcaster.core.sources.live import LiveSpec
from broadcaster.protocols.ingest import Refusal, SourceRequest

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer
    from broadcaster.control.channels import ChannelView as Channel
    from broadcaster.control.records import Entry

log = logging.getLogger(__name__)
# /ingest/CHANNEL, /ingest/zone/ZONE[,ZONE...], or a mount as Icecast users name them: /CHANNEL.ogg
# (.mp3, .aac, .opus, .webm...) or /CHANNEL, what BUTT, Mixxx and liquidsoap are set up with.
MOUNT = re.compile(r"^/(?:ingest/(?:zone/(?P<zones>[^/]+)|(?P<channel>[^/]+))"
                   r"|(?P<alias>[^/.]+)(?:\.(?:ogg|oga|opus|mp3|aac|webm|mka|flac))?)$")
HEAD_BYTES = 64  # the first bytes of a stream, kept to name its format if it cannot be played
# A stream that has given no audio after this much is unplayable (the longest headers, Vorbis with a
# big comment or Ogg/FLAC with a picture, are far below it).
FIRST_AUDIO_BYTES = 512 * 1024
TITLE_BYTES = 512  # longer titles are cut (at a character): Icecast's own limit is about this, players show less
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


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
    """One studio connection. It goes on air (broadcast-log entry, recording, input on the channels)
    only with its first decodable audio: a stream that turns out unplayable leaves no log row, no
    recording and no blip on air, only one log line, and its console is refused before 200 when it
    comes back (StudioDesk.unplayable)."""

    def __init__(self, desk: StudioDesk, principal: Principal, request: SourceRequest,
                 channels: list[Channel], mount: str) -> None:
        self.desk = desk
        self.id = uuid.uuid4().hex[:12]
        self.principal = principal
        self.channels = channels
        self.peer, self.mount = request.peer, mount
        self.signature = signature(request)
        self.name = request.headers.get("ice-name") or f"live {principal.name}"
        self.description = request.headers.get("ice-description", "")
        self.decoder: StreamDecoder | None = None
        self._head = b""
        self.bytes = 0
        self.closed = False
        self.on_air = False
        self.connection: Any = None
        self.recording: SessionRecording | None = None
        self.entry: Entry | None = None
        self.input_id = "l-" + self.id
        settings = desk.app.config.live
        # No bytes for this long and the connection is dropped: a studio whose
        # network died without a FIN must not hold the channel.
        self.idle_timeout_s = max(30.0, 3 * settings.stall_timeout_ms / 1000)
        self.last_data = desk.app.reactor.seconds()
        for channel in channels:
            channel.live = self  # held while the format is found: a second source gets 409

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
        try:
            chunks = self._decode(data)
        except UnsupportedFormat as exc:
            self._unplayable(exc)
            raise Refusal(415, "unsupported_format", str(exc)) from None
        if chunks and not self.on_air:
            self._go_on_air()
        core = self.desk.app.core
        for pcm in chunks:
            core.send(LiveAudio(self.input_id, pcm.astype(np.float32, copy=False).tobytes()))
            if self.recording is not None:
                try:
                    self.recording.write(pcm)
                except OSError as exc:  # a full disk stops the recording, never the broadcast
                    log.error("live session %s: recording stopped: %s", self.id, exc)
                    self.recording = None
                    assert self.entry is not None
                    self.desk.app.records.note(self.entry, f"recording stopped at {self.desk.app.wall():.0f}: "
                                                           f"{exc.strerror or exc}")

    def _decode(self, data: bytes) -> list[Audio]:
        if self.decoder is None:
            earlier = self._head  # fewer bytes than it takes to tell a format
            self._head = (earlier + data)[:HEAD_BYTES]
            self.decoder = sniff_decoder(self._head)
            if self.decoder is None:
                return []
            data = earlier + data
        elif not self.on_air and len(self._head) < HEAD_BYTES:
            self._head += data[:HEAD_BYTES - len(self._head)]  # kept to name the format if it fails
        decoder = self.decoder
        errors = decoder.errors
        chunks = [chunk for chunk in decoder.feed(data) if chunk.size]
        metrics.ingest_bytes_total.labels(decoder.format).inc(len(data))
        if decoder.errors > errors:
            metrics.ingest_decode_errors_total.labels(decoder.format).inc(decoder.errors - errors)
        if not chunks and not self.on_air and self.bytes > FIRST_AUDIO_BYTES:
            raise UnsupportedFormat(f"{describe(self._head)} (read as {decoder.format})",
                                    f": no audio in its first {FIRST_AUDIO_BYTES // 1024} KiB")
        return chunks

    def _unplayable(self, exc: UnsupportedFormat) -> None:
        """One log line for a console that sends what we cannot play; its retries are refused
        before 200 (and only counted) for unplayable.HOLD_S."""
        metrics.ingest_refused_total.labels("unsupported_format").inc()
        desk = self.desk
        desk.unplayable.remember(self.peer, self.mount, self.signature, exc.name, desk.app.reactor.seconds())
        log.warning("studio stream from %s (user %s, %s) on %s is unplayable, session %s ended after %d bytes%s: "
                    "%s; the same console is refused with 415 for %.0f s", self.peer, self.principal.name,
                    self.signature[1] or "no user agent", self.mount, self.id, self.bytes,
                    " on air" if self.on_air else ", nothing went on air", exc, desk.unplayable.hold_s)

    def _go_on_air(self) -> None:
        """First decodable audio: record it, log it, put it on the channels."""
        desk, settings = self.desk, self.desk.app.config.live
        day = time.strftime("%Y-%m-%d")
        try:
            self.recording = SessionRecording(settings.recordings_dir / day / f"{self.id}.ogg")
        except OSError as exc:  # nothing went on air: the console is hung up on
            log.error("live session %s from %s refused: its recording could not be made: %s", self.id,
                      self.peer, exc)
            reason = "disk_full" if is_full(exc) else "internal"
            metrics.ingest_refused_total.labels(reason).inc()
            raise Refusal(507 if reason == "disk_full" else 500, reason, str(exc)) from None
        self.on_air = True
        desk.unplayable.forget(self.peer, self.mount)
        self.entry = desk.app.records.open(self.channels, "live", self.name, self.principal.name,
                                           detail=f"recording={self.recording.path}")
        spec = LiveSpec(target_delay_s=settings.target_delay_ms / 1000, max_delay_s=settings.max_delay_ms / 1000,
                        stall_s=settings.stall_timeout_ms / 1000, name=self.name)
        desk.app.track(self.input_id, lambda event: None, self._ended)
        desk.app.core.send(AddInput(self.input_id, tuple(c.id for c in self.channels), spec,
                                    priority=int(Priority.LIVE)))
        metrics.live_sessions.inc()
        assert self.decoder is not None
        log.info("live session %s (%s, %s) by %s from %s on %s", self.id, self.name, self.decoder.format,
                 self.principal.name, self.peer, ", ".join(c.id for c in self.channels))

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
        for channel in self.channels:
            if channel.live is self:
                channel.live = None
        if not self.on_air:  # nothing was played, logged or recorded
            log.debug("studio connection %s from %s closed before any audio, %d bytes", self.id, self.peer,
                      self.bytes)
            return
        self.desk.app.untrack(self.input_id)
        self.desk.app.core.send(LiveEnd(self.input_id))  # what is buffered plays out, then the channel falls back
        if self.recording is not None:
            try:
                self.recording.close()
            except OSError as exc:
                log.error("live session %s: closing the recording failed: %s", self.id, exc)
        outcome = outcome or ("completed" if clean else "failed")
        assert self.entry is not None
        self.desk.app.records.close(self.entry, outcome)
        metrics.live_sessions.dec()
        log.info("live session %s ended (%s), %d bytes", self.id, outcome, self.bytes)

    def kick(self) -> None:
        """Take this session off air at once (a stalled studio replaced by a new source)."""
        if self.on_air:
            self.desk.app.core.send(RemoveInput(self.input_id))
        if self.connection is not None:
            self.connection.hang_up()  # closes the session as failed and drops the socket
        else:
            self.close(clean=False)


class StudioDesk:
    def __init__(self, app: BroadcastServer) -> None:
        self.app = app
        self.logins = LoginGuard()
        self.unplayable = UnplayableSources()

    def open(self, request: SourceRequest, credentials: tuple[str, str] | None = None) -> Deferred[LiveSession]:
        """Check the password off the reactor (scrypt takes tens of milliseconds),
        then decide on the reactor. An address with too many recent failures, a
        declared format we cannot decode, or a console whose stream just turned
        out unplayable, is refused before any password check: a flood or a
        reconnect loop costs no scrypt. ``credentials``: the user and password a
        webcast hello carries (protocols/webcast.py); else HTTP Basic's."""
        user, password = credentials or self._credentials(request)
        now = self.app.reactor.seconds()
        self._playable(request, now)
        if not self.logins.attempt(request.peer, now):
            wait = self.logins.retry_after_s(request.peer, now)
            raise self._refuse(429, "too_many_failures",
                               f"too many wrong passwords from {request.peer}; try again in {wait:.0f} s")
        check = self.app.storage.users.by_password(user, password)  # the auth pool: a flood waits there
        return check.addCallback(self._decide, request, now)

    def _playable(self, request: SourceRequest, now: float) -> None:
        """415 before 200: the decision must come before the answer, since Icecast source clients
        (libshout, ffmpeg) send no audio until they have it."""
        try:
            check_declared_type(request.headers.get("content-type", ""))
        except UnsupportedFormat as exc:
            raise self._refuse(415, "unsupported_format", str(exc)) from None
        failure = self.unplayable.refused(request.peer, mount_of(request), signature(request), now)
        if failure is not None:
            wait = failure.at + self.unplayable.hold_s - now
            raise self._refuse(415, "unsupported_format",
                               f"{UnsupportedFormat(failure.seen)} (this console's last stream here, "
                               f"{now - failure.at:.0f} s ago; change the format, or try again in {wait:.0f} s)")

    def _decide(self, row: dict[str, Any] | None, request: SourceRequest, attempted_at: float) -> LiveSession:
        if row is None:
            metrics.auth_failures_total.labels("ingest").inc()
            raise self._refuse(401, "unauthenticated", "wrong user name or password")
        self.logins.forgive(request.peer, attempted_at)
        principal = Principal.from_row(row, request.peer)
        path = mount_of(request)
        match = MOUNT.match(path)
        if match is None:
            raise self._refuse(404, "unknown_mount", f"no mount {path!r}: use /ingest/CHANNEL, /CHANNEL.ogg "
                               "or /ingest/zone/ZONE")
        if match["channel"] or match["alias"]:
            name = match["channel"] or match["alias"]
            channel = self.app.channels.get(name)
            if channel is None:
                raise self._refuse(404, "unknown_mount", f"no channel {name!r}")
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
        return LiveSession(self, principal, request, channels, path)

    def is_mount(self, path: str) -> bool:
        """A studio mount (the Sniffer sends a WebSocket upgrade on one to the webcast ingest)."""
        return MOUNT.match(unquote(path.split("?", 1)[0])) is not None

    def retitle(self, session: LiveSession, title: str, artist: str) -> None:
        """A webcast metadata message: as /admin/metadata with title= and artist=."""
        show_title(self.app, session.channels, clean_title(title), clean_title(artist), session.principal.name)

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


def clean_title(raw: str) -> str:
    """One line of printable text, at most TITLE_BYTES of UTF-8 (cut at a character, never inside one)."""
    text = _CONTROL.sub(" ", unicodedata.normalize("NFC", raw)).strip()
    data = text.encode("utf-8")
    if len(data) > TITLE_BYTES:
        text = data[:TITLE_BYTES].decode("utf-8", "ignore").rstrip()
    return text


def show_title(app: BroadcastServer, channels: Iterable[Channel], name: str, by: str, who: str) -> None:
    """What a studio says plays now (``by - name``; an empty name clears it), from /admin/metadata or a
    webcast metadata message: on each channel, counted, noted once in the live session's log entry."""
    shown = (f"{by} - {name}" if by else name) if name else None
    noted: set[int] = set()
    for channel in channels:
        if shown == channel.title:
            continue  # the same title again (consoles resend it): no chain, no log note
        channel.set_title(name or None, by or None)
        metrics.title_updates_total.labels(channel.id).inc()
        live = channel.live
        if live is not None and live.entry is not None and id(live) not in noted:
            noted.add(id(live))  # one note for a session on several channels; none before it is on air
            app.records.note(live.entry, f"title: {shown or '(cleared)'} (by {who})")
        log.info("channel %s: title %r set by %s", channel.id, shown, who)


def mount_of(request: SourceRequest) -> str:
    return unquote(request.path.split("?", 1)[0])


def signature(request: SourceRequest) -> tuple[str, str]:
    """What tells one console's attempts from another's behind the same address and mount."""
    return request.headers.get("content-type", ""), request.headers.get("user-agent", "")


def describe_live(channel: Any) -> dict[str, Any] | None:
    session: LiveSession | None = getattr(channel, "live", None)
    if session is None or not session.on_air:
        return None
    live = channel.status.get("live", {}).get(session.input_id, {})
    return {"session": session.id, "name": session.name, "by": session.principal.name,
            "buffer_s": live.get("buffer_s", 0.0)}
