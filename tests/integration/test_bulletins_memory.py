"""Bulletins through the whole server in memory: written by one user, approved by another, heard
on the loudspeakers of their zones at their time, never when unapproved, expired or withdrawn,
never twice; and shown on the zone's e-boards."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import soundfile

from tests.integration.memory import Server
from tests.integration.test_alerts_memory import labels, live, runs

VN = ZoneInfo("Asia/Ho_Chi_Minh")
ATOM = "{http://www.w3.org/2005/Atom}"


def people(server: Server) -> Server:
    """A commune's editor (writes) and chairman (approves), neither running the loudspeakers."""
    storage = server.app.storage
    for name, permission in (("editor-a", "bulletin.create"), ("chair-a", "bulletin.approve")):
        storage.add_user(name, "viewer", ["commune-a"], permissions=(permission,))
        server.tokens[name] = storage.new_token(name, now=server.wall())
    return server


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    return people(Server(tmp_path))


def upload(server: Server, zone: str = "commune-a", seconds: float = 2.0, frequency: float = 880.0) -> str:
    buffer = io.BytesIO()
    t = np.arange(int(48000 * seconds)) / 48000
    soundfile.write(buffer, (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), 48000, format="WAV")
    status, media = server.http("POST", f"/api/v1/media?zone={zone}&title=bulletin", raw=buffer.getvalue(),
                                who="op-a")
    assert status == 201, media
    return str(media["id"])


def local(server: Server, ahead_s: float) -> str:
    return datetime.fromtimestamp(server.wall() + ahead_s, VN).replace(tzinfo=None).isoformat(timespec="seconds")


def write(server: Server, media: str | None, *, at_s: float = 10.0, who: str = "editor-a", submit: bool = True,
          **extra: Any) -> dict[str, Any]:
    body = {"title": "Lịch tiêm chủng", "summary": "Tiêm chủng tại trạm y tế xã", "category": "y-te",
            "zones": ["commune-a"], "plan": {"at": [local(server, at_s)]}, "submit": submit, **extra}
    if media:
        body["media"] = media
    status, bulletin = server.http("POST", "/api/v1/bulletins", body, who=who)
    assert status == 201, bulletin
    return bulletin


def state(server: Server, bulletin: dict[str, Any]) -> str:
    return str(server.http("GET", f"/api/v1/bulletins/{bulletin['id']}")[1]["state"])


def bulletin_rows(server: Server) -> list[dict[str, Any]]:
    server.app.storage.logs.flush_sync()
    return server.app.storage.db.query_sync("SELECT * FROM broadcast_log WHERE detail LIKE 'bulletin=%'")


def test_written_approved_by_another_and_heard_at_its_time(server: Server) -> None:
    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    media = upload(server)
    bulletin = write(server, media, at_s=8.0)
    assert bulletin["state"] == "submitted" and bulletin["class"] == "thong-thuong"
    slot = bulletin["next"][0]

    status, refused = server.http("POST", f"/api/v1/bulletins/{bulletin['id']}/approve", who="editor-a")
    assert (status, refused["error"]["code"]) == (403, "forbidden"), "the editor lacks bulletin.approve"
    status, approved = server.http("POST", f"/api/v1/bulletins/{bulletin['id']}/approve", who="chair-a")
    assert status == 200 and approved["state"] == "approved" and approved["approved_by"] == "chair-a", approved

    live(server, 4.0, a1)
    assert state(server, bulletin) == "scheduled"
    live(server, 10.0, a1)
    heard = runs(labels(a1.audio()))
    assert heard == ["loop", "prog", "loop"], heard
    rows = bulletin_rows(server)
    assert [(r["channel"], r["kind"], r["outcome"], r["source"]) for r in rows] == [
        ("ch-a", "scheduled", "completed", "local")]
    assert abs(rows[0]["started_at"] - slot) < 0.05, "it starts on the frame of its time"
    status, plays = server.http("GET", f"/api/v1/bulletins/{bulletin['id']}/plays")
    assert [(p["channel"], p["slot"], p["outcome"], p["online"]) for p in plays["items"]] == [
        ("ch-a", slot, "completed", 1)]
    live(server, 31.0, a1)
    assert state(server, bulletin) == "played"
    audit = [r["action"] for r in server.app.storage.db.query_sync(
        "SELECT action FROM audit_log WHERE target = ? ORDER BY id", (bulletin["id"],))]
    assert audit == ["bulletin.create", "bulletin.approve", "bulletin.schedule", "bulletin.play"]


