"""/api/v1/events (the console's overview, server-sent events) against the whole server in memory:
what each caller sees, the level, alerts appearing and going with their acknowledgement counts,
the per-user limit, slow clients dropped, heartbeats; and the calendar and media audio routes
the console's pages read."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from broadcaster import metrics
from broadcaster.control import overview
from tests.integration.memory import Server

PORTS = iter(range(51000, 52000))


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    return Server(tmp_path)


class Stream:
    """An open GET /api/v1/events over a memory transport."""

    def __init__(self, server: Server, who: str, address: str = "127.0.0.1") -> None:
        self.server = server
        self.protocol = server.site.buildProtocol(IPv4Address("TCP", address, next(PORTS)))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", address, 50000))
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(f"GET /api/v1/events HTTP/1.0\r\nHost: memory\r\n"
                                   f"Authorization: Bearer {server.tokens[who]}\r\n\r\n".encode())
        for _ in range(10):
            server.reactor.advance(0)

    @property
    def head(self) -> bytes:
        return self.transport.value().partition(b"\r\n\r\n")[0]

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def events(self) -> list[dict[str, Any]]:
        body = self.transport.value().partition(b"\r\n\r\n")[2].decode()
        found = []
        for block in body.split("\n\n"):
            lines = block.split("\n")
            if "event: overview" in lines:
                found.append(json.loads(next(line[6:] for line in lines if line.startswith("data: "))))
        return found

    def last(self) -> dict[str, Any]:
        return self.events()[-1]

    def close(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def test_each_caller_sees_its_own_channels_with_what_is_on_air_and_its_level(server: Server) -> None:
    admin, op_a = Stream(server, "admin"), Stream(server, "op-a")
    assert admin.status == 200 and b"text/event-stream" in admin.head
    assert b"retry: 3000" in admin.transport.value()
    assert admin.events(), "the first overview is sent at once"
    server.advance(2.0)
    assert [c["id"] for c in admin.last()["channels"]] == ["ch-a", "ch-b"]
    seen = op_a.last()
    assert [c["id"] for c in seen["channels"]] == ["ch-a"], "a commune operator sees only its commune"
    ch_a = seen["channels"][0]
    assert ch_a["on_air"]["kind"] == "loop" and ch_a["on_air"]["class"] == "background"
    assert ch_a["on_air"]["since"] is not None
    # The loop is a 440 Hz sine of amplitude 0.1: RMS 0.0707, -23 dBFS (its gain may move it a little).
    assert -30.0 < ch_a["level"]["rms_dbfs"] < -16.0
    assert ch_a["level"]["rms_dbfs"] <= ch_a["level"]["peak_dbfs"]
    ch_b = admin.last()["channels"][1]
    assert ch_b["on_air"] is None and ch_b["level"]["rms_dbfs"] == -96.0, "ch-b has nothing: silence"
    assert ch_a["loudspeakers"] == {"online": 0, "offline": 2}
    assert metrics.event_streams._value.get() == 2
    admin.close()
    op_a.close()
    assert metrics.event_streams._value.get() == 0 and not server.app.overview.streams


def test_an_alert_appears_with_its_acknowledgements_and_goes_when_cancelled(server: Server) -> None:
    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    op_a = Stream(server, "op-a")
    status, alert = server.http("POST", "/api/v1/alerts", {"title": "Bão số 9", "zones": ["commune-a"],
                                                             "text": "Khẩn cấp.", "repeat": 20})
    assert status == 201
    for _ in range(6):
        server.advance(0.5)
        a1.ack_all()
        a1.keepalive()
    seen = op_a.last()
    assert [a["title"] for a in seen["alerts"]] == ["Bão số 9"]
    on_ch_a = seen["channels"][0]
    assert on_ch_a["on_air"]["kind"] == "alert" and on_ch_a["on_air"]["class"] == "emergency"
    assert on_ch_a["on_air"]["by"] == "admin"
    assert on_ch_a["alerts"][0]["acknowledged"] == 1 and on_ch_a["alerts"][0]["commanded"] == 1
    assert on_ch_a["loudspeakers"] == {"online": 1, "offline": 1}
    status, _ = server.http("POST", f"/api/v1/alerts/{alert['id']}/cancel")
    assert status == 200
    server.advance(2.0)
    assert op_a.last()["alerts"] == [] and op_a.last()["channels"][0]["alerts"] == []


def test_another_communes_alert_is_not_in_the_stream(server: Server) -> None:
    op_a = Stream(server, "op-a")
    status, _ = server.http("POST", "/api/v1/alerts", {"title": "Chỉ xã B", "zones": ["commune-b"],
                                                         "text": "Khẩn.", "repeat": 5})
    assert status == 201
    server.advance(2.0)
    assert op_a.last()["alerts"] == []
    assert b"Ch\xe1\xbb\x89 x\xc3\xa3 B" not in op_a.transport.value()


def test_an_alert_on_several_communes_shows_a_caller_only_its_own_zones_and_channels(server: Server) -> None:
    """The admin alerts both communes, then the whole province: commune A's operator sees the alert, but
    not commune B's zone or channel ids; a target above its zones is named by its own channel's zone."""
    op_a, admin = Stream(server, "op-a"), Stream(server, "admin")
    status, both = server.http("POST", "/api/v1/alerts", {"title": "Hai xã", "zones": ["commune-a", "commune-b"],
                                                          "text": "Khẩn.", "repeat": 5})
    assert status == 201, both
    server.advance(2.0)
    (seen,) = op_a.last()["alerts"]
    assert seen["zones"] == ["commune-a"] and seen["channels"] == ["ch-a"]
    assert b"commune-b" not in op_a.transport.value() and b"ch-b" not in op_a.transport.value()
    (whole,) = admin.last()["alerts"]
    assert whole["zones"] == ["commune-a", "commune-b"] and whole["channels"] == ["ch-a", "ch-b"]
    assert server.http("POST", f"/api/v1/alerts/{both['id']}/cancel")[0] == 200
    status, province = server.http("POST", "/api/v1/alerts", {"title": "Toàn tỉnh", "zones": ["province"],
                                                              "text": "Khẩn.", "repeat": 5})
    assert status == 201, province
    server.advance(2.0)
    (seen,) = op_a.last()["alerts"]
    assert seen["zones"] == ["commune-a"] and seen["channels"] == ["ch-a"]
    assert admin.last()["alerts"][0]["zones"] == ["province"]


def test_a_fifth_stream_of_one_user_is_refused_with_429(server: Server) -> None:
    streams = [Stream(server, "op-a") for _ in range(overview.PER_USER)]
    assert all(s.status == 200 for s in streams)
    before = metrics.event_streams_refused_total.labels("user")._value.get()
    extra = Stream(server, "op-a")
    assert extra.status == 429 and b"too_many_streams" in extra.transport.value()
    assert b"Retry-After: 10" in extra.head
    assert metrics.event_streams_refused_total.labels("user")._value.get() == before + 1
    assert Stream(server, "admin").status == 200, "another user is not held back"
    streams[0].close()
    assert Stream(server, "op-a").status == 200, "a closed stream frees its place"


def test_a_client_that_stops_reading_is_dropped_not_waited_for(server: Server,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overview, "MAX_BACKLOG_BYTES", 3000)
    slow, fine = Stream(server, "admin"), Stream(server, "op-a")
    held = next(s for s in server.app.overview.streams if s.user == "admin")
    held.pauseProducing()  # its socket's buffer is full
    before = metrics.event_streams_dropped_total.labels("slow")._value.get()
    server.advance(10.0)
    assert held.closed and slow.transport.disconnecting
    assert metrics.event_streams_dropped_total.labels("slow")._value.get() == before + 1
    assert [s.user for s in server.app.overview.streams] == ["op-a"]
    count = len(fine.events())
    server.advance(2.0)
    assert len(fine.events()) > count, "the others go on"


def test_a_quiet_stream_gets_heartbeats(server: Server) -> None:
    stream = Stream(server, "op-a")
    server.app.overview.status = lambda event: None  # type: ignore[method-assign]  # the core says nothing
    server.advance(overview.HEARTBEAT_S + 1)
    assert b": heartbeat\n\n" in stream.transport.value()


def test_the_events_need_a_token(server: Server) -> None:
    status, body = server.http("GET", "/api/v1/events", who=None)
    assert status == 401


def test_the_calendar_lists_a_channels_programmes_in_the_window(server: Server) -> None:
    from tests.integration.test_api_memory import schedule, soon, upload

    media = upload(server, "commune-a", "tin-sang")
    pid = schedule(server, "Bản tin sáng", "commune-a", [media], soon(server, 1), who="op-a")
    now = server.wall()
    status, week = server.http("GET", f"/api/v1/calendar?channel=ch-a&from={now}&to={now + 7 * 86400}", who="op-a")
    assert status == 200
    assert [(i["kind"], i["id"]) for i in week["items"]] == [("programme", pid)]
    assert week["items"][0]["end"] - week["items"][0]["start"] == pytest.approx(2.0, abs=0.1)
    status, other = server.http("GET", f"/api/v1/calendar?channel=ch-b&from={now}", who="op-a")
    assert status == 400 and "no channel 'ch-b'" in other["error"]["message"], "another commune's is unknown"
    status, wide = server.http("GET", f"/api/v1/calendar?channel=ch-a&from={now}&to={now + 30 * 86400}")
    assert status == 400 and wide["error"]["code"] == "bad_query"


def test_a_media_items_audio_is_not_served_outside_its_zone(server: Server) -> None:
    """(Its bytes are checked in the browser, tests/browser/test_console_a.py: twisted sends a file with a
    cooperator on the global reactor, which this memory reactor does not run.)"""
    from tests.integration.test_api_memory import upload

    media = upload(server, "commune-a", "nhac")
    server.app.storage.add_user("op-b", "operator", ["commune-b"])
    server.tokens["op-b"] = server.app.storage.new_token("op-b")
    status, body = server.http("GET", f"/api/v1/media/{media}/audio", who="op-b")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = server.http("GET", "/api/v1/media/nothing-here/audio", who="op-a")
    assert status == 404


def test_a_programme_is_changed_in_place_and_a_clashing_change_leaves_it_as_it_was(server: Server) -> None:
    from tests.integration.test_api_memory import schedule, soon, upload

    media = upload(server, "commune-a", "tin")
    first = schedule(server, "Sáng", "commune-a", [media], soon(server, 1, 6), who="op-a")
    second = schedule(server, "Trưa", "commune-a", [media], soon(server, 1, 11), who="op-a")
    body = {"title": "Sáng sớm", "zones": ["commune-a"], "media": [media], "start": soon(server, 1, 5)}
    status, moved = server.http("PUT", f"/api/v1/programmes/{first}", body, who="op-a")
    assert status == 200 and moved["title"] == "Sáng sớm" and moved["start_local"].endswith("T05:00:00")
    assert moved["id"] == first and server.app.schedule.get(first).title == "Sáng sớm"
    clash = {**body, "start": soon(server, 1, 11)}
    status, refused = server.http("PUT", f"/api/v1/programmes/{first}", clash, who="op-a")
    assert status == 409 and refused["error"]["code"] == "clash" and second in refused["error"]["message"]
    assert server.app.schedule.get(first).title == "Sáng sớm", "the programme stays as it was"
    assert server.http("GET", f"/api/v1/programmes/{first}")[1]["start_local"].endswith("T05:00:00")
    status, _ = server.http("PUT", "/api/v1/programmes/p-nothing", body, who="op-a")
    assert status == 404


@pytest.mark.parametrize("case", ["restored", "not_scheduled", "slot_taken"])
def test_a_programme_change_the_store_refuses_leaves_the_schedule_as_the_row_says(
        server: Server, case: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The row is written after the schedule took the new version: when the write fails the caller
    hears why (here the media went meanwhile, 409), and the schedule goes back to the row's version:
    the old one, none if the row had none in the schedule, and none (logged) if a programme took the old
    one's slot while the write was on its way."""
    from broadcaster.control.schedule import Programme as Scheduled
    from broadcaster.storage.db import Conflict
    from tests.integration.test_api_memory import schedule, soon, upload

    media = upload(server, "commune-a", "tin")
    pid = schedule(server, "Sáng", "commune-a", [media], soon(server, 1, 6), who="op-a")
    before = server.app.schedule.get(pid)
    if case == "not_scheduled":  # a row the schedule could not take when the server started
        server.app.schedule.remove(pid)

    def replace(actor: Any, item: Any) -> Any:
        if case == "slot_taken":  # another request, served while this write was on its way
            server.app.schedule.add(Scheduled(id="p-other", title="Khác", channels=("ch-a",),
                                              start=before.start, duration_s=before.duration_s))
        raise Conflict(f"media item {media!r} no longer exists")

    monkeypatch.setattr(server.app.storage.programmes, "replace", replace)
    body = {"title": "Sáng sớm", "zones": ["commune-a"], "media": [media], "start": soon(server, 1, 5)}
    status, reply = server.http("PUT", f"/api/v1/programmes/{pid}", body, who="op-a")
    assert status == 409 and "no longer exists" in reply["error"]["message"], reply
    expected = {"restored": before, "not_scheduled": None, "slot_taken": None}[case]
    assert server.app.schedule.get(pid) is expected
    assert ("no longer fits" in caplog.text) == (case == "slot_taken")
    assert server.http("GET", f"/api/v1/programmes/{pid}")[1]["title"] == "Sáng", "the row as it was"


