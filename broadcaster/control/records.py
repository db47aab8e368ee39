"""The broadcast log and loudspeaker sessions: what played where, and who was online.

Entries are opened when something goes on air and closed when it ends; the
closing updates and the session rows are queued (storage.enqueue) and written
in one transaction a second by a worker thread. Nothing here runs on the
audio core, which only reports events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool

from broadcaster import metrics
from broadcaster.storage import Storage

log = logging.getLogger(__name__)


class Records:
    FLUSH_S = 1.0

    def __init__(self, storage: Storage, reactor: Any, wall: Callable[[], float]) -> None:
        self.storage = storage
        self.reactor = reactor
        self.wall = wall
        self._flusher = LoopingCall(self._flush)
        self._flusher.clock = reactor

    def start(self) -> None:
        self.close_dangling()
        self._flusher.start(self.FLUSH_S, now=False)

    def stop(self) -> None:
        if self._flusher.running:
            self._flusher.stop()
        self.storage.flush()

    def open(self, channels: list[Any], kind: str, item: str, by: str, detail: str = "") -> list[int]:
        """One broadcast-log entry per channel (ChannelView or ChannelConfig); returns their ids.

        Written at once (a few rows) because the ids are needed to close the entries."""
        ids = []
        with self.storage.transaction() as db:
            for channel in channels:
                config = getattr(channel, "config", channel)
                cursor = db.execute("INSERT INTO broadcast_log (channel, zone, kind, item, started_at, started_by, "
                                    "detail) VALUES (?,?,?,?,?,?,?)",
                                    (config.id, config.zone, kind, item, self.wall(), by, detail))
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def note(self, ids: list[int], note: str) -> None:
        for entry in ids:
            self.storage.enqueue("UPDATE broadcast_log SET detail = TRIM(detail || ' ' || ?) WHERE id = ?",
                                 (note, entry))

    def close(self, ids: list[int], outcome: str) -> None:
        now = self.wall()
        for entry in ids:
            self.storage.enqueue("UPDATE broadcast_log SET ended_at = ?, outcome = ? WHERE id = ? AND ended_at IS NULL",
                                 (now, outcome, entry))

    def session(self, kind: str, device_id: str, zone: str, channel: str, at: float) -> None:
        if kind == "start":
            self.storage.enqueue("INSERT INTO speaker_sessions (loudspeaker, zone, channel, started_at) "
                                 "VALUES (?,?,?,?)", (device_id, zone, channel, at))
        else:
            self.storage.enqueue("UPDATE speaker_sessions SET ended_at = ? WHERE loudspeaker = ? AND ended_at IS NULL",
                                 (at, device_id))

    def close_dangling(self) -> None:
        """What a crash left open ends at the last heartbeat the server wrote."""
        rows = self.storage.query("SELECT value FROM meta WHERE key = 'heartbeat'")
        if not rows:
            return
        beat = rows[0]["value"]
        with self.storage.transaction() as db:
            db.execute("UPDATE speaker_sessions SET ended_at = MAX(started_at, ?) WHERE ended_at IS NULL", (beat,))
            db.execute("UPDATE broadcast_log SET ended_at = MAX(started_at, ?), outcome = 'interrupted' "
                       "WHERE ended_at IS NULL", (beat,))

    def _flush(self) -> None:
        self.storage.enqueue("INSERT OR REPLACE INTO meta (key, value) VALUES ('heartbeat', ?)", (self.wall(),))
        deferred = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.storage.flush)

        def failed(failure: Any) -> None:
            metrics.storage_flush_errors_total.inc()
            log.error("writing the broadcast log failed (kept for the next try): %s", failure.getErrorMessage())

        deferred.addErrback(failed)
