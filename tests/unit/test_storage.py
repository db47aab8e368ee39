"""Storage: migrations, sealed keys, queued writes, the pool, repositories, and the report's arithmetic."""

from __future__ import annotations

import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import resource
except ImportError:  # not POSIX
    resource = None  # type: ignore[assignment]

import pytest
from cryptography.exceptions import InvalidTag
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from broadcaster.control.auth import ZoneTree
from broadcaster.storage import MIGRATIONS, SCHEMA_VERSION, Actor, Conflict, Exists, KeySealer, Storage, StorageError
from broadcaster.storage.crypto import hash_token
from broadcaster.storage.db import split_statements
from broadcaster.storage.loudspeakers import StoredDevice
from broadcaster.storage.reports import broadcast_report, report_csv
from tests.conftest import SyncPool

SEALER = KeySealer(bytes(range(32)))


EXPECTED_COLUMNS = {
    "zones": {"id", "name", "kind", "parent"},
    "channels": {"id", "name", "zone", "public", "multicast_group", "multicast_port", "multicast_ttl", "loop_path",
                 "loop_gain_db"},
    "loudspeakers": {"id", "name", "zone", "channel", "key_sealed", "volume", "created_at", "lat", "lon"},
    "users": {"id", "name", "role", "password_hash", "created_at", "permissions", "must_change_password"},
    "user_zones": {"user_id", "zone"},
    "tokens": {"token_hash", "user_id", "label", "created_at", "id", "expires_at", "last_used_at", "session"},
    "media": {"id", "zone", "title", "filename", "path", "duration_s", "loudness_lufs", "original_lufs", "sha256",
              "size_bytes", "uploaded_by", "created_at"},
    "broadcast_log": {"id", "channel", "zone", "kind", "item", "started_at", "ended_at", "started_by", "outcome",
                      "detail", "uid", "source"},
    "audit_log": {"id", "at", "actor", "action", "target", "zone", "remote", "detail"},
    "speaker_sessions": {"id", "loudspeaker", "zone", "channel", "started_at", "ended_at"},
    "meta": {"key", "value"},
    "programmes": {"id", "title", "zones", "media", "start_local", "duration_s", "recurrence", "weekdays", "until",
                   "priority", "on_restart", "on_preempt", "created_by", "created_at", "relay"},
    "relays": {"id", "zone", "name", "url", "created_by", "created_at"},
    "bulletins": {"id", "title", "summary", "body", "media", "speech", "category", "class", "language", "valid_from",
                  "valid_until", "zones", "plan", "source", "origin", "origin_id", "state", "reason", "version",
                  "approved_content", "created_by", "created_at", "updated_by", "updated_at", "submitted_by",
                  "submitted_at", "approved_by", "approved_at", "next_at"},
    "bulletin_plays": {"id", "bulletin", "slot", "channel", "zone", "started_at", "ended_at", "outcome", "online",
                       "acknowledged"},
    "alert_results": {"id", "title", "zones", "priority", "bulletin", "started_at", "ended_at", "commanded",
                      "acknowledged", "by_zone"},
    "link_imports": {"origin", "upstream_id", "version", "state", "bulletin", "imported_at"},
    "link_cursors": {"name", "value", "updated_at"},
    "link_media": {"origin", "upstream_media", "media", "fetched_at"},
    "link_downstreams": {"id", "last_pull_at", "last_report_at", "last_push_at", "push_digest", "last_error",
                         "last_error_at", "inventory_at"},
    "link_plays": {"downstream", "play_id", "bulletin", "channel", "area", "slot", "started_at", "ended_at",
                   "duration_s", "outcome", "online", "acknowledged", "received_at"},
    "link_loudspeakers": {"downstream", "id", "name", "area", "channel", "lat", "lon", "status", "last_seen",
                          "reported_at"},
    "link_daily": {"downstream", "day", "channel", "area", "hours_on_air", "loudspeakers", "online_share",
                   "reported_at"},
}
EXPECTED_INDEXES = {"broadcast_log_time", "speaker_sessions_time", "audit_log_time", "loudspeakers_zone",
                    "speaker_sessions_open", "broadcast_log_uid", "tokens_id", "tokens_user", "relays_zone",
                    "bulletins_state", "bulletins_origin", "bulletin_plays_time", "alert_results_time",
                    "link_plays_bulletin"}


