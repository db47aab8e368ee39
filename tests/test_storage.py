"""Storage: migrations, sealed keys, queued writes, and the report's arithmetic."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from broadcaster.control.auth import ZoneTree
from broadcaster.storage import MIGRATIONS, SCHEMA_VERSION, KeySealer, Storage, StorageError
from broadcaster.storage.reports import broadcast_report, report_csv

SEALER = KeySealer(bytes(range(32)))


def test_migrates_an_empty_file_to_the_current_schema(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "b.db", SEALER)
    assert storage.version == SCHEMA_VERSION == 3
    tables = {r["name"] for r in storage.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"zones", "channels", "loudspeakers", "users", "tokens", "media", "broadcast_log", "audit_log",
            "speaker_sessions", "meta", "programmes"} <= tables
    assert storage.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    assert storage.query("PRAGMA foreign_keys")[0]["foreign_keys"] == 1


def test_migrates_from_the_previous_version_keeping_data(tmp_path: Path) -> None:
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
    assert storage.version == 3
    assert storage.query("SELECT name FROM zones") == [{"name": "Tỉnh"}]
    assert storage.query("SELECT item, detail FROM broadcast_log") == [{"item": "x.ogg", "detail": ""}]


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
        with storage.transaction() as db:
            db.execute("INSERT INTO zones (id, name, kind) VALUES ('z', 'Z', 'province')")
            raise RuntimeError("half-way")
    assert storage.query("SELECT * FROM zones") == []


def test_queued_writes_survive_a_failed_flush(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "b.db", SEALER)
    storage.enqueue("INSERT INTO meta (key, value) VALUES ('a', 1)", ())
    storage.enqueue("INSERT INTO no_such_table VALUES (1)", ())
    with pytest.raises(sqlite3.OperationalError):
        storage.flush()
    assert storage.query("SELECT * FROM meta") == []
    storage._pending.pop()  # the bad statement fixed by hand; the good one is still queued
    assert storage.flush() == 1
    assert storage.query("SELECT key FROM meta") == [{"key": "a"}]


def build_log(storage: Storage) -> ZoneTree:
    with storage.transaction() as db:
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
    return ZoneTree.from_rows(storage.query("SELECT id, name, kind, parent FROM zones"))


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
