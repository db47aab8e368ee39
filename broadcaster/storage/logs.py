"""The broadcast log, the audit log and loudspeaker online sessions.

The audio path produces log entries at any moment, on any thread, and must
never wait: ``note_play``, ``play_ended``, ``session_started``,
``session_ended``, ``queue_plays``, ``heartbeat`` and ``enqueue`` only
append to an in-memory queue under its own lock (never the database's);
``flush()`` writes the queue in one transaction.

**No queued row is lost to a failed flush.** A flush copies the queue, it
does not take it: the rows leave the queue only after their COMMIT
succeeded, so whatever fails (a statement with SQLITE_FULL, COMMIT with a
disk I/O error, ROLLBACK itself: storage/db.py ends the transaction anyway)
every row is still queued, in order, for the next attempt, and the rows
enqueued meanwhile are behind them. One flush runs at a time (a lock held
across the transaction), so a batch is never in two transactions: it is
committed whole or retried whole. The heartbeat is one slot, not a row per
second, so a long outage queues only real records. The queue lives in
memory: a crash, or a shutdown while the disk is still full, loses what is
pending then (control/records.py logs how many). control/records.py retries
with backoff and exports the queue's length.

**Plays survive a full disk too.** A play (``Play``) gets an id for each of
its rows, ``uid``, made here before anything is written (a nullable unique
column, migration 5). ``plays_started`` writes the rows at once, so an alert
on air is in the database even if the server dies a second later; if that
write fails, the caller queues the same rows (``queue_plays``) and they are
written with the next flush. Notes and the close name rows by uid, so they
work whichever way the rows went in, and they are queued only once the
first write has settled (control/records.py ``Entry``), hence always behind
the INSERT they change. The INSERT is ``OR IGNORE``: if a write reported as
failed did commit, its queued twin adds nothing. ``audit`` (loop side: the
audit row of something already done, such as an alert started) queues its
row the same way if writing it at once fails.

Loop side (Deferred): ``flush``, ``plays_started``, ``audit``, ``broadcasts``,
``audits``. Sync (start-up, CLI, tests): ``flush_sync``,
``plays_started_sync``, ``close_dangling_sync``, ``audit_sync``. Inside
another repository's transaction: ``audit_txn(conn, ...)``.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from broadcaster.storage.db import Database, Page, one, page, zone_filter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """Who asks for a change, for the audit log."""

    name: str
    remote: str | None = None


SYSTEM = Actor("system")


AUDIT_INSERT = "INSERT INTO audit_log (at, actor, action, target, zone, remote, detail) VALUES (?,?,?,?,?,?,?)"


def audit_txn(conn: sqlite3.Connection, actor: Actor, action: str, target: str, zone: str | None,
              detail: str = "") -> None:
    conn.execute(AUDIT_INSERT, (time.time(), actor.name, action, target, zone, actor.remote, detail))


@dataclass(frozen=True)
class LogQuery:
    """A page of a log: the caller's visible zones (None: all), an optional
    subtree to narrow to, a time range on the log's own time column."""

    visible: Collection[str] | None = None
    subtree: Collection[str] | None = None
    start: float | None = None
    end: float | None = None
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class Play:
    """One thing on air: one broadcast-log row per channel, each named by a uid made here."""

    rows: tuple[tuple[str, str, str], ...]  # (uid, channel id, channel zone)
    kind: str
    item: str
    by: str
    started_at: float
    detail: str = ""
    source: str = "local"  # where it came from: local, province, central, relay (SOURCES)

    @classmethod
    def new(cls, channels: Sequence[tuple[str, str]], kind: str, item: str, by: str, now: float,
            detail: str = "", source: str = "local") -> Play:
        """``channels``: (channel id, channel zone) pairs."""
        return cls(tuple((uuid.uuid4().hex, channel, zone) for channel, zone in channels), kind, item, by, now,
                   detail, source)

    @property
    def uids(self) -> list[str]:
        return [uid for uid, _, _ in self.rows]

    def inserts(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(OPEN_PLAY, (uid, channel, zone, self.kind, self.item, self.started_at, self.by, self.detail,
                             self.source))
                for uid, channel, zone in self.rows]