def assert_current_schema(storage: Storage) -> None:
    assert storage.version == SCHEMA_VERSION == len(MIGRATIONS)
    for table, columns in EXPECTED_COLUMNS.items():
        found = {r["name"] for r in storage.db.query_sync(f"PRAGMA table_info({table})")}
        assert found == columns, table
    indexes = {r["name"] for r in storage.db.query_sync("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert EXPECTED_INDEXES <= indexes


def test_migrates_an_empty_file_to_the_current_schema(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "b.db", SEALER)
    assert_current_schema(storage)
    assert storage.db.query_sync("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    assert storage.db.query_sync("PRAGMA foreign_keys")[0]["foreign_keys"] == 1


def test_migrates_from_version_1_keeping_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO zones (id, name, kind, parent) VALUES ('p', 'Tỉnh', 'province', NULL)")
    db.execute("INSERT INTO broadcast_log (channel, zone, kind, item, started_at, started_by) "
               "VALUES ('c', 'p', 'loop', 'x.ogg', 1.0, 'system')")
    db.commit()
    db.close()
    storage = Storage(path, SEALER)
    assert_current_schema(storage)
    assert storage.db.query_sync("SELECT name FROM zones") == [{"name": "Tỉnh"}]
    assert storage.db.query_sync("SELECT item, detail FROM broadcast_log") == [{"item": "x.ogg", "detail": ""}]


def test_tokens_made_before_expiry_existed_get_an_id_and_ninety_days(tmp_path: Path) -> None:
    path = tmp_path / "v5.db"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:5]:
        db.executescript(script)
    db.execute("PRAGMA user_version=5")
    db.execute("INSERT INTO users (name, role, created_at) VALUES ('op', 'operator', 1.0)")
    for n in range(2):
        db.execute("INSERT INTO tokens (token_hash, user_id, label, created_at) VALUES (?, 1, '', 1.0)",
                   (hash_token(f"bct_old{n}"),))
    db.commit()
    db.close()
    storage = Storage(path, SEALER)
    before = time.time()
    tokens = storage.users.tokens_sync("op").items
    assert len({t["id"] for t in tokens}) == 2 and all(t["id"].startswith("tok_") for t in tokens)
    assert all(before + 89 * 86400 < t["expires_at"] < before + 91 * 86400 for t in tokens), tokens
    assert storage.users.by_token_sync("bct_old0")["name"] == "op", "an old token keeps working after the upgrade"


def test_a_token_expires_and_a_revoked_one_is_refused(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "t.db", SEALER)
    storage.add_user("op", "operator", [])
    now = 1.8e9
    made = storage.users.new_token_sync("op", "console", days=1, now=now)
    assert made["token"].startswith("bct_") and made["expires_at"] == now + 86400
    assert storage.users.by_token_sync(made["token"], now + 86399)["token_id"] == made["id"]
    assert storage.users.by_token_sync(made["token"], now + 86400) == {"expired": True, "token_id": made["id"]}
    assert storage.users.revoke_token_sync(made["id"], owner="someone-else") is False, "only its owner's"
    assert storage.users.revoke_token_sync(made["id"], owner="op") is True
    assert storage.users.by_token_sync(made["token"], now) is None
    assert storage.users.revoke_token_sync(made["id"]) is False, "already gone"
    actions = [r["action"] for r in storage.db.query_sync("SELECT action FROM audit_log ORDER BY id")]
    assert actions[-2:] == ["token.create", "token.revoke"]
    assert made["token"] not in str(storage.db.query_sync("SELECT * FROM tokens")) + str(
        storage.db.query_sync("SELECT * FROM audit_log")), "the secret is stored nowhere"


def test_statements_split_where_sqlite_ends_them() -> None:
    script = """
    CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL DEFAULT 'a; b');  -- a comment; with a semicolon
    CREATE TABLE "odd;name" (x TEXT);
    CREATE TRIGGER notes_log AFTER INSERT ON notes BEGIN
        INSERT INTO "odd;name" (x) VALUES ('saw; ' || NEW.text);
        UPDATE notes SET text = text || ';' WHERE id = NEW.id;
    END;
    -- a trailing comment
    """
    statements = split_statements(script)
    assert len(statements) == 3
    assert statements[0].startswith("CREATE TABLE notes") and "'a; b'" in statements[0]
    assert statements[2].count(";") == 6 and statements[2].rstrip().endswith("END;")
    db = sqlite3.connect(":memory:")
    for statement in statements:
        db.execute(statement)
    db.execute("INSERT INTO notes (text) VALUES ('x')")
    assert db.execute("SELECT text FROM notes").fetchall() == [("x;",)]
    assert db.execute('SELECT x FROM "odd;name"').fetchall() == [("saw; x",)]
    with pytest.raises(ValueError, match="unfinished"):
        split_statements("CREATE TABLE t (x TEXT DEFAULT 'never closed;")
    # the shipped migrations split into the statements they are made of
    assert [len(split_statements(m)) for m in MIGRATIONS][:6] == [10, 4, 1, 3, 2, 6]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StorageError, match="newer than this server"):
        Storage(path, SEALER)


def test_sealed_keys_open_only_for_their_device(tmp_path: Path) -> None:
    sealed = SEALER.seal("spk-1", b"secret-key-0123456789")
    assert SEALER.open("spk-1", sealed) == b"secret-key-0123456789"
    assert b"secret-key" not in sealed
    with pytest.raises(InvalidTag):
        SEALER.open("spk-2", sealed)
    with pytest.raises(InvalidTag):
        KeySealer(bytes(32)).open("spk-1", sealed)


def test_secret_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "var" / "secret.key"
    first = KeySealer.from_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert KeySealer.from_file(path).open("d", first.seal("d", b"k" * 16)) == b"k" * 16
    path.write_text("not hex")
    with pytest.raises(StorageError, match="server secret"):
        KeySealer.from_file(path)


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "b.db", SEALER)
    with pytest.raises(RuntimeError):
        with storage.db.transaction() as db:
            db.execute("INSERT INTO zones (id, name, kind) VALUES ('z', 'Z', 'province')")
            raise RuntimeError("half-way")
    assert storage.db.query_sync("SELECT * FROM zones") == []


