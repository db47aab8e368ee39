"""An alert on air when the server dies (issue 9): the next start plays it again if it is
recent, or tells its loudspeakers to go back to normal, and the records say which. The
crash is a server abandoned mid-alert (nothing more written, its queue lost) and a second
one started on the same database file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broadcaster.storage.alerts import INSERT
from tests.integration.memory import WALL_OFFSET, Server
from tests.integration.test_alerts_memory import labels, live, runs


@pytest.fixture(autouse=True)
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)


def crash_mid_alert(tmp_path: Path) -> tuple[Path, str]:
    """A server with an alert on air for 3 s, then never heard from again."""
    db = tmp_path / "broadcaster.db"
    first = Server(tmp_path, storage_path=db)
    a1 = first.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    live(first, 1.0, a1)
    status, alert = first.http("POST", "/api/v1/alerts", {
        "title": "Cảnh báo lũ", "zones": ["commune-a"], "repeat": 2, "gap_s": 0.5, "volume": 90,
        "text": "Nước sông đang lên nhanh."})
    assert status == 201
    live(first, 3.0, a1)
    assert any(c.get("amp") for c in a1.commands()), "the loudspeaker was switched to alert volume"
    rows = first.app.storage.db.query_sync("SELECT id FROM alerts_on_air")
    assert rows == [{"id": alert["id"]}], "the alert is on record while on air"
    return db, str(alert["id"])


def test_a_recent_alert_plays_again_under_its_id_after_a_crash(tmp_path: Path) -> None:
    db, alert_id = crash_mid_alert(tmp_path)
    second = Server(tmp_path, storage_path=db, wall_offset=WALL_OFFSET + 30)
    assert alert_id in second.app.alerts.active, "resumed at start"
    a1 = second.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    live(second, 12.0, a1)
    assert runs(labels(a1.audio()))[:4] == ["tone", "speech", "tone", "speech"], runs(labels(a1.audio()))
    assert any(c["alert"] == alert_id and c["amp"] and c["volume"] == 90 for c in a1.commands())
    assert a1.commands()[-1]["alert"] is None, "restored when it completed"
    assert second.http("GET", f"/api/v1/alerts/{alert_id}")[1]["status"] == "completed"

    second.app.storage.logs.flush_sync()
    plays = second.app.storage.db.query_sync("SELECT outcome, detail FROM broadcast_log WHERE kind = 'alert' "
                                            "ORDER BY id")
    assert [p["outcome"] for p in plays] == ["interrupted", "completed"], plays
    audit = second.app.storage.db.query_sync("SELECT actor, detail FROM audit_log WHERE action = 'alert.start' "
                                            "AND target = ? ORDER BY id", (alert_id,))
    assert audit[-1]["actor"] == "system" and "resumed after a restart" in audit[-1]["detail"]
    assert second.app.storage.db.query_sync("SELECT id FROM alerts_on_air") == []


def test_an_old_alert_is_not_played_again_but_its_loudspeakers_are_restored(tmp_path: Path) -> None:
    db, alert_id = crash_mid_alert(tmp_path)
    second = Server(tmp_path, storage_path=db, wall_offset=WALL_OFFSET + 3600)  # an hour's outage
    assert second.app.alerts.active == {}
    assert second.http("GET", f"/api/v1/alerts/{alert_id}")[1]["status"] == "interrupted"
    second.advance(20)  # the loudspeaker is slow to come back
    a1 = second.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    live(second, 3.0, a1)
    restores = [c for c in a1.commands() if c["alert"] is None]
    assert restores, "told to go back to normal once it is back online"
    assert not any(c.get("amp") for c in a1.commands()), "never switched to alert volume again"
    count = len(a1.commands())
    live(second, 3.0, a1)
    assert len(a1.commands()) == count, "acknowledged: not told again"
    assert "tone" not in labels(a1.audio()) and "loop" in labels(a1.audio())

    second.app.storage.logs.flush_sync()
    audit = second.app.storage.db.query_sync("SELECT detail FROM audit_log WHERE action = 'alert.restore'")
    assert len(audit) == 1 and "alerts.resume_within_s" in audit[0]["detail"]
    assert second.app.storage.db.query_sync("SELECT id FROM alerts_on_air") == []


def test_rows_a_crash_left_that_must_not_play(tmp_path: Path) -> None:
    """An expired CAP message is restored, not played; an unreadable row is dropped; the good
    one beside them still plays."""
    good = {"title": "Tốt", "zones": ["commune-b"], "channels": ["ch-b"], "priority": 50, "policy": "preempt",
            "repeat": 1, "gap_s": 0.0, "created_by": "admin", "volume": 100, "text": "Có bão.", "media_id": None,
            "media_path": None, "language": "vi", "cap_identifier": None, "cap_sent": None}

    def left(storage: object) -> None:
        now = WALL_OFFSET + 1000
        with storage.db.transaction() as conn:  # type: ignore[attr-defined]
            conn.execute(INSERT, ("a-expired", now - 60, now - 1, json.dumps({**good, "channels": ["ch-a"]})))
            conn.execute(INSERT, ("a-garbled", now - 60, None, "{not json"))
            conn.execute(INSERT, ("a-good", now - 60, None, json.dumps(good)))

    server = Server(tmp_path, before_start=left)
    assert list(server.app.alerts.active) == ["a-good"]
    assert server.app.alerts.recent["a-expired"].ended == "interrupted"
    assert "a-garbled" not in server.app.alerts.recent
    server.advance(1)
    assert server.tts.spoken == [("Có bão.", "vi")]


def test_an_alert_ended_by_a_clean_stop_is_not_played_again(tmp_path: Path) -> None:
    db = tmp_path / "broadcaster.db"
    first = Server(tmp_path, storage_path=db)
    assert first.http("POST", "/api/v1/alerts", {"title": "x", "zones": ["commune-a"], "text": "x"})[0] == 201
    first.advance(1)
    first.app.stop()
    first.advance(1)
    first.app.storage.close()
    second = Server(tmp_path, storage_path=db, wall_offset=WALL_OFFSET + 5)
    assert second.app.alerts.active == {} and second.app.alerts.recent == {}


def test_a_cancelled_alert_stays_cancelled_through_a_crash_right_after(tmp_path: Path) -> None:
    """The cancel's DELETE is written at once, not left in the queue a crash would lose."""
    db = tmp_path / "broadcaster.db"
    first = Server(tmp_path, storage_path=db)
    status, alert = first.http("POST", "/api/v1/alerts", {"title": "Báo động nhầm", "zones": ["commune-a"],
                                                           "text": "x", "repeat": 20})
    assert status == 201
    first.advance(1)
    assert first.http("POST", f"/api/v1/alerts/{alert['id']}/cancel")[0] == 200
    assert first.app.storage.logs.pending() > 0, "records are still queued: the crash comes before the flush"
    second = Server(tmp_path, storage_path=db, wall_offset=WALL_OFFSET + 5)
    assert second.app.alerts.active == {}, "a false alarm, cancelled, is not played again"