OPEN_PLAY = ("INSERT OR IGNORE INTO broadcast_log (uid, channel, zone, kind, item, started_at, started_by, detail, "
             "source) VALUES (?,?,?,?,?,?,?,?,?)")
SOURCES = ("local", "province", "central", "relay")  # a broadcast's source, for the yearly report
BROADCAST_COLUMNS = "id, channel, zone, kind, item, started_at, ended_at, started_by, outcome, detail"
AUDIT_COLUMNS = "id, at, actor, action, target, zone, remote, detail"


def _log_page(conn: sqlite3.Connection, table: str, columns: str, time_column: str, q: LogQuery) -> Page:
    where, args = zone_filter("zone", q.visible)
    filters, extra = [where], list(args)
    if q.subtree is not None:
        term, targs = zone_filter("zone", q.subtree)
        filters.append(term)
        extra += targs
    if q.start is not None:
        filters.append(f"{time_column} >= ?")
        extra.append(q.start)
    if q.end is not None:
        filters.append(f"{time_column} < ?")
        extra.append(q.end)
    return page(conn, f"SELECT {columns} FROM {table} WHERE {' AND '.join(filters)} "
                f"ORDER BY {time_column} DESC, id DESC", extra, q.limit, q.offset)


class LogRepository:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue_lock = threading.Lock()  # the queue's: held for a list operation, never for SQL
        self._flush_lock = threading.Lock()  # one flush at a time, held across its transaction
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._beat: float | None = None  # the newest heartbeat not written yet

    # --- queued writes: never wait ---------------------------------------------

    def enqueue(self, sql: str, args: tuple[Any, ...]) -> None:
        """A write applied at the next flush, in order. Takes only the queue's lock."""
        with self._queue_lock:
            self._pending.append((sql, args))

    def queue_plays(self, play: Play) -> None:
        """A play's rows, written at the next flush (its immediate write failed)."""
        with self._queue_lock:
            self._pending.extend(play.inserts())

    def note_play(self, uids: Sequence[str], note: str) -> None:
        for uid in uids:
            self.enqueue("UPDATE broadcast_log SET detail = TRIM(detail || ' ' || ?) WHERE uid = ?", (note, uid))

    def play_ended(self, uids: Sequence[str], outcome: str, now: float) -> None:
        for uid in uids:
            self.enqueue("UPDATE broadcast_log SET ended_at = ?, outcome = ? WHERE uid = ? AND ended_at IS NULL",
                         (now, outcome, uid))

    def session_started(self, device_id: str, zone: str, channel: str, now: float) -> None:
        self.enqueue("INSERT INTO speaker_sessions (loudspeaker, zone, channel, started_at) VALUES (?,?,?,?)",
                     (device_id, zone, channel, now))

    def session_ended(self, device_id: str, now: float) -> None:
        self.enqueue("UPDATE speaker_sessions SET ended_at = ? WHERE loudspeaker = ? AND ended_at IS NULL",
                     (now, device_id))

    def heartbeat(self, now: float) -> None:
        """The server is alive at ``now``: written with the next flush (one slot, the newest wins)."""
        with self._queue_lock:
            self._beat = now

    def pending(self) -> int:
        """Rows waiting for a flush (the heartbeat not counted)."""
        with self._queue_lock:
            return len(self._pending)

    @staticmethod
    def _write(conn: sqlite3.Connection, batch: Sequence[tuple[str, tuple[Any, ...]]], beat: float | None) -> None:
        for sql, args in batch:
            conn.execute(sql, args)
        if beat is not None:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('heartbeat', ?)", (beat,))

    def _flush(self, transact: Callable[..., object]) -> int:
        """Write what is queued now in one transaction (``transact(fn, *args)``, COMMIT included);
        only then take it off the queue. Raises, with every row still queued, if anything failed."""
        with self._flush_lock:
            with self._queue_lock:
                batch, beat = list(self._pending), self._beat
            if not batch and beat is None:
                return 0
            transact(self._write, batch, beat)
            with self._queue_lock:
                del self._pending[:len(batch)]  # enqueue only appends: these are the batch's rows
                if self._beat == beat:
                    self._beat = None
            return len(batch)

    def flush(self) -> Deferred[int]:
        """Write the queue in one transaction in a worker; fires with the count written."""
        return self.db.offload("db", self._flush, functools.partial(self.db.run_here, "logs.flush"))

    def flush_sync(self) -> int:
        return self._flush(self.db.run_sync)

    def settle(self) -> Deferred[None]:
        """Before a listing or a report: write what is queued if the disk lets us. It never
        fails: on a full disk the read goes on with what is stored (the queue stays queued)."""

        def unwritten(failure: Any) -> None:
            failure.trap(sqlite3.Error)
            log.warning("logs: reading while %d rows wait for the disk: %s", self.pending(),
                        failure.getErrorMessage())

        return self.flush().addCallbacks(lambda _: None, unwritten)

    # --- plays: written at once, queued if that fails ------------------------------------

    @staticmethod
    def _plays_started(conn: sqlite3.Connection, play: Play) -> None:
        for sql, args in play.inserts():
            conn.execute(sql, args)

    def plays_started(self, play: Play) -> Deferred[None]:
        """The play's rows, one per channel, written now in a worker. If this fails, the
        caller queues them (``queue_plays``): nothing here is lost with it."""
        return self.db.run("logs.plays_started", self._plays_started, play)

    def plays_started_sync(self, play: Play) -> None:
        self.db.run_sync(self._plays_started, play)

    def close_dangling_sync(self) -> float | None:
        """What a crash left open ends at the last heartbeat written; returns that time."""
        def close(conn: sqlite3.Connection) -> float | None:
            row = one(conn, "SELECT value FROM meta WHERE key = 'heartbeat'")
            if row is None:
                return None
            beat = float(row["value"])
            conn.execute("UPDATE speaker_sessions SET ended_at = MAX(started_at, ?) WHERE ended_at IS NULL", (beat,))
            conn.execute("UPDATE broadcast_log SET ended_at = MAX(started_at, ?), outcome = 'interrupted' "
                         "WHERE ended_at IS NULL", (beat,))
            return beat
        return self.db.run_sync(close)

    # --- the audit log -------------------------------------------------------------

    def write_or_queue(self, name: str, sql: str, args: tuple[Any, ...]) -> Deferred[bool]:
        """One statement for something already done, written now in the storage pool; if that
        fails (the disk is full) it is queued and written with the next flush. Fires True if
        written, False if queued: what must come after it is queued too when it was."""
        def write(conn: sqlite3.Connection) -> bool:
            conn.execute(sql, args)
            return True

        def queue(failure: Failure) -> bool:
            log.warning("storage: %s could not be written, queued for the next flush: %s", name,
                        failure.getErrorMessage())
            self.enqueue(sql, args)
            return False

        return self.db.run(name, write).addErrback(queue)

    def audit(self, actor: Actor, action: str, target: str, zone: str | None, detail: str = "") -> Deferred[bool]:
        """An audit row for something already done (an alert started, cancelled): written now,
        or queued if that fails."""
        args = (time.time(), actor.name, action, target, zone, actor.remote, detail)
        return self.write_or_queue(f"logs.audit {action} {target}", AUDIT_INSERT, args)

    def audit_sync(self, actor: Actor, action: str, target: str, zone: str | None, detail: str = "") -> None:
        self.db.run_sync(audit_txn, actor, action, target, zone, detail)

    # --- pages for the API ------------------------------------------------------------

    def broadcasts(self, query: LogQuery) -> Deferred[Page]:
        return self.db.read("logs.broadcasts", _log_page, "broadcast_log", BROADCAST_COLUMNS, "started_at", query)

    def audits(self, query: LogQuery) -> Deferred[Page]:
        return self.db.read("logs.audits", _log_page, "audit_log", AUDIT_COLUMNS, "at", query)