def test_the_author_may_not_approve_unless_the_zone_allows_it(server: Server, tmp_path: Path) -> None:
    bulletin = write(server, upload(server), who="op-a")
    status, refused = server.http("POST", f"/api/v1/bulletins/{bulletin['id']}/approve", who="op-a")
    assert (status, refused["error"]["code"]) == (403, "four_eyes"), refused
    assert state(server, bulletin) == "submitted"

    (tmp_path / "lone").mkdir()
    lone = people(Server(tmp_path / "lone", patch=lambda doc: doc.update(
        bulletins={"self_approval_zones": ["commune-a"]})))
    own = write(lone, upload(lone), who="op-a")
    assert lone.http("POST", f"/api/v1/bulletins/{own['id']}/approve", who="op-a")[0] == 200


def test_unapproved_expired_and_withdrawn_bulletins_never_play(server: Server) -> None:
    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    media = upload(server)
    waiting = write(server, media, at_s=5.0)  # submitted, never approved
    draft = write(server, media, at_s=5.0, submit=False)
    assert draft["state"] == "draft"
    late = write(server, media, at_s=8.0, valid_until=server.wall() + 6.0)
    status, refused = server.http("POST", f"/api/v1/bulletins/{late['id']}/approve", who="chair-a")
    assert status == 409 and refused["error"]["code"] == "nothing_ahead", "its time is past its validity"
    pulled = write(server, media, at_s=8.0)
    assert server.http("POST", f"/api/v1/bulletins/{pulled['id']}/approve", who="chair-a")[0] == 200
    status, withdrawn = server.http("POST", f"/api/v1/bulletins/{pulled['id']}/withdraw",
                                    {"reason": "sai ngày"}, who="editor-a")
    assert status == 200 and withdrawn["state"] == "withdrawn" and withdrawn["reason"] == "sai ngày"
    live(server, 14.0, a1)
    assert set(runs(labels(a1.audio()))) == {"loop"}
    assert bulletin_rows(server) == []
    assert {state(server, b) for b in (waiting, draft)} == {"submitted", "draft"}


def test_an_edit_after_approval_goes_back_for_approval_and_shows_what_changed(server: Server) -> None:
    media = upload(server)
    bulletin = write(server, media, at_s=120.0)
    server.http("POST", f"/api/v1/bulletins/{bulletin['id']}/approve", who="chair-a")
    edit = {"title": "Lịch tiêm chủng (đổi giờ)", "summary": bulletin["summary"], "category": "y-te",
            "zones": ["commune-a"], "media": media, "plan": {"at": [local(server, 300.0)]}, "version": 1}
    status, edited = server.http("PUT", f"/api/v1/bulletins/{bulletin['id']}", edit, who="editor-a")
    assert status == 200 and edited["state"] == "submitted" and edited["version"] == 2, edited
    assert edited["approved_by"] is None
    assert set(edited["changes"]) == {"title", "plan"}
    assert edited["changes"]["title"] == {"approved": "Lịch tiêm chủng", "now": "Lịch tiêm chủng (đổi giờ)"}
    status, stale = server.http("PUT", f"/api/v1/bulletins/{bulletin['id']}", edit, who="editor-a")
    assert status == 409, "an edit of version 1 after version 2 exists is refused"
    assert server.http("POST", f"/api/v1/bulletins/{bulletin['id']}/approve", who="chair-a")[0] == 200


def test_a_slot_never_plays_twice_across_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    path = tmp_path / "b.sqlite"
    first = people(Server(tmp_path, storage_path=path))
    bulletin = write(first, upload(first), at_s=3.0)
    first.http("POST", f"/api/v1/bulletins/{bulletin['id']}/approve", who="chair-a")
    live(first, 4.0)  # on air at the stop
    first.app.stop()
    first.advance(1.0)
    again = Server(tmp_path, storage_path=path, wall_offset=first.wall_offset + 5.0)
    live(again, 10.0)
    again.app.storage.logs.flush_sync()
    plays = again.app.storage.bulletins.plays_sync(bulletin["id"])
    assert [(p["channel"], p["outcome"]) for p in plays] == [("ch-a", "stopped")]
    assert again.app.storage.db.query_sync("SELECT COUNT(*) AS n FROM broadcast_log WHERE detail LIKE 'bulletin=%'"
                                           )[0]["n"] == 1