def _local(unix_s: float) -> str:
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(unix_s, ZoneInfo("Asia/Ho_Chi_Minh")).replace(tzinfo=None).isoformat()


@pytest.mark.parametrize("moved_s", [0.0, 10.0, -10.0])
def test_a_programme_edited_within_its_preload_plays_only_as_edited(server: Server, moved_s: float) -> None:
    """The old version was already sent to the core (PRELOAD_S ahead): the edit takes it back, and only
    the new version starts, at its own time."""
    from broadcaster.control.programmes import PRELOAD_S
    from broadcaster.core import commands as c
    from tests.integration.test_api_memory import upload

    sent: list[c.Command] = []
    core_send = server.app.core.send
    server.app.core.send = lambda command: (sent.append(command), core_send(command))[1]  # type: ignore[method-assign]
    old_media, new_media = upload(server, "commune-a", "cu"), upload(server, "commune-a", "moi")
    start = int(server.wall()) + 30.0
    body = {"title": "Cũ", "zones": ["commune-a"], "media": [old_media], "start": _local(start)}
    status, programme = server.http("POST", "/api/v1/programmes", body, who="op-a")
    assert status == 201, programme
    server.advance(1.0)
    (old,) = [m for m in sent if isinstance(m, c.AddInput) and m.priority == 20]
    assert start - server.wall() < PRELOAD_S, "the old version is on its way to the core"
    status, edited = server.http("PUT", f"/api/v1/programmes/{programme['id']}",
                                 {**body, "title": "Mới", "media": [new_media], "start": _local(start + moved_s)},
                                 who="op-a")
    assert status == 200, edited
    server.advance(45.0)
    assert [m.input_id for m in sent if isinstance(m, c.RemoveInput)] == [old.input_id]
    added = [m for m in sent if isinstance(m, c.AddInput) and m.priority == 20]
    assert [m.source.name for m in added] == ["Cũ", "Mới"]
    assert added[1].start_at is not None and added[1].start_at + 1.8e9 == pytest.approx(start + moved_s, abs=1e-6)
    log = [e for e in server.http("GET", "/api/v1/broadcasts")[1]["items"] if e["kind"] == "scheduled"]
    assert [(e["item"], e["outcome"]) for e in log] == [("Mới", "completed")], log
    assert start + moved_s - 0.05 <= log[0]["started_at"] <= start + moved_s + 0.05
    assert not server.app.programmes.plays and not server.app.programmes.loading


