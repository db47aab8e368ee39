"""The broadcast log and loudspeaker sessions: what played where, and who was online.

Nothing here waits for the database. Opening an entry (something went on
air) is a write in the storage pool whose row ids arrive later: ``open``
returns an Entry at once, and notes and the close made before the ids are
known are applied when they come. Closing updates, notes and session rows
are queued (storage/logs.py) and written in one transaction a second. The
audio core only reports events; it never sees any of this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall

from broadcaster import metrics
from broadcaster.storage import Storage

log = logging.getLogger(__name__)


class Entry:
    """One broadcast-log row per channel of one play, being written."""

    def __init__(self, written: Deferred[list[int]]) -> None:
        self.ids: list[int] | None = None
        self._written = written.addCallback(self._known)
        self._written.addErrback(self._failed)

    @property
    def pending(self) -> Deferred[list[int]] | None:
        return self._written if self.ids is None else None

    def _known(self, ids: list[int]) -> list[int]:
        self.ids = ids
        return ids

    def _failed(self, failure: Any) -> list[int]:
        metrics.storage_flush_errors_total.inc()
        log.error("opening a broadcast-log entry failed: %s", failure.getErrorMessage())
        self.ids = []
        return []

    def then(self, work: Callable[[list[int]], None]) -> None:
        if self.ids is not None:
            work(self.ids)
            return

        def apply(ids: list[int]) -> list[int]:
            try:
                work(ids)
            except Exception:  # one failed step must not cancel the close that follows it
                log.exception("a broadcast-log write failed")
            return ids

        self._written.addCallback(apply)


class Records:
    FLUSH_S = 1.0

    def __init__(self, storage: Storage, reactor: Any, wall: Callable[[], float]) -> None:
        self.logs = storage.logs
        self.reactor = reactor
        self.wall = wall
        self._flusher = LoopingCall(self._flush)
        self._flusher.clock = reactor
        self._entries: list[Entry] = []  # opened, ids not known yet

    def start(self) -> None:
        self.logs.close_dangling_sync()
        self._flusher.start(self.FLUSH_S, now=False)

    def stop(self) -> Deferred[None]:
        """Entries still being opened are waited for, so their closes are written too."""
        if self._flusher.running:
            self._flusher.stop()
        waiting = [d for entry in self._entries if (d := entry.pending) is not None]
        self._entries.clear()

        def flush(_: object) -> None:
            self.logs.flush_sync()

        return DeferredList(waiting).addCallback(flush)

    def open(self, channels: list[Any], kind: str, item: str, by: str, detail: str = "") -> Entry:
        """One entry per channel (ChannelView or ChannelConfig), started now."""
        pairs = [(getattr(ch, "config", ch).id, getattr(ch, "config", ch).zone) for ch in channels]
        entry = Entry(self.logs.plays_started(pairs, kind, item, by, self.wall(), detail))
        if entry.ids is None:
            self._entries = [e for e in self._entries if e.ids is None]
            self._entries.append(entry)
        return entry

    def note(self, entry: Entry, note: str) -> None:
        entry.then(lambda ids: self.logs.note_play(ids, note))

    def close(self, entry: Entry, outcome: str) -> None:
        now = self.wall()
        entry.then(lambda ids: self.logs.play_ended(ids, outcome, now))

    def session(self, kind: str, device_id: str, zone: str, channel: str, at: float) -> None:
        if kind == "start":
            self.logs.session_started(device_id, zone, channel, at)
        else:
            self.logs.session_ended(device_id, at)

    def _flush(self) -> None:
        self.logs.heartbeat(self.wall())

        def failed(failure: Any) -> None:
            metrics.storage_flush_errors_total.inc()
            log.error("writing the broadcast log failed (kept for the next try): %s", failure.getErrorMessage())

        self.logs.flush().addErrback(failed)