def test_an_emergency_bulletin_from_someone_who_may_alert_goes_straight_to_air(server: Server) -> None:
    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    live(server, 1.0, a1)
    status, bulletin = server.http("POST", "/api/v1/bulletins", {
        "title": "Cảnh báo lũ", "class": "khan-cap", "zones": ["commune-a"], "text": "Nước lũ đang lên.",
        "plan": {"asap": True}, "submit": True})
    assert status == 201 and bulletin["state"] == "approved" and bulletin["approved_by"] == "admin", bulletin
    live(server, 8.0, a1)
    assert runs(labels(a1.audio()))[:3] == ["loop", "tone", "speech"]
    assert server.app.alerts.recent or server.app.alerts.active
    live(server, 32.0, a1)
    assert state(server, bulletin) == "played"
    plays = server.app.storage.bulletins.plays_sync(bulletin["id"])
    assert [(p["channel"], p["outcome"], p["acknowledged"]) for p in plays] == [("ch-a", "completed", 1)]

    status, queued = server.http("POST", "/api/v1/bulletins", {
        "title": "Cảnh báo", "class": "khan-cap", "zones": ["commune-a"], "text": "x", "plan": {"asap": True},
        "submit": True}, who="editor-a")
    assert status == 201 and queued["state"] == "submitted", "an editor who may not alert goes through approval"


def test_the_zone_eboard_shows_current_text_bulletins_emergency_first(server: Server) -> None:
    media = upload(server)
    ordinary = write(server, media, at_s=600.0)
    server.http("POST", f"/api/v1/bulletins/{ordinary['id']}/approve", who="chair-a")
    write(server, media, at_s=600.0, title="Bản nháp")  # submitted: never on a board
    status, urgent = server.http("POST", "/api/v1/bulletins", {
        "title": "Cảnh báo lũ", "class": "khan-cap", "zones": ["province"], "summary": "Lũ lên",
        "text": "Nước lũ đang lên, bà con di dời.", "plan": {"asap": True}, "submit": True})
    assert status == 201
    status, board = server.http("GET", "/api/v1/eboards/hamlet-a", who=None)
    assert status == 200 and [i["id"] for i in board["items"]] == [urgent["id"], ordinary["id"]], board
    assert board["items"][0]["class"] == "khan-cap"
    status, other = server.http("GET", "/api/v1/eboards/commune-b", who=None)
    assert [i["id"] for i in other["items"]] == [urgent["id"]], "commune A's bulletin is not on B's board"
    status, atom = server.http("GET", "/api/v1/eboards/hamlet-a.atom", who=None)
    assert status == 200
    feed = ElementTree.fromstring(atom)
    titles = [e.findtext(f"{ATOM}title") for e in feed.findall(f"{ATOM}entry")]
    assert titles == ["Cảnh báo lũ", "Lịch tiêm chủng"]
    assert server.http("GET", "/api/v1/eboards/nowhere", who=None)[0] == 404