def test_a_programme_deleted_within_its_preload_is_taken_back_once_and_not_played(server: Server) -> None:
    from broadcaster.core import commands as c
    from tests.integration.test_api_memory import upload

    sent: list[c.Command] = []
    core_send = server.app.core.send
    server.app.core.send = lambda command: (sent.append(command), core_send(command))[1]  # type: ignore[method-assign]
    body = {"title": "Xoá", "zones": ["commune-a"], "media": [upload(server, "commune-a", "x")],
            "start": _local(int(server.wall()) + 30.0)}
    status, programme = server.http("POST", "/api/v1/programmes", body, who="op-a")
    assert status == 201, programme
    server.advance(1.0)
    (added,) = [m for m in sent if isinstance(m, c.AddInput) and m.priority == 20]
    assert server.http("DELETE", f"/api/v1/programmes/{programme['id']}", who="op-a")[0] == 204
    server.advance(40.0)
    assert [m.input_id for m in sent if isinstance(m, c.RemoveInput)] == [added.input_id]
    assert [e for e in server.http("GET", "/api/v1/broadcasts")[1]["items"] if e["kind"] == "scheduled"] == []
    assert not server.app.programmes.plays


def _raw(server: Server, request: str) -> bytes:
    protocol = server.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", next(PORTS)))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
    protocol.makeConnection(transport)
    protocol.dataReceived(request.encode())
    for _ in range(10):
        server.reactor.advance(0)
    return bytes(transport.value())


