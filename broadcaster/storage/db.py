"""The SQLite database: connections, migrations, and a thread pool of its own.

Two ways in, and which one a caller uses depends on the thread it is on:

- **Loop side (Deferred)**: ``db.run(name, fn, *args)`` for a write,
  ``db.read(name, fn, *args)`` for a read, ``db.report(name, fn, *args)``
  for a long read. ``fn(conn, *args)`` runs inside one transaction in a
  worker thread and the Deferred fires on the reactor thread with its
  result, as Synapse's ``runInteraction``. Nothing on the reactor thread
  waits on the database lock. Each worker has its own connection, so a
  report reading for seconds never holds up a write (WAL: readers do not
  block the writer). Reports have a pool of their own, so a flood of them
  never delays an edit.
- **Sync**: ``db.run_sync(fn, *args)`` and ``db.transaction()`` on the
  calling thread, through one connection under one lock. For the CLI,
  start-up, tests, and the old ``Storage`` object until its callers move.

A failed transaction is always over when its error reaches the caller,
whichever step failed: a statement, COMMIT, or ROLLBACK itself. SQLite
rolls back on its own after SQLITE_FULL and I/O errors (then ROLLBACK is not
sent: it would only fail with "no transaction is active" and hide the real
error); otherwise ROLLBACK is sent; and if that fails too, the connection
is closed (closing discards what was not committed) and a new one opened
for the next transaction. The caller always gets the first error.

WAL mode, ``synchronous=NORMAL``, foreign keys on, a 5 s busy timeout.
An in-memory database (``:memory:``) cannot be opened twice, so there every
path shares the one connection under the lock: fine for tests, not for a
server.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from broadcaster.storage.migrations import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

POOL_THREADS = 3     # API reads and writes: a few, SQLite has one writer anyway
REPORT_THREADS = 1   # long reads queue behind each other, never behind an edit
AUTH_THREADS = 1     # scrypt password checks: a flood of wrong passwords waits here, alone
TOKEN_THREADS = 1    # bearer-token lookups: every API call makes one, so they never queue behind API work
SLOW_INTERACTION_S = 0.5


class StorageError(Exception):
    """The database cannot be used (newer schema, unreadable secret)."""


class Conflict(Exception):
    """A write would break a uniqueness or reference rule; the message says which."""


class Exists(Conflict):
    """The id is taken (a repository checked before inserting)."""


class ThreadReactor(Protocol):
    """What the pool needs of a reactor: results come back with callFromThread."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None: ...

    def addSystemEventTrigger(self, phase: str, event_type: str, f: Callable[..., Any], *args: Any,
                              **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "total": self.total, "limit": self.limit, "offset": self.offset}


def split_statements(script: str) -> list[str]:
    """SQL statements of a script, each complete. A ``;`` inside a string
    literal, a quoted name, a comment or a trigger's BEGIN ... END belongs to its
    statement (``sqlite3.complete_statement`` knows SQLite's grammar for that).
    Raises ValueError if the script ends inside an unfinished statement."""
    statements: list[str] = []
    current = ""
    for piece in script.split(";"):
        current = f"{current};{piece}" if current else piece
        if sqlite3.complete_statement(current + ";"):
            if current.strip() and not _only_comments(current):
                statements.append(current.strip() + ";")
            current = ""
    if current.strip() and not _only_comments(current):
        raise ValueError(f"unfinished SQL statement: {current.strip()[:80]!r}")
    return statements


def _only_comments(text: str) -> bool:
    lines = [line.strip() for line in text.strip().splitlines()]
    return all(not line or line.startswith("--") for line in lines)


def rows(conn: sqlite3.Connection, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(sql, tuple(args))]


def one(conn: sqlite3.Connection, sql: str, args: Iterable[Any] = ()) -> dict[str, Any] | None:
    row = conn.execute(sql, tuple(args)).fetchone()
    return dict(row) if row is not None else None


def page(conn: sqlite3.Connection, sql: str, args: Iterable[Any], limit: int, offset: int) -> Page:
    args = tuple(args)
    total = int(conn.execute(f"SELECT COUNT(*) FROM ({sql})", args).fetchone()[0])
    items = rows(conn, f"{sql} LIMIT ? OFFSET ?", (*args, limit, offset))
    return Page(items, total, limit, offset)