def programme_at(server: Server, media: str, ahead_s: float) -> float:
    """A programme starting at the next whole minute at least ``ahead_s`` ahead; its start."""
    start = (int(server.wall() + ahead_s) // 60 + 1) * 60
    status, programme = server.http("POST", "/api/v1/programmes", {
        "title": "Chương trình", "zones": ["commune-a"], "media": [media],
        "start": datetime.fromtimestamp(start, VN).strftime("%Y-%m-%dT%H:%M")}, who="op-a")
    assert status == 201, programme
    return float(start)


def approve(server: Server, bulletin: dict[str, Any]) -> dict[str, Any]:
    status, approved = server.http("POST", f"/api/v1/bulletins/{bulletin['id']}/approve", who="chair-a")
    assert status == 200, approved
    return approved


def test_an_ordinary_bulletin_waits_for_the_programme_on_air_and_a_priority_one_does_not(server: Server) -> None:
    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    start = programme_at(server, upload(server, seconds=4.0), 5.0)
    speech = upload(server, seconds=1.5, frequency=300.0)
    at = datetime.fromtimestamp(start + 1, VN).replace(tzinfo=None).isoformat(timespec="seconds")
    ordinary = write(server, speech, plan={"at": [at]})
    assert any("waits for its end" in w for w in ordinary["warnings"]), ordinary["warnings"]
    approve(server, ordinary)
    live(server, start - server.wall() + 8.0, a1)
    assert runs(labels(a1.audio())) == ["loop", "prog", "speech", "loop"], "after the programme, not over it"
    row = next(r for r in bulletin_rows(server))
    assert abs(row["started_at"] - (start + 4.0)) < 0.05, "at the programme's end, on the frame"

    start = programme_at(server, upload(server, seconds=4.0), 5.0)
    at = datetime.fromtimestamp(start + 1, VN).replace(tzinfo=None).isoformat(timespec="seconds")
    urgent = write(server, speech, plan={"at": [at]}, **{"class": "uu-tien"})
    assert urgent["warnings"] == []
    approve(server, urgent)
    heard_before = a1.audio().size
    live(server, start - server.wall() + 8.0, a1)
    later = runs(labels(a1.audio()[heard_before:]))
    assert later == ["loop", "prog", "speech", "prog", "loop"], later  # the programme pauses and resumes


def test_a_slot_repeats_with_its_gap_and_a_withdrawal_stops_it_on_air(server: Server) -> None:
    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    speech = upload(server, seconds=1.0, frequency=300.0)
    twice = approve(server, write(server, speech, at_s=3.0, plan={"at": [local(server, 3.0)], "repeat": 2,
                                                                  "gap_s": 1.0}))
    live(server, 8.0, a1)
    heard = labels(a1.audio())
    assert runs(heard) == ["loop", "speech", "speech", "loop"], " ".join(heard)  # twice, with silence between
    spoken = [i for i, x in enumerate(heard) if x == "speech"]
    gaps = [b - a for a, b in zip(spoken, spoken[1:], strict=False) if b - a > 1]
    assert len(gaps) == 1 and 4 <= gaps[0] <= 7 and "loop" not in heard[spoken[0]:spoken[-1]], heard
    assert server.app.storage.bulletins.plays_sync(twice["id"])[0]["outcome"] == "completed"

    long = approve(server, write(server, upload(server, seconds=8.0, frequency=300.0), at_s=3.0))
    live(server, 6.0, a1)
    status, pulled = server.http("POST", f"/api/v1/bulletins/{long['id']}/withdraw", {"reason": "nhầm"},
                                 who="chair-a")
    assert status == 200 and pulled["state"] == "withdrawn"
    heard_before = a1.audio().size
    live(server, 3.0, a1)
    assert runs(labels(a1.audio()[heard_before:])) == ["loop"], "off air at once, back to the loop"
    assert [p["outcome"] for p in server.app.storage.bulletins.plays_sync(long["id"])] == ["cut"]


def test_a_bulletin_received_twice_from_the_province_is_one_bulletin_played_once(server: Server) -> None:
    from broadcaster.storage.bulletins import BulletinContent
    from broadcaster.storage.logs import Actor

    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    content = BulletinContent(title="Thông báo của tỉnh", summary="", body="", category="chinh-tri",
                              klass="uu-tien", language="vi", valid_from=None, valid_until=None,
                              zones=["commune-a"], plan={"at": [local(server, 4.0)], "repeat": 1},
                              media=upload(server, frequency=300.0), source="province", origin="tinh",
                              origin_id="TB-2026-17")
    link = Actor("link:tinh")
    results = []
    for _ in range(2):
        server.app.bulletins.receive(content, approve=True, actor=link).addBoth(results.append)
        server.advance(0.1)
    assert [r["state"] for r in results] == ["approved", "approved"] and results[0]["id"] == results[1]["id"]
    live(server, 8.0, a1)
    rows = bulletin_rows(server)
    assert [(r["kind"], r["source"]) for r in rows] == [("announcement", "province")]
    changed = BulletinContent(**{**content.__dict__, "title": "Thông báo của tỉnh (sửa)"})
    server.app.bulletins.receive(changed, approve=False, actor=link).addBoth(results.append)
    server.advance(0.1)
    assert results[-1]["state"] == "played", "a bulletin that has played is not reopened"


def test_two_bulletins_of_one_class_at_one_time_play_one_after_the_other(server: Server) -> None:
    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    at = local(server, 4.0)
    first = approve(server, write(server, upload(server, seconds=2.0, frequency=300.0), plan={"at": [at]}))
    second = approve(server, write(server, upload(server, seconds=2.0, frequency=880.0), plan={"at": [at]}))
    live(server, 10.0, a1)
    assert runs(labels(a1.audio())) == ["loop", "speech", "prog", "loop"], "never both at once"
    starts = sorted(p["started_at"] for b in (first, second) for p in server.app.storage.bulletins.plays_sync(b["id"]))
    assert 1.9 < starts[1] - starts[0] < 2.1
