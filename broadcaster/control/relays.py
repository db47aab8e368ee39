"""Relays on air: national or provincial radio taken from a URL onto channels.

Each relay on air is a process of its own (broadcaster/relay/worker.py) that
fetches, decodes and paces the upstream, and writes steady 48 kHz audio to
this side, which hands it to the core as a live input (a jitter-buffered
LiveSource, exactly like a studio). So the core never sees the network, and
an upstream that fails just stops the audio: after ``relay.stall_timeout_ms``
the live source stands aside and the channel plays what it would otherwise
(its idle programme); when the upstream is back its audio resumes by itself.
The worker reconnects with backoff; this side writes what happened into the
broadcast log entry and the metrics, and restarts a worker that died.

One worker per relay of the library, however many channels and programmes
play it (a RelayFeed): a hundred communes relaying VOV1 at 05:00 fetch and
decode it once. Each play is a RelayRun: its own input in the core (its own
channels, priority, start and end), its own broadcast-log entry; the feed
starts with its first run and stops with its last. A run lasts until its end
time (a scheduled programme's end, an on-demand duration) or until stopped.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from broadcaster import metrics
from broadcaster.core.commands import AddInput, InputEnded, LiveAudio, RemoveInput
from broadcaster.core.sources.live import LiveSpec
from broadcaster.relay.fetch import Limits

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer
    from broadcaster.control.channels import ChannelView
    from broadcaster.control.records import Entry

log = logging.getLogger(__name__)
HEADER = struct.Struct(">cI")
MAX_FRAME = 1 << 20  # a worker's frame over this is a bug: the worker is killed, not believed
RESTART_S = (1.0, 5.0, 30.0)  # a worker that died is started again after these waits (then the last)


@dataclass(frozen=True)
class RelayItem:
    """A relay of the library (storage/relays.py), as it is played."""

    id: str
    name: str
    url: str
    zone: str


class RelaysBusy(Exception):
    """relay.max_workers relays are fetched already: another upstream would take a core from the audio."""


class _WorkerProtocol(ProcessProtocol):
    """Frames from the worker's stdout; its stderr (tracebacks) into our log, bounded."""

    def __init__(self, feed: RelayFeed) -> None:
        self.feed = feed
        self.buffer = b""
        self.stderr_left = 64 * 1024

    def outReceived(self, data: bytes) -> None:  # noqa: N802
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(self.buffer)
            if length > MAX_FRAME:
                log.error("relay %s: its worker sent a %d-byte frame; stopping it", self.feed.item.id, length)
                self.transport.signalProcess("KILL")  # type: ignore[union-attr]
                self.buffer = b""
                return
            if len(self.buffer) < HEADER.size + length:
                return
            payload = self.buffer[HEADER.size:HEADER.size + length]
            self.buffer = self.buffer[HEADER.size + length:]
            if kind == b"A":
                self.feed.audio(payload)
            elif kind == b"E":
                try:
                    self.feed.event(json.loads(payload))
                except ValueError:
                    log.error("relay %s: unreadable event from its worker", self.feed.item.id)

    def errReceived(self, data: bytes) -> None:  # noqa: N802
        if self.stderr_left > 0:
            text = data[:self.stderr_left].decode("utf-8", "replace").rstrip()
            self.stderr_left -= len(data)
            if text:
                log.warning("relay %s worker: %s", self.feed.item.id, text)

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        self.feed.exited(reason)