def zone_filter(column: str, zones: Collection[str] | None) -> tuple[str, list[Any]]:
    """A WHERE term limiting ``column`` to zones; None means no limit (an admin)."""
    if zones is None:
        return "1=1", []
    if not zones:
        return "0=1", []
    return f"{column} IN ({','.join('?' * len(zones))})", sorted(zones)


class Database:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._memory = self.path == ":memory:"
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # the sync connection's; workers have their own connections
        self.conn = self._connect()
        self._local = threading.local()
        self._worker_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._reactor: ThreadReactor | None = None
        self._pools: dict[str, ThreadPool] = {}
        self.migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    # --- schema ------------------------------------------------------------

    @property
    def version(self) -> int:
        with self._lock:
            return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self, target: int = SCHEMA_VERSION) -> int:
        """Apply the migrations after the file's version, each in its own transaction."""
        with self._lock:
            current = self.version
            if current > SCHEMA_VERSION:
                raise StorageError(f"{self.path}: schema version {current} is newer than this server "
                                   f"({SCHEMA_VERSION}); upgrade broadcaster")
            for number in range(current + 1, target + 1):
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in split_statements(MIGRATIONS[number - 1]):
                        self.conn.execute(statement)
                    self.conn.execute(f"PRAGMA user_version={number}")
                    self.conn.execute("COMMIT")
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
            return self.version

    # --- sync: CLI, start-up, tests -----------------------------------------

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """All-or-nothing on the calling thread: a failure leaves nothing half-stored."""
        with self._lock:
            conn = self.conn
            with _transaction(conn, write, self._replace_sync_conn):
                yield conn

    def _replace_sync_conn(self, conn: sqlite3.Connection) -> None:
        """The sync connection is stuck in a transaction it cannot roll back (called under the lock)."""
        if self._memory:  # closing would drop the whole database: try once more, it is the only copy
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                log.error("storage: the in-memory database is stuck in a failed transaction: %s", exc)
            return
        log.warning("storage: reopening the database connection after a failed ROLLBACK")
        _close_quietly(conn)
        self.conn = self._connect()

    def query_sync(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """One statement outside any explicit transaction (autocommit), as the old Storage.query."""
        with self._lock:
            return rows(self.conn, sql, args)

    def run_sync(self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args,
                 **kwargs: P.kwargs) -> T:
        with self.transaction() as conn:
            return fn(conn, *args, **kwargs)

    # --- loop side: the pool --------------------------------------------------

    def bind(self, reactor: ThreadReactor, pools: dict[str, Any] | None = None) -> None:
        """Start the pools and stop them when the reactor shuts down. Idempotent.
        ``pools`` replaces the thread pools (tests run the work at once, on their thread)."""
        if self._reactor is not None:
            return
        self._reactor = reactor
        if pools is not None:
            self._pools = dict(pools)
            return
        for name, threads in (("db", POOL_THREADS), ("reports", REPORT_THREADS), ("auth", AUTH_THREADS),
                              ("tokens", TOKEN_THREADS)):
            pool = ThreadPool(minthreads=1, maxthreads=threads, name=f"broadcaster-{name}")
            pool.start()
            self._pools[name] = pool
        reactor.addSystemEventTrigger("during", "shutdown", self.stop_pools)

    def stop_pools(self) -> None:
        for pool in self._pools.values():
            if hasattr(pool, "stop"):
                pool.stop()
        self._pools.clear()

    def run(self, name: str, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args,
            **kwargs: P.kwargs) -> Deferred[T]:
        """fn(conn, *args) in one write transaction (BEGIN IMMEDIATE) in a worker thread."""
        return self._submit("db", name, True, fn, *args, **kwargs)

    def run_here(self, name: str, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args,
                 **kwargs: P.kwargs) -> T:
        """fn(conn, *args) in one write transaction, now, on the calling thread's own worker
        connection: for work already running in a pool thread (``offload("db", ...)``) that
        must know its transaction committed before it goes on (the log queue's flush)."""
        return self._interaction(name, True, fn, args, kwargs)

    def read(self, name: str, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args,
             **kwargs: P.kwargs) -> Deferred[T]:
        """fn(conn, *args) in one read transaction (a consistent snapshot) in a worker thread."""
        return self._submit("db", name, False, fn, *args, **kwargs)

    def report(self, name: str, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args,
               **kwargs: P.kwargs) -> Deferred[T]:
        """A long read, in the reports pool."""
        return self._submit("reports", name, False, fn, *args, **kwargs)

    def lookup(self, name: str, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args,
               **kwargs: P.kwargs) -> Deferred[T]:
        """A short indexed read every request makes (its bearer token), in a pool of its own."""
        return self._submit("tokens", name, False, fn, *args, **kwargs)

    def offload(self, pool: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        """Work that is not SQL but belongs beside it (password hashing: pool "auth")."""
        if self._reactor is None or pool not in self._pools:
            raise RuntimeError("Database.bind(reactor) first: the loop side needs the pool")
        return deferToThreadPool(self._reactor, self._pools[pool], fn, *args, **kwargs)  # type: ignore[arg-type]

    def _submit(self, pool: str, name: str, write: bool, fn: Callable[..., T], *args: Any,
                **kwargs: Any) -> Deferred[T]:
        if self._reactor is None or pool not in self._pools:
            raise RuntimeError("Database.bind(reactor) first: the loop side needs the pool")
        return deferToThreadPool(self._reactor, self._pools[pool],  # type: ignore[arg-type]
                                 self._interaction, name, write, fn, args, kwargs)

    def _interaction(self, name: str, write: bool, fn: Callable[..., T], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> T:
        started = time.monotonic()
        if self._memory:
            with self.transaction(write) as conn:
                result = fn(conn, *args, **kwargs)
        else:
            conn = self._worker_conn()
            with _transaction(conn, write, self._drop_worker_conn):
                result = fn(conn, *args, **kwargs)
        elapsed = time.monotonic() - started
        if elapsed > SLOW_INTERACTION_S:
            log.info("storage: %s took %.2f s", name, elapsed)
        return result

    def _worker_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._conns_lock:
                self._worker_conns.append(conn)
        return conn

    def _drop_worker_conn(self, conn: sqlite3.Connection) -> None:
        """This thread's connection is stuck in a transaction it cannot roll back: the next
        interaction on this thread opens a new one."""
        log.warning("storage: reopening a worker's database connection after a failed ROLLBACK")
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._conns_lock:
            if conn in self._worker_conns:
                self._worker_conns.remove(conn)
        _close_quietly(conn)

    def close(self) -> None:
        self.stop_pools()
        with self._conns_lock:
            for conn in self._worker_conns:
                conn.close()
            self._worker_conns.clear()
        with self._lock:
            self.conn.close()


@contextmanager
def _transaction(conn: sqlite3.Connection, write: bool,
                 stuck: Callable[[sqlite3.Connection], None]) -> Iterator[None]:
    """One transaction, committed whole or not at all. Whatever fails (a statement, COMMIT,
    ROLLBACK) the transaction is over when the first error reaches the caller; ``stuck(conn)``
    replaces a connection still in the transaction after ROLLBACK failed."""
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as exc:
        if not _end_failed(conn):
            stuck(conn)
        if isinstance(exc, sqlite3.IntegrityError):
            raise Conflict(str(exc)) from exc
        raise


def _end_failed(conn: sqlite3.Connection) -> bool:
    """Roll back what a failure left open; False if the connection is still in the transaction."""
    try:
        if not conn.in_transaction:
            return True  # SQLite already rolled it back (SQLITE_FULL, an I/O error, an interrupt)
        conn.execute("ROLLBACK")
        return True
    except sqlite3.ProgrammingError:  # the connection is closed: nothing of it is left to end
        return True
    except sqlite3.Error as exc:
        log.error("storage: ROLLBACK failed: %s", exc)
    try:
        return not conn.in_transaction
    except sqlite3.Error:
        return True


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()  # what the open transaction wrote is discarded, never committed
    except sqlite3.Error as exc:
        log.error("storage: closing a stuck connection failed: %s", exc)