def test_queued_writes_survive_a_failed_flush(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "b.db", SEALER)
    storage.logs.enqueue("INSERT INTO meta (key, value) VALUES ('a', 1)", ())
    storage.logs.enqueue("INSERT INTO no_such_table VALUES (1)", ())
    with pytest.raises(sqlite3.OperationalError):
        storage.logs.flush_sync()
    assert storage.db.query_sync("SELECT * FROM meta") == []
    storage.logs._pending.pop()  # the bad statement fixed by hand; the good one is still queued
    assert storage.logs.flush_sync() == 1
    assert storage.db.query_sync("SELECT key FROM meta") == [{"key": "a"}]


# --- the write queue when the disk is full: real SQLite failures, nothing lost -------------------

def limit_pages(conn: sqlite3.Connection, pages: int | None = None) -> None:
    """This connection's database may not grow past ``pages`` (None: its size now). SQLite then
    fails the way it does on a full disk: SQLITE_FULL, "database or disk is full"."""
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0  # no free page to fill first
    limit = pages if pages is not None else conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={limit}")


def queue_sessions(storage: Storage, names: list[str]) -> None:
    for i, name in enumerate(names):
        storage.logs.session_started(name, "z", "c", float(i))


def written_sessions(storage: Storage) -> list[str]:
    return [r["loudspeaker"] for r in storage.db.query_sync("SELECT loudspeaker FROM speaker_sessions ORDER BY id")]


