"""Rows the database may hold that today's checks would refuse (issue 9, item 1): the
server starts, the good programmes play, the listing answers, the bad row is skipped."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from broadcaster.storage import Storage
from tests.integration.memory import Server


def poison(storage: Storage) -> None:
    rows = [
        ("p-poison", "Độc", 1e11, "2026-12-01T05:00:00", "once"),       # the 1e11-second programme
        ("p-garbage", "Rác", 60.0, "not a date", "daily"),              # an unreadable start
        ("p-good", "Tốt", 60.0, "2026-12-01T05:00:00", "daily"),
    ]
    with storage.db.transaction() as db:
        for pid, title, duration, start, recurrence in rows:
            db.execute("INSERT INTO programmes (id, title, zones, media, start_local, duration_s, recurrence, "
                       "created_by, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                       (pid, title, json.dumps(["commune-a"]), json.dumps([]), start, duration, recurrence,
                        "old-version", time.time()))


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    return Server(tmp_path, before_start=poison)


def test_bad_rows_are_skipped_and_the_rest_keeps_working(server: Server) -> None:
    assert server.app.schedule.get("p-good") is not None
    assert server.app.schedule.get("p-poison") is None and server.app.schedule.get("p-garbage") is None
    server.advance(2.0)  # the scheduler polls over it
    status, health = server.http("GET", "/healthz", who=None)
    assert status == 200 and health["ticks_missed"] == 0
    status, page = server.http("GET", "/api/v1/programmes")
    assert status == 200, page
    assert "p-good" in {p["id"] for p in page["items"]}


def test_listings_and_reports_answer_while_the_disk_is_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    server = Server(tmp_path)
    conn = server.app.storage.db.conn
    conn.execute(f"PRAGMA max_page_count={conn.execute('PRAGMA page_count').fetchone()[0]}")  # full, for real
    for i in range(300):
        server.app.storage.logs.session_started(f"d{i}", "hamlet-a", "ch-a", 1.0 + i)
    status, page = server.http("GET", "/api/v1/broadcasts")
    assert status == 200, page
    status, report = server.http("GET", "/api/v1/reports/broadcast?zone=province")
    assert status == 200, report
    assert server.app.storage.logs.pending() >= 300, "nothing dropped: the rows wait for space"
    conn.execute("PRAGMA max_page_count=1073741823")  # space returns
    server.app.storage.logs.flush_sync()
    assert server.app.storage.logs.pending() == 0
    assert len(server.app.storage.db.query_sync("SELECT 1 FROM speaker_sessions")) == 300
