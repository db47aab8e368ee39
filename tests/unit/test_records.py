"""The records' flush loop on a fake clock, against a real SQLite file made to fill up
(``PRAGMA max_page_count``: SQLite then fails with "database or disk is full"):
backoff, the pending-rows gauge, one log line per streak, and plays opened while the
disk is full written and closed once space returns."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.task import Clock

from broadcaster.control.records import Records
from broadcaster.metrics import REGISTRY
from broadcaster.storage import Actor, KeySealer, Storage
from tests.conftest import SyncPool

SEALER = KeySealer(bytes(range(32)))
WALL = 1.8e9


class ClockReactor(Clock):
    """The fake clock, plus what the storage pool needs of a reactor: results come straight back."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:  # noqa: N802
        f(*args, **kwargs)

    def addSystemEventTrigger(self, phase: str, event_type: str, f: Callable[..., Any], *args: Any,  # noqa: N802
                              **kwargs: Any) -> None:
        pass  # the pools are the test's own: nothing to stop at shutdown


class HeldPool(SyncPool):
    """Keeps the work until ``release()``: a write still in flight."""

    def __init__(self) -> None:
        self.held: list[tuple[Any, ...]] = []
        self.holding = True

    def callInThreadWithCallback(self, on_result: Callable[[bool, Any], None], f: Callable[..., Any],  # noqa: N802
                                 *args: Any, **kwargs: Any) -> None:
        if self.holding:
            self.held.append((on_result, f, args, kwargs))
        else:
            super().callInThreadWithCallback(on_result, f, *args, **kwargs)

    def release(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        for on_result, f, args, kwargs in held:
            super().callInThreadWithCallback(on_result, f, *args, **kwargs)


Setup = tuple[Storage, ClockReactor, Records]


def make(tmp_path: Path, pool: SyncPool) -> Setup:
    storage = Storage(tmp_path / "b.db", SEALER)
    clock = ClockReactor()
    storage.db.bind(clock, pools={"db": pool})
    return storage, clock, Records(storage, clock, lambda: WALL + clock.seconds())


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    storage, clock, records = made = make(tmp_path, SyncPool())
    yield made
    records.stop()
    storage.db.close()


def disk(storage: Storage, full: bool) -> None:
    """Full: the file may not grow past its size now, on both connections in use (the sync one,
    and this thread's worker one). Not full: space returns."""
    def limit(conn: sqlite3.Connection) -> None:
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0  # no free page to use up first
        pages = conn.execute("PRAGMA page_count").fetchone()[0] if full else 1_000_000
        conn.execute(f"PRAGMA max_page_count={pages}")

    storage.db.run_sync(limit)
    storage.db.run_here("limit", limit)


def next_flush_in(clock: Clock) -> float:
    (call,) = clock.getDelayedCalls()
    return call.getTime() - clock.seconds()


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_failed_flushes_back_off_to_30_s_keep_every_row_and_log_once(setup: Setup,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    storage, clock, records = setup
    records.start()
    assert next_flush_in(clock) == 1.0
    clock.advance(1.0)
    assert next_flush_in(clock) == 1.0  # a successful flush: the next one a second later
    for i in range(300):  # more rows than the file has room for
        records.session("start", f"s{i}", "z", "c", WALL + i)
    disk(storage, full=True)
    errors = sample("broadcaster_storage_flush_errors_total")
    caplog.set_level(logging.INFO, logger="broadcaster.control.records")
    gaps = []
    for _ in range(9):
        gaps.append(next_flush_in(clock))
        clock.advance(gaps[-1])
    assert gaps == [1.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]  # 1 s, then 1, 2, 4 ... up to 30 s
    assert next_flush_in(clock) == 30.0
    assert records.failures == 9
    assert sample("broadcaster_storage_flush_errors_total") - errors == 9
    assert sample("broadcaster_storage_pending_rows") == 300
    assert storage.db.query_sync("SELECT COUNT(*) AS n FROM speaker_sessions") == [{"n": 0}]
    failed = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failed) == 1  # once per streak, not once per attempt
    assert "300 rows pending" in failed[0].getMessage() and "database or disk is full" in failed[0].getMessage()

    disk(storage, full=False)  # space returns
    clock.advance(30.0)
    assert records.failures == 0 and next_flush_in(clock) == 1.0  # back to every second
    rows = storage.db.query_sync("SELECT loudspeaker FROM speaker_sessions ORDER BY id")
    assert [r["loudspeaker"] for r in rows] == [f"s{i}" for i in range(300)]  # every row once, in order
    assert sample("broadcaster_storage_pending_rows") == 0
    recovered = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert recovered == ["storage: the broadcast log is written again (300 rows) after 9 failed attempts"]
    beat = storage.db.query_sync("SELECT value FROM meta WHERE key = 'heartbeat'")
    assert beat == [{"value": WALL + clock.seconds()}]  # the newest, written with the rows


def broadcast_log(storage: Storage) -> list[dict[str, Any]]:
    return storage.db.query_sync("SELECT channel, kind, item, ended_at, outcome, detail FROM broadcast_log "
                                 "ORDER BY id")


CH_A = SimpleNamespace(id="ch-a", zone="a")
CH_B = SimpleNamespace(id="ch-b", zone="b")
LONG = "x" * 5000  # a row longer than a page: it needs a new page however much room the others have


def test_a_play_opened_on_a_full_disk_is_written_and_closed_once_space_returns(setup: Setup) -> None:
    storage, clock, records = setup
    records.start()
    loop = records.open([CH_A], "loop", "loop.ogg", "system")  # written at once
    assert loop.settled and [r["item"] for r in broadcast_log(storage)] == ["loop.ogg"]
    disk(storage, full=True)
    alert = records.open([CH_A, CH_B], "alert", "Bão số 9", "op", detail=LONG)
    assert alert.settled  # its write failed: queued instead
    records.note(loop, "preempted by the alert")
    records.note(alert, "acknowledged by 3/3")
    records.close(alert, "completed")
    records.close(loop, "stopped")
    for _ in range(4):
        clock.advance(next_flush_in(clock))
    assert records.failures == 4
    assert broadcast_log(storage) == [{"channel": "ch-a", "kind": "loop", "item": "loop.ogg", "ended_at": None,
                                       "outcome": None, "detail": ""}]
    disk(storage, full=False)
    clock.advance(next_flush_in(clock))
    assert records.failures == 0
    rows = broadcast_log(storage)
    assert [(r["channel"], r["kind"], r["outcome"]) for r in rows] == [
        ("ch-a", "loop", "stopped"), ("ch-a", "alert", "completed"), ("ch-b", "alert", "completed")]
    assert rows[0]["detail"] == "preempted by the alert"
    assert all(r["detail"] == f"{LONG} acknowledged by 3/3" for r in rows[1:])
    assert all(r["ended_at"] is not None for r in rows)
    uids = storage.db.query_sync("SELECT uid FROM broadcast_log ORDER BY id")
    assert [r["uid"] for r in uids] == loop.uids + alert.uids


def test_a_close_made_while_the_play_is_being_written_follows_it_into_the_queue(tmp_path: Path) -> None:
    pool = HeldPool()
    storage, clock, records = make(tmp_path, pool)
    records.start()
    disk(storage, full=True)
    entry = records.open([CH_A], "live", "Studio", "op", detail=LONG)  # its write is in flight
    records.note(entry, "from the studio")
    records.close(entry, "completed")
    assert not entry.settled and storage.logs.pending() == 0  # the close waits for the row it closes
    pool.release()  # the write fails on the full disk: its rows are queued, then the note and close
    assert entry.settled and storage.logs.pending() == 3
    for _ in range(3):
        clock.advance(next_flush_in(clock))
    assert records.failures == 3 and broadcast_log(storage) == []
    disk(storage, full=False)
    clock.advance(next_flush_in(clock))
    assert broadcast_log(storage) == [{"channel": "ch-a", "kind": "live", "item": "Studio",
                                       "ended_at": WALL, "outcome": "completed",
                                       "detail": f"{LONG} from the studio"}]
    records.stop()
    storage.db.close()


def test_a_write_reported_failed_that_did_commit_is_not_written_twice(setup: Setup) -> None:
    storage, clock, records = setup
    records.start()
    entry = records.open([CH_A], "alert", "A", "op")
    storage.logs.queue_plays(entry.play)  # as if its write had been reported failed after all
    records.close(entry, "completed")
    clock.advance(1.0)
    rows = broadcast_log(storage)
    assert [(r["item"], r["outcome"]) for r in rows] == [("A", "completed")]


def test_stop_writes_what_is_pending_and_says_what_it_cannot(setup: Setup,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    storage, clock, records = setup
    records.start()
    entry = records.open([CH_A], "loop", "loop.ogg", "system")
    disk(storage, full=True)
    for i in range(300):
        records.session("start", f"s{i}", "z", "c", WALL + i)
    records.close(entry, "stopped")
    records.stop()
    assert clock.getDelayedCalls() == []
    assert storage.logs.pending() == 301
    assert any("301 broadcast-log and session rows could not be written" in r.getMessage()
               for r in caplog.records)
    disk(storage, full=False)
    records.stop()
    assert storage.logs.pending() == 0
    assert broadcast_log(storage)[0]["outcome"] == "stopped"


def test_an_audit_row_that_cannot_be_written_is_queued(setup: Setup) -> None:
    storage, clock, records = setup
    records.start()
    disk(storage, full=True)
    done: list[Any] = []
    storage.logs.audit(Actor("op", "10.0.0.1"), "alert.start", "a-1", "a", LONG).addBoth(done.append)
    assert done == [False] and storage.logs.pending() == 1  # queued (False): the alert went on, its audit row waits
    clock.advance(next_flush_in(clock))
    assert records.failures == 1
    disk(storage, full=False)
    clock.advance(next_flush_in(clock))
    rows = storage.db.query_sync("SELECT actor, action, target, zone, remote, detail FROM audit_log")
    assert rows == [{"actor": "op", "action": "alert.start", "target": "a-1", "zone": "a", "remote": "10.0.0.1",
                     "detail": LONG}]