def test_a_full_database_keeps_every_queued_row_in_order_until_space_returns(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "b.db", SEALER)
    first = [f"s{i}" for i in range(300)]  # more than the pages the file has left: the flush must grow it
    queue_sessions(storage, first)
    storage.logs.heartbeat(1.0)
    storage.logs.heartbeat(2.0)  # one slot: a long outage does not queue a heartbeat a second
    assert storage.logs.pending() == 300
    limit_pages(storage.db.conn)
    during = [f"late{i}" for i in range(5)]
    seen: list[str] = []

    def enqueue_during_the_flush(sql: str) -> None:  # the audio path goes on while a flush runs
        seen.append(sql)
        if len(seen) == 2:  # BEGIN IMMEDIATE, then the batch's first INSERT
            queue_sessions(storage, during)

    storage.db.conn.set_trace_callback(enqueue_during_the_flush)
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):  # the real error, not ROLLBACK's
        storage.logs.flush_sync()
    storage.db.conn.set_trace_callback(None)
    assert "ROLLBACK" not in seen  # SQLite rolled back by itself; a ROLLBACK would only have failed
    assert not storage.db.conn.in_transaction
    assert storage.logs.pending() == 305 and written_sessions(storage) == []
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        storage.logs.flush_sync()  # still full: still nothing lost, nothing half-written
    assert storage.logs.pending() == 305 and written_sessions(storage) == []
    limit_pages(storage.db.conn, 1_000_000)  # space returns
    assert storage.logs.flush_sync() == 305
    assert written_sessions(storage) == first + during  # every row exactly once, in the order queued
    assert storage.logs.pending() == 0 and storage.logs.flush_sync() == 0
    assert storage.db.query_sync("SELECT key, value FROM meta") == [{"key": "heartbeat", "value": 2.0}]


@pytest.mark.skipif(resource is None, reason="needs RLIMIT_FSIZE (POSIX)")
def test_an_io_error_at_commit_keeps_the_batch(tmp_path: Path) -> None:
    """The file may not grow (RLIMIT_FSIZE: write() fails with EFBIG, as on a full disk), so
    the statements succeed in memory and COMMIT fails writing the WAL: SQLITE_IOERR_WRITE.
    Before, the batch was already off the queue then, and lost."""
    storage = Storage(tmp_path / "b.db", SEALER)
    names = [f"s{i}" for i in range(300)]
    queue_sessions(storage, names)
    storage.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL is empty: a commit must grow it
    seen: list[str] = []
    storage.db.conn.set_trace_callback(seen.append)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))  # two WAL frames do not fit
    try:
        with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
            storage.logs.flush_sync()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        storage.db.conn.set_trace_callback(None)
    assert seen[-1] == "COMMIT"  # every statement went through: COMMIT failed
    assert sum(sql.startswith("INSERT INTO speaker_sessions") for sql in seen) == 300
    assert storage.logs.pending() == 300 and written_sessions(storage) == []
    assert storage.logs.flush_sync() == 300
    assert written_sessions(storage) == names


def interrupt(conn: sqlite3.Connection, *statements: str) -> list[str]:
    """Each of ``statements`` fails when it runs on this connection (sqlite3_interrupt: a real
    SQLite failure, SQLITE_INTERRUPT, that leaves the transaction open); returns what ran."""
    seen: list[str] = []

    def trace(sql: str) -> None:
        seen.append(sql)
        if sql in statements:
            conn.interrupt()

    conn.set_trace_callback(trace)
    return seen


def test_a_failed_commit_and_a_failed_rollback_keep_the_batch_and_replace_the_connection(tmp_path: Path) -> None:
    """A full disk cannot make ROLLBACK fail in WAL mode (it writes nothing), so here COMMIT and
    then ROLLBACK are interrupted: the connection is left inside a transaction nothing can end.
    Before, the batch was lost and every later flush failed on "cannot start a transaction
    within a transaction"."""
    storage = Storage(tmp_path / "b.db", SEALER)
    names = [f"s{i}" for i in range(20)]
    queue_sessions(storage, names)
    stuck = storage.db.conn
    seen = interrupt(stuck, "COMMIT", "ROLLBACK")
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        storage.logs.flush_sync()
    assert seen[-2:] == ["COMMIT", "ROLLBACK"]
    assert storage.db.conn is not stuck  # closed (which discards the open transaction) and reopened
    assert storage.logs.pending() == 20 and written_sessions(storage) == []
    assert storage.logs.flush_sync() == 20
    assert written_sessions(storage) == names