class RelayFeed:
    """One relay's worker and what it reports, shared by every run playing that relay."""

    def __init__(self, desk: RelayDesk, item: RelayItem) -> None:
        self.desk = desk
        self.app = desk.app
        self.item = item
        self.runs: list[RelayRun] = []
        self.state = "connecting"  # up / down / refused
        self.reason = ""
        self.buffer_s = 0.0
        self.bytes = 0
        self.reconnects = 0
        self.down_since: float | None = None
        self.process: Any = None
        self.restarts = 0
        self.stopped = False
        self._restart_call: Any = None
        self._reasons_logged: set[str] = set()

    def start(self) -> None:
        self.process = self.app.reactor.spawnProcess(
            _WorkerProtocol(self), sys.executable,
            [sys.executable, "-m", "broadcaster.relay.worker", self.desk.worker_settings(self.item.url)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def stop(self) -> None:
        self.stopped = True
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        if self.process is not None and self.process.pid is not None:
            try:
                self.process.signalProcess("TERM")
            except OSError:
                pass
        metrics.relay_up.labels(self.item.id).set(0)

    def exited(self, reason: Failure) -> None:
        self.process = None
        if self.stopped:
            return
        if self.state == "refused":
            for run in list(self.runs):
                run.stop("failed")
            return
        code = getattr(reason.value, "exitCode", None)
        why = "exited" if reason.check(ProcessDone) else f"died ({reason.getErrorMessage()})"
        wait = RESTART_S[min(self.restarts, len(RESTART_S) - 1)]
        self.restarts += 1
        log.error("relay %s: its worker %s (code %s); starting it again in %.0f s", self.item.id, why, code, wait)
        self._lost(f"the relay's worker {why}")
        self._restart_call = self.app.reactor.callLater(wait, self._respawn)

    def _respawn(self) -> None:
        if not self.stopped:
            self.start()

    def audio(self, pcm: bytes) -> None:
        for run in self.runs:
            self.app.core.send(LiveAudio(run.id, pcm))

    def event(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == "stats":
            self.buffer_s = float(event.get("buffer_s", 0.0))
            total = int(event.get("bytes", 0))
            if total > self.bytes:
                metrics.relay_bytes_total.labels(self.item.id).inc(total - self.bytes)
            self.bytes = total
            metrics.relay_buffer_seconds.labels(self.item.id).set(self.buffer_s)
        elif name == "up":
            was_down = self.down_since
            self.state, self.reason, self.restarts, self.down_since = "up", "", 0, None
            metrics.relay_up.labels(self.item.id).set(1)
            if was_down is not None:
                gone = self.app.wall() - was_down
                self.note(f"{self.clock(self.app.wall())} upstream back after {gone:.0f} s.")
                log.info("relay %s (%s): the upstream is back after %.0f s", self.item.id, self.item.name, gone)
        elif name in ("down", "retry"):
            reason = str(event.get("reason", ""))[:300]
            self.reconnects += 1
            metrics.relay_reconnects_total.labels(self.item.id).inc()
            if name == "down" or self.state != "down":
                self._lost(reason)
            elif reason not in self._reasons_logged and len(self._reasons_logged) < 20:
                log.warning("relay %s (%s): still down: %s", self.item.id, self.item.name, reason)
            self._reasons_logged.add(reason)
        elif name == "refused":
            self.state = "refused"
            self.reason = str(event.get("reason", ""))[:300]
            metrics.relay_refused_total.inc()
            log.error("relay %s (%s) refused: %s", self.item.id, self.item.name, self.reason)
            self.note(f"{self.clock(self.app.wall())} refused: {self.reason}.")

    def _lost(self, reason: str) -> None:
        if self.state == "down":
            return
        first = self.state == "connecting"
        self.state, self.reason = "down", reason
        metrics.relay_up.labels(self.item.id).set(0)
        self.down_since = self.app.wall()
        what = "cannot reach the upstream" if first else "upstream lost"
        self.note(f"{self.clock(self.app.wall())} {what}: {reason}; the channel falls back to its idle "
                  "programme once the buffer runs out.")
        log.warning("relay %s (%s): %s: %s", self.item.id, self.item.name, what, reason)

    def note(self, text: str) -> None:
        for run in self.runs:
            run.note(text)

    def clock(self, at: float | None) -> str:
        zone = ZoneInfo(self.app.config.schedule.timezone)
        return datetime.fromtimestamp(at or 0, zone).strftime("%H:%M:%S")


class RelayRun:
    """One play of a relay on some channels, from its start until it is stopped or its time is up."""

    def __init__(self, desk: RelayDesk, item: RelayItem, channels: list[ChannelView], *, kind: str, title: str,
                 by: str, priority: int, end_at: float | None, start_at: float | None = None,
                 on_preempt: str = "pause", detail: str = "", cuts: tuple[str, ...] = ()) -> None:
        self.desk = desk
        self.app = desk.app
        self.item = item
        self.channels = channels
        self.cuts = cuts
        self.kind, self.title, self.by, self.priority = kind, title, by, priority
        self.end_at, self.start_at, self.on_preempt = end_at, start_at, on_preempt
        self.detail = detail
        self.id = "r-" + uuid.uuid4().hex[:10]
        self.feed: RelayFeed | None = None
        self.entry: Entry | None = None
        self.ended = False
        self._end_call: Any = None
        self._open_call: Any = None
        self._early_notes: list[str] = []
        self._channels_left = {c.id for c in channels}

    def start(self, feed: RelayFeed) -> None:
        self.feed = feed
        settings = self.app.config.relay
        spec = LiveSpec(target_delay_s=0.3, max_delay_s=2.0, stall_s=settings.stall_timeout_ms / 1000,
                        name=self.title)
        self.app.track(self.id, lambda event: None, self._ended)
        self.app.core.send(AddInput(self.id, tuple(c.id for c in self.channels), spec, priority=self.priority,
                                    on_preempt=self.on_preempt, start_at=self.start_at, cuts=self.cuts))
        lead = 0.0 if self.start_at is None else self.start_at - self.app.reactor.seconds()
        if lead > 0:  # a scheduled relay starts its worker early, so its first second is not lost to connecting
            self._open_call = self.app.reactor.callLater(lead, self._open_entry)
        else:
            self._open_entry()
        if self.end_at is not None:
            self._end_call = self.app.reactor.callLater(max(0.0, self.end_at - self.app.wall()), self.stop,
                                                       "completed")
        metrics.relays_on_air.inc()
        log.info("relay %s (%s, %s) on %s until %s", self.id, self.item.name, self.item.url,
                 ", ".join(c.id for c in self.channels), feed.clock(self.end_at) if self.end_at else "stopped")

    def _open_entry(self) -> None:
        self.entry = self.app.records.open(self.channels, self.kind, self.title, self.by,
                                           detail=f"relay={self.item.id} url={self.item.url}"
                                                  + (f" {self.detail}" if self.detail else ""),
                                           source="relay")
        for note in self._early_notes:
            self.app.records.note(self.entry, note)
        self._early_notes.clear()

    @property
    def on_air(self) -> bool:
        """Past its start time (its broadcast-log entry is open)."""
        return self.entry is not None

    def note(self, text: str) -> None:
        if self.entry is not None:
            self.app.records.note(self.entry, text)
        elif len(self._early_notes) < 10:
            self._early_notes.append(text)

    def stop(self, outcome: str = "stopped") -> None:
        """Off air now: the input removed in the next frame, the entry closed (and the worker
        stopped, if no other run plays this relay)."""
        if self.ended:
            return
        self.ended = True
        for call in (self._end_call, self._open_call):
            if call is not None and call.active():
                call.cancel()
        self.app.core.send(RemoveInput(self.id))
        self.app.untrack(self.id)
        if self.entry is None and outcome not in ("completed", "removed"):
            self._open_entry()  # refused before its start time: the log still says it did not play
        if self.entry is not None:
            self.app.records.close(self.entry, outcome)
        metrics.relays_on_air.dec()
        self.desk.ended(self)
        log.info("relay %s (%s) ended: %s", self.id, self.item.name, outcome)

    def _ended(self, event: InputEnded) -> None:
        """The core dropped the input on a channel (refused, or cut by a later programme)."""
        self._channels_left.discard(event.channel)
        if not self._channels_left and not self.ended:
            self.stop({"removed": "cut", "refused": "failed"}.get(event.how, "stopped"))

    def describe(self, detail: bool = True) -> dict[str, Any]:
        """``detail``: the URL and the last failure's reason (not for the public /channels)."""
        feed = self.feed
        view: dict[str, Any] = {"id": self.id, "relay": self.item.id, "name": self.item.name,
                                "state": feed.state if feed else "connecting",
                                "buffer_s": feed.buffer_s if feed else 0.0,
                                "reconnects": feed.reconnects if feed else 0, "ends_at": self.end_at,
                                "title": self.title}
        if detail:
            view.update(url=self.item.url, reason=feed.reason if feed else "")
        return view


class RelayDesk:
    """The relays on air: runs by id, one feed (worker) per relay of the library."""

    def __init__(self, app: BroadcastServer) -> None:
        self.app = app
        self.runs: dict[str, RelayRun] = {}
        self.feeds: dict[str, RelayFeed] = {}

    def worker_settings(self, url: str) -> str:
        c = self.app.config.relay
        limits = Limits(allow_private=c.allow_private, max_redirects=c.max_redirects,
                        connect_timeout_s=c.connect_timeout_s, read_timeout_s=c.read_timeout_s,
                        max_playlist_bytes=c.max_playlist_bytes, max_segment_bytes=c.max_segment_bytes,
                        max_fetch_s=c.max_fetch_s)
        return json.dumps({"url": url, "limits": asdict(limits), "prime_s": c.buffer_s,
                           "max_buffer_s": c.max_buffer_s, "backoff_max_s": c.backoff_max_s})

    def start(self, item: RelayItem, channels: list[ChannelView], **how: Any) -> RelayRun:
        feed = self.feeds.get(item.id)
        if feed is not None and (feed.item.url != item.url or feed.state == "refused"):
            feed = None  # the library's URL changed, or it was refused: a fresh worker for this run
        if feed is None and sum(1 for f in self.feeds.values() if f.runs) >= self.app.config.relay.max_workers:
            raise RelaysBusy(f"{self.app.config.relay.max_workers} relays are on air already "
                             "(relay.max_workers); stop one first")
        run = RelayRun(self, item, channels, **how)
        self.runs[run.id] = run
        if feed is None:
            feed = RelayFeed(self, item)
            old = self.feeds.get(item.id)
            self.feeds[item.id] = feed
            if old is not None and not old.runs:
                old.stop()
            feed.start()
        feed.runs.append(run)
        run.start(feed)
        if feed.state == "down":
            run.note(f"{feed.clock(self.app.wall())} the upstream is down: {feed.reason}.")
        return run

    def on_channel(self, channel_id: str) -> list[RelayRun]:
        return [r for r in self.runs.values() if any(c.id == channel_id for c in r.channels)]

    def ended(self, run: RelayRun) -> None:
        self.runs.pop(run.id, None)
        feed = run.feed
        if feed is not None and run in feed.runs:
            feed.runs.remove(run)
            if not feed.runs:
                feed.stop()
                if self.feeds.get(feed.item.id) is feed:
                    del self.feeds[feed.item.id]

    def stop(self) -> None:
        """The server is stopping."""
        for run in list(self.runs.values()):
            run.stop("stopped")
