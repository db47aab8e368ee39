"""The broadcast log and loudspeaker sessions: what played where, and who was online.

Nothing here waits for the database. Opening an entry (something went on
air) is a write in the storage pool: ``open`` returns an Entry at once, with
the ids of its rows already made (storage/logs.py ``Play``). If that write
fails (the disk is full) the rows are queued instead and written with the
next flush. Notes and the close wait until the first write has settled,
written or queued, so they always come after the rows they change. Closing
updates, notes and session rows are queued (storage/logs.py) and written in
one transaction a second. The audio core only reports events; it never sees
any of this.

A failed flush keeps every row queued. The next attempt comes 1 s later,
then 2, 4, ... up to 30 s while the failures go on, and 1 s again after one
succeeds. ``broadcaster_storage_pending_rows`` is the queue's length and
``broadcaster_storage_flush_errors_total`` counts failed writes; the log
says when writing starts failing (with the rows pending and the error), when
the error changes, and when the rows are written again: not every second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred

from broadcaster import metrics
from broadcaster.storage import Storage
from broadcaster.storage.logs import LogRepository, Play

log = logging.getLogger(__name__)


class Entry:
    """One broadcast-log row per channel of one play, being written."""

    def __init__(self, logs: LogRepository, play: Play) -> None:
        self.play = play
        self.uids = play.uids
        self.settled = False  # written, or queued after the write failed
        self._logs = logs
        self._waiting: list[Callable[[list[str]], None]] = []
        self._written: Deferred[None] = maybeDeferred(logs.plays_started, play)
        self._written.addCallbacks(self._done, self._failed)

    @property
    def pending(self) -> Deferred[None] | None:
        return None if self.settled else self._written

    def _failed(self, failure: Any) -> None:
        self._logs.queue_plays(self.play)
        metrics.storage_flush_errors_total.inc()
        log.warning("opening a broadcast-log entry (%s %s) failed, queued for the next flush: %s",
                    self.play.kind, self.play.item, failure.getErrorMessage())
        self._done(None)

    def _done(self, _: object) -> None:
        self.settled = True
        waiting, self._waiting = self._waiting, []
        for work in waiting:
            self._apply(work)

    def _apply(self, work: Callable[[list[str]], None]) -> None:
        try:
            work(self.uids)
        except Exception:  # one failed step must not cancel the close that follows it
            log.exception("a broadcast-log write failed")

    def then(self, work: Callable[[list[str]], None]) -> None:
        if self.settled:
            self._apply(work)
        else:
            self._waiting.append(work)


class Records:
    FLUSH_S = 1.0
    BACKOFF_MAX_S = 30.0

    def __init__(self, storage: Storage, reactor: Any, wall: Callable[[], float]) -> None:
        self.logs = storage.logs
        self.reactor = reactor
        self.wall = wall
        self._entries: list[Entry] = []  # opened, not settled yet
        self._running = False
        self._call: Any = None  # the next flush (IDelayedCall)
        self.failures = 0  # flush attempts failed in a row
        self._error: str | None = None  # the last one's, logged once

    def start(self) -> None:
        self.logs.close_dangling_sync()
        metrics.storage_pending_rows.set_function(self.logs.pending)
        self._running = True
        self._schedule()

    def stop(self) -> Deferred[None]:
        """Entries still being opened are waited for, so their closes are written too."""
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        waiting = [d for entry in self._entries if (d := entry.pending) is not None]
        self._entries.clear()

        def flush(_: object) -> None:
            try:
                self.logs.flush_sync()
            except Exception as exc:
                log.error("storage: %d broadcast-log and session rows could not be written before stopping: %s",
                          self.logs.pending(), exc)

        return DeferredList(waiting).addCallback(flush)

    def open(self, channels: list[Any], kind: str, item: str, by: str, detail: str = "",
             source: str = "local") -> Entry:
        """One entry per channel (ChannelView or ChannelConfig), started now. ``source``: local,
        province, central (a bulletin sent down) or relay."""
        pairs = [(getattr(ch, "config", ch).id, getattr(ch, "config", ch).zone) for ch in channels]
        entry = Entry(self.logs, Play.new(pairs, kind, item, by, self.wall(), detail, source))
        if not entry.settled:
            self._entries = [e for e in self._entries if not e.settled]
            self._entries.append(entry)
        return entry

    def note(self, entry: Entry, note: str) -> None:
        entry.then(lambda uids: self.logs.note_play(uids, note))

    def close(self, entry: Entry, outcome: str) -> None:
        now = self.wall()
        entry.then(lambda uids: self.logs.play_ended(uids, outcome, now))

    def session(self, kind: str, device_id: str, zone: str, channel: str, at: float) -> None:
        if kind == "start":
            self.logs.session_started(device_id, zone, channel, at)
        else:
            self.logs.session_ended(device_id, at)

    # --- the flush loop ----------------------------------------------------------------

    def delay(self) -> float:
        """Seconds to the next flush: 1, and after n failures in a row 1, 2, 4, ... up to 30."""
        if not self.failures:
            return self.FLUSH_S
        return min(self.BACKOFF_MAX_S, self.FLUSH_S * 2 ** min(self.failures - 1, 16))

    def _schedule(self) -> None:
        if self._running:
            self._call = self.reactor.callLater(self.delay(), self._flush)

    def _flush(self) -> None:
        """One attempt; the next is scheduled when this one is over, so two never overlap."""
        self._call = None
        self.logs.heartbeat(self.wall())
        d: Deferred[int] = maybeDeferred(self.logs.flush)
        d.addCallbacks(self._flushed, self._flush_failed)
        d.addBoth(lambda _: self._schedule())

    def _flushed(self, count: int) -> None:
        if self.failures:
            log.warning("storage: the broadcast log is written again (%d rows) after %d failed attempts",
                        count, self.failures)
        self.failures = 0
        self._error = None

    def _flush_failed(self, failure: Any) -> None:
        metrics.storage_flush_errors_total.inc()
        self.failures += 1
        error = failure.getErrorMessage()
        if error != self._error:
            log.error("storage: writing the broadcast log failed: %s; %d rows pending, kept and retried "
                      "with backoff (up to every %g s)", error, self.logs.pending(), self.BACKOFF_MAX_S)
            self._error = error