class InlineReactor:
    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:  # noqa: N802
        f(*args, **kwargs)

    def addSystemEventTrigger(self, phase: str, event_type: str, f: Callable[..., Any], *args: Any,  # noqa: N802
                              **kwargs: Any) -> None:
        pass


def result_of(d: Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the inline pool fires at once"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def test_a_worker_connection_stuck_after_a_failed_rollback_is_replaced(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "b.db", SEALER)
    storage.db.bind(InlineReactor(), pools={"db": SyncPool()})
    names = [f"s{i}" for i in range(20)]
    queue_sessions(storage, names)
    worker = storage.db.run_here("conn", lambda conn: conn)  # this thread's worker connection
    interrupt(worker, "COMMIT", "ROLLBACK")
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        result_of(storage.logs.flush())
    assert storage.db.run_here("conn", lambda conn: conn) is not worker
    assert storage.logs.pending() == 20
    assert result_of(storage.logs.flush()) == 20
    assert written_sessions(storage) == names
    storage.db.close()


def test_concurrent_flushes_write_every_row_once_in_order(pooled: tuple[Storage, ThreadCalls]) -> None:
    """Flushes from the pool's three workers and from the caller's thread, while four threads
    enqueue: one flush at a time, so no row is in two transactions."""
    storage, reactor = pooled
    per_thread = 150

    def produce(k: int) -> None:
        for i in range(per_thread):
            storage.logs.session_started(f"t{k}", "z", "c", float(i))

    producers = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in producers:
        t.start()
    flushes = [storage.logs.flush() for _ in range(12)]
    storage.logs.flush_sync()
    for t in producers:
        t.join()
    for d in flushes:
        reactor.wait(d)
    storage.logs.flush_sync()
    rows = storage.db.query_sync("SELECT loudspeaker, started_at FROM speaker_sessions ORDER BY id")
    assert len(rows) == 4 * per_thread
    for k in range(4):
        assert [r["started_at"] for r in rows if r["loudspeaker"] == f"t{k}"] == [float(i) for i in range(per_thread)]


def build_log(storage: Storage) -> ZoneTree:
    with storage.db.transaction() as db:
        for zone, kind, parent in (("p", "province", None), ("a", "commune", "p"), ("a1", "hamlet", "a"),
                                   ("b", "commune", "p"), ("b1", "hamlet", "b")):
            db.execute("INSERT INTO zones (id, name, kind, parent) VALUES (?,?,?,?)", (zone, zone.upper(), kind,
                                                                                       parent))
        db.execute("INSERT INTO channels (id, name, zone) VALUES ('ch-a', 'A', 'a'), ('ch-b', 'B', 'b')")
        for speaker, zone, channel in (("s1", "a1", "ch-a"), ("s2", "a1", "ch-a"), ("s3", "b1", "ch-b")):
            db.execute("INSERT INTO loudspeakers (id, zone, channel, key_sealed, created_at) VALUES (?,?,?,?,0)",
                       (speaker, zone, channel, b"x"))
        hour = 3600.0
        log = [("ch-a", "a", "scheduled", 0, 2 * hour), ("ch-a", "a", "live", 5 * hour, 5.5 * hour),
               ("ch-a", "a", "scheduled", -hour, hour),   # half outside the window
               ("ch-b", "b", "loop", 9 * hour, None)]     # still on air at "now" = 10 h
        for channel, zone, kind, start, end in log:
            db.execute("INSERT INTO broadcast_log (channel, zone, kind, item, started_at, ended_at, started_by) "
                       "VALUES (?,?,?,?,?,?,?)", (channel, zone, kind, "x", start, end, "t"))
        sessions = [("s1", "a1", 0, 10 * hour), ("s2", "a1", 0, 5 * hour), ("s3", "b1", 8 * hour, None)]
        for speaker, zone, start, end in sessions:
            db.execute("INSERT INTO speaker_sessions (loudspeaker, zone, channel, started_at, ended_at) "
                       "VALUES (?,?,?,?,?)", (speaker, zone, "c", start, end))
    return ZoneTree.from_rows(storage.db.query_sync("SELECT id, name, kind, parent FROM zones"))


def test_report_figures_from_a_known_log(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "b.db", SEALER)
    tree = build_log(storage)
    report = broadcast_report(storage, tree, "p", 0.0, 10 * 3600.0, now=10 * 3600.0)
    a, b = report["communes"]
    assert a["zone"] == "a" and a["hours_on_air"] == {"live": 0.5, "scheduled": 3.0}
    assert a["hours_on_air_total"] == 3.5
    assert a["loudspeakers"] == 2 and a["availability"] == 0.75  # (10 h + 5 h) / (2 × 10 h)
    assert b["hours_on_air"] == {"loop": 1.0} and b["availability"] == 0.2  # 2 h of 10 h
    only_a = broadcast_report(storage, tree, "a", 0.0, 10 * 3600.0, now=10 * 3600.0)
    assert [c["zone"] for c in only_a["communes"]] == ["a"]
    csv_text = report_csv(report)
    assert csv_text.splitlines()[0] == "zone,name,hours_live,hours_loop,hours_scheduled,hours_total,loudspeakers," \
                                       "availability"
    assert csv_text.splitlines()[1] == "a,A,0.5,0,3.0,3.5,2,0.75"


# --- the loop side: the pool ----------------------------------------------------------------

class ThreadCalls:
    """The part of a reactor the pool uses: results come back through callFromThread,
    and the test thread (standing in for the reactor thread) runs them."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.calls.put((f, args, kwargs))

    def addSystemEventTrigger(self, phase: str, event_type: str, f: Callable[..., Any], *args: Any,
                              **kwargs: Any) -> None:
        pass

    def wait(self, d: Deferred[Any], timeout_s: float = 10.0) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        while not results:
            f, args, kwargs = self.calls.get(timeout=timeout_s)
            f(*args, **kwargs)
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]


@pytest.fixture
def pooled(tmp_path: Path) -> Iterator[tuple[Storage, ThreadCalls]]:
    storage = Storage(tmp_path / "b.db", SEALER)
    reactor = ThreadCalls()
    storage.db.bind(reactor)
    yield storage, reactor
    storage.db.close()


def test_interactions_run_in_a_worker_and_a_long_report_holds_up_no_write(
        pooled: tuple[Storage, ThreadCalls]) -> None:
    storage, reactor = pooled
    build_log(storage)
    started, release = threading.Event(), threading.Event()

    def slow_report(conn: sqlite3.Connection) -> tuple[int, int]:
        conn.execute("SELECT COUNT(*) FROM speaker_sessions").fetchone()  # its read snapshot is open from here
        started.set()
        release.wait(10)
        count = conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'x'").fetchone()[0]
        return threading.get_ident(), count

    report = storage.db.report("slow", slow_report)
    assert started.wait(10)
    assert not report.called  # the caller got its Deferred back at once, the query is still running
    # While the report reads, the caller's thread writes (sync path) and a pooled write completes:
    # nothing waits for the long read (WAL readers do not block the writer; reports have their own pool).
    storage.logs.audit_sync(Actor("t"), "x", "y", None)
    written = reactor.wait(storage.logs.audit(Actor("t"), "x", "z", None).addCallback(
        lambda _: threading.get_ident()))
    assert written == threading.get_ident()  # the callback ran on the "reactor" thread
    assert not report.called
    release.set()
    worker, count = reactor.wait(report)
    assert worker != threading.get_ident()
    assert count == 0  # one transaction: a consistent snapshot, the writes made meanwhile are not in it


def test_a_failed_interaction_rolls_back_and_conflicts_say_so(pooled: tuple[Storage, ThreadCalls]) -> None:
    storage, reactor = pooled

    def half_way(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO zones (id, name, kind) VALUES ('z', 'Z', 'province')")
        raise RuntimeError("half-way")

    with pytest.raises(RuntimeError):
        reactor.wait(storage.db.run("half", half_way))
    assert storage.db.query_sync("SELECT * FROM zones") == []
    reactor.wait(storage.zones.create(Actor("admin", "127.0.0.1"), "z", "Z", "province", None))
    with pytest.raises(Conflict):
        reactor.wait(storage.zones.create(Actor("admin"), "z", "Z", "province", None))
    assert [z["id"] for z in storage.zones.all_sync()] == ["z"]
    audit = storage.db.query_sync("SELECT actor, action, target, remote FROM audit_log")
    assert audit == [{"actor": "admin", "action": "zone.create", "target": "z", "remote": "127.0.0.1"}]


def test_loudspeaker_repository_changes_one_device(pooled: tuple[Storage, ThreadCalls]) -> None:
    storage, reactor = pooled
    build_log(storage)
    speakers, actor = storage.loudspeakers, Actor("op", "10.0.0.1")
    row = reactor.wait(speakers.register(actor, "s9", "a1", "ch-a", "k" * 20, name="Chợ", volume=60))
    assert (row["id"], row["zone"], row["channel"], row["name"], row["volume"]) == ("s9", "a1", "ch-a", "Chợ", 60)
    with pytest.raises(Exists):
        reactor.wait(speakers.register(actor, "s9", "a1", "ch-a", "k" * 20))
    device = reactor.wait(speakers.device("s9"))
    assert device is not None and device.key == b"k" * 20 and device.volume == 60
    updated = reactor.wait(speakers.update(actor, "s9", {"volume": 30, "channel": "ch-b"}))
    assert updated is not None and (updated["volume"], updated["channel"]) == (30, "ch-b")
    assert reactor.wait(speakers.rotate_key(actor, "s9", "n" * 20))
    assert speakers.device_sync("s9") == StoredDevice("s9", "a1", "ch-b", b"n" * 20, 30)
    page = reactor.wait(speakers.page({"a", "a1"}, limit=10, offset=0))
    assert [r["id"] for r in page.items] == ["s1", "s2", "s9"] and page.total == 3
    assert reactor.wait(speakers.delete(actor, "s9")) and reactor.wait(speakers.get("s9")) is None
    assert not reactor.wait(speakers.rotate_key(actor, "s9", "n" * 20))
    assert reactor.wait(speakers.update(actor, "s9", {"volume": 1})) is None
    rows = storage.db.query_sync("SELECT action FROM audit_log WHERE target = 's9' ORDER BY id")
    actions = [r["action"] for r in rows]
    assert actions == ["loudspeaker.register", "loudspeaker.update", "loudspeaker.rotate_key", "loudspeaker.delete"]


# --- the report: SQL aggregates against the arithmetic done by hand ---------------------------------

def brute_force_report(storage: Storage, zones: ZoneTree, zone: str, start: float, end: float,
                       now: float) -> dict[str, Any]:
    """The report computed row by row in Python (the way it was before SQL did it)."""
    def overlap(s: float, e: float | None) -> float:
        return max(0.0, min(e if e is not None else now, end) - max(s, start))

    subtree = zones.subtree(zone)
    communes: dict[str, dict[str, Any]] = {}

    def commune(z: str) -> dict[str, Any]:
        c = zones.commune_of(z)
        return communes.setdefault(c, {"zone": c, "name": zones.names.get(c, c), "on_air": {}, "n": 0, "online": 0.0})

    for r in storage.db.query_sync("SELECT zone, kind, started_at, ended_at FROM broadcast_log"):
        if r["zone"] in subtree and r["started_at"] < end and (r["ended_at"] is None or r["ended_at"] > start):
            on_air = commune(r["zone"])["on_air"]
            on_air[r["kind"]] = on_air.get(r["kind"], 0.0) + overlap(r["started_at"], r["ended_at"]) / 3600
    for r in storage.db.query_sync("SELECT zone FROM loudspeakers"):
        if r["zone"] in subtree:
            commune(r["zone"])["n"] += 1
    for r in storage.db.query_sync("SELECT zone, started_at, ended_at FROM speaker_sessions"):
        if r["zone"] in subtree and r["started_at"] < end and (r["ended_at"] is None or r["ended_at"] > start):
            commune(r["zone"])["online"] += overlap(r["started_at"], r["ended_at"]) / 3600
    window_h = max(0.0, min(end, now) - start) / 3600
    return {"zone": zone, "from": start, "to": end, "communes": [
        {"zone": c["zone"], "name": c["name"], "hours_on_air": dict(sorted(c["on_air"].items())),
         "hours_on_air_total": sum(c["on_air"].values()), "loudspeakers": c["n"],
         "availability": min(1.0, c["online"] / (c["n"] * window_h)) if c["n"] and window_h else None}
        for c in sorted(communes.values(), key=lambda c: c["zone"])]}


def test_report_aggregated_in_sql_equals_the_brute_force_one(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "b.db", SEALER)
    tree = build_log(storage)
    rng = random.Random(8)
    hour = 3600.0
    with storage.db.transaction() as db:
        for i in range(300):
            start = rng.uniform(-5 * hour, 15 * hour)
            end = None if rng.random() < 0.1 else start + rng.uniform(0, 4 * hour)
            db.execute("INSERT INTO broadcast_log (channel, zone, kind, item, started_at, ended_at, started_by) "
                       "VALUES (?,?,?,?,?,?,?)", ("c", rng.choice(["a", "a1", "b", "b1"]),
                                                  rng.choice(["live", "scheduled", "alert"]), f"i{i}", start, end, "t"))
            start = rng.uniform(-5 * hour, 15 * hour)
            end = None if rng.random() < 0.1 else start + rng.uniform(0, 6 * hour)
            db.execute("INSERT INTO speaker_sessions (loudspeaker, zone, channel, started_at, ended_at) "
                       "VALUES (?,?,?,?,?)",
                       (rng.choice(["s1", "s2", "s3"]), rng.choice(["a1", "b1"]), "c", start, end))
    statements: list[str] = []
    storage.db.conn.set_trace_callback(statements.append)
    for zone, start, end, now in (("p", 0.0, 10 * hour, 10 * hour), ("p", 2 * hour, 20 * hour, 12 * hour),
                                  ("a", -hour, 3 * hour, 12 * hour), ("b1", 5 * hour, 6 * hour, 5.5 * hour)):
        statements.clear()
        fast = broadcast_report(storage, tree, zone, start, end, now=now)
        assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 3  # three aggregates
        slow = brute_force_report(storage, tree, zone, start, end, now)
        assert [c["zone"] for c in fast["communes"]] == [c["zone"] for c in slow["communes"]]
        for f, s in zip(fast["communes"], slow["communes"], strict=True):
            assert f["hours_on_air"] == pytest.approx(s["hours_on_air"], abs=1e-4)
            assert f["hours_on_air_total"] == pytest.approx(s["hours_on_air_total"], abs=1e-4)
            assert f["loudspeakers"] == s["loudspeakers"]
            assert f["availability"] == (pytest.approx(s["availability"], abs=1e-4) if s["availability"] is not None
                                         else None)
    storage.db.conn.set_trace_callback(None)


def test_report_from_the_pool_equals_the_sync_one(pooled: tuple[Storage, ThreadCalls]) -> None:
    storage, reactor = pooled
    tree = build_log(storage)
    pooled_report = reactor.wait(storage.reports.broadcast(tree, "p", 0.0, 10 * 3600.0, 10 * 3600.0))
    assert pooled_report == storage.reports.broadcast_sync(tree, "p", 0.0, 10 * 3600.0, 10 * 3600.0)
    assert report_csv(pooled_report).splitlines()[1] == "a,A,0.5,0,3.0,3.5,2,0.75"