def _cookie(server: Server, name: str, must_change: bool = False) -> str:
    server.app.storage.users.set_password_sync(name, "mat-khau-thu-nghiem", must_change=must_change)
    body = json.dumps({"name": name, "password": "mat-khau-thu-nghiem"})
    reply = _raw(server, f"POST /api/v1/session HTTP/1.0\r\nHost: memory\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n{body}")
    line = next(h for h in reply.split(b"\r\n") if h.lower().startswith(b"set-cookie:"))
    return line.split(b":", 1)[1].split(b";", 1)[0].strip().decode()


def test_a_private_channels_stream_is_open_to_a_console_session_that_may_see_it(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    server = Server(tmp_path, patch=lambda doc: doc["channels"][0].update(public=False))
    server.app.storage.add_user("op-b", "operator", ["commune-b"])
    get = "GET /channels/ch-a.ogg HTTP/1.0\r\nHost: memory\r\n{}\r\n"
    assert b" 403 " in _raw(server, get.format("")).split(b"\r\n")[0], "no session: closed as before"
    assert b" 403 " in _raw(server, get.format("Cookie: bc_session=guessed\r\n")).split(b"\r\n")[0]
    assert b" 403 " in _raw(server, get.format(f"Cookie: {_cookie(server, 'op-b')}\r\n")).split(b"\r\n")[0], \
        "another commune's operator may not listen"
    assert b" 403 " in _raw(server, get.format(f"Authorization: Bearer {server.tokens['op-a']}\r\n")).split(
        b"\r\n")[0], "a bearer token is not taken here: only the console's session"
    opened = _raw(server, get.format(f"Cookie: {_cookie(server, 'op-a')}\r\n"))
    head = opened.partition(b"\r\n\r\n")[0]
    assert b" 200 " in head.split(b"\r\n")[0] and b"audio/ogg" in head
    assert len(server.app.channels["ch-a"].listeners) == 1
    forced = _cookie(server, "op-a", must_change=True)  # a reset password: nothing until it is changed
    assert b" 403 " in _raw(server, get.format(f"Cookie: {forced}\r\n")).split(b"\r\n")[0]


def test_guessed_session_cookies_at_a_private_stream_count_against_the_apis_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each unknown cookie is a failure for its address, as at the API (the same guard): once the address
    has failed too often, its requests are refused with 429 before any lookup, a real session too, until
    the window has passed."""
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    server = Server(tmp_path, patch=lambda doc: doc["channels"][0].update(public=False))
    session = _cookie(server, "op-a")
    lookups: list[str] = []
    by_token = server.app.storage.users.by_token
    monkeypatch.setattr(server.app.storage.users, "by_token", lambda secret, now: (lookups.append(secret),
                                                                                   by_token(secret, now))[1])
    get = "GET /channels/ch-a.ogg HTTP/1.0\r\nHost: memory\r\nCookie: {}\r\n\r\n"
    guard = server.site.site.resource.api.logins
    limited = metrics.auth_limited_total.labels("stream")._value.get()
    for n in range(guard.max_failures):
        assert b" 403 " in _raw(server, get.format(f"bc_session=guess-{n}")).split(b"\r\n")[0]
    assert len(lookups) == guard.max_failures
    for cookie in ("bc_session=one-more", session):
        head, _, body = _raw(server, get.format(cookie)).partition(b"\r\n\r\n")
        assert b" 429 " in head.split(b"\r\n")[0] and b"Retry-After: " in head and b"too_many_failures" in body
    assert len(lookups) == guard.max_failures, "refused before any lookup: a flood costs nothing"
    assert metrics.auth_limited_total.labels("stream")._value.get() == limited + 2
    assert server.http("GET", "/api/v1/channels", who="op-a")[0] == 429, "one limit for the address"
    server.advance(guard.window_s + 1)
    assert b" 200 " in _raw(server, get.format(session)).split(b"\r\n")[0]


def test_the_calendar_shows_an_approved_bulletins_slots_and_not_an_unapproved_one(server: Server) -> None:
    from tests.integration.test_bulletins_memory import approve, people, upload, write

    people(server)
    media = upload(server)
    approved = approve(server, write(server, media, at_s=3600))
    waiting = write(server, media, at_s=7200, title="Chưa duyệt")
    now = server.wall()
    status, week = server.http("GET", f"/api/v1/calendar?channel=ch-a&from={now}&to={now + 86400}", who="op-a")
    assert status == 200
    bulletins = [i for i in week["items"] if i["kind"] == "bulletin"]
    assert [(b["id"], b["end"]) for b in bulletins] == [(approved["id"], None)]
    assert bulletins[0]["start"] == pytest.approx(now + 3600, abs=1.0) and bulletins[0]["priority"] == 20
    assert waiting["id"] not in {i["id"] for i in week["items"]}


def test_a_stream_ends_after_its_age_and_is_authenticated_again_when_it_reopens(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overview, "MAX_AGE_S", 5.0)
    stream = Stream(server, "op-a")
    server.advance(3.0)
    assert not stream.transport.disconnecting
    server.advance(3.0)
    assert stream.transport.disconnecting and not server.app.overview.streams, "ended: the browser reconnects"
    revoked = server.app.storage.db.run_sync(
        lambda conn: conn.execute("DELETE FROM tokens WHERE user_id = (SELECT id FROM users WHERE name = 'op-a')"))
    assert revoked.rowcount >= 1
    assert Stream(server, "op-a").status == 401, "a revoked token gets no new stream"


@pytest.mark.parametrize("edit", ["moved", "deleted"])
def test_a_relay_programme_edited_within_its_lead_starts_only_as_edited(
        server: Server, edit: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relay's worker starts RELAY_LEAD_S ahead: an edit (or a deletion) after that stops it, and the
    edited version's relay starts at its own time; the old one never goes on air."""
    from broadcaster.control.programmes import RELAY_LEAD_S

    started: list[dict[str, Any]] = []

    class Run:  # the relay desk's run, as the programme runner sees it (the worker is another test's)
        def __init__(self, how: dict[str, Any]) -> None:
            self.how, self.ended, self.on_air, self.stopped = how, False, False, None

        def stop(self, outcome: str = "stopped") -> None:
            self.stopped, self.ended = outcome, True

    def start(item: Any, channels: Any, **how: Any) -> Run:
        run = Run(how)
        started.append({"title": how["title"], "run": run})
        return run

    monkeypatch.setattr(server.app.relays, "start", start)
    status, relay = server.http("POST", "/api/v1/relays", {"name": "VOV1", "url": "http://radio.vov.example/vov1",
                                                           "zone": "commune-a"})
    assert status == 201, relay
    start_at = int(server.wall()) + 8.0
    body = {"title": "Thời sự", "zones": ["commune-a"], "relay": relay["id"], "duration_s": 60,
            "start": _local(start_at)}
    status, programme = server.http("POST", "/api/v1/programmes", body, who="op-a")
    assert status == 201, programme
    server.advance(4.0)
    assert start_at - server.wall() < RELAY_LEAD_S and [s["title"] for s in started] == ["Thời sự"]
    if edit == "moved":
        status, _ = server.http("PUT", f"/api/v1/programmes/{programme['id']}",
                                {**body, "title": "Thời sự (dời)", "start": _local(start_at + 20)}, who="op-a")
        assert status == 200
    else:
        assert server.http("DELETE", f"/api/v1/programmes/{programme['id']}", who="op-a")[0] == 204
    server.advance(30.0)
    assert started[0]["run"].stopped == "removed", "the old version's worker stopped before its start"
    titles = [s["title"] for s in started]
    assert titles == (["Thời sự", "Thời sự (dời)"] if edit == "moved" else ["Thời sự"])
    if edit == "moved":
        assert started[1]["run"].stopped is None
