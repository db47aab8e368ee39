"""Hostile and careless API callers against the whole server in memory (issue 9, item 8):
media in use, what a caller outside a zone may learn, bodies that must not give 500s,
and CAP messages posted twice or too large."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from broadcaster import metrics
from broadcaster.control.workers import ProcessWorkers
from broadcaster.storage import Actor, Conflict
from broadcaster.storage.programmes import NewProgramme
from broadcaster.web.site import BODY_BYTES
from tests.integration.memory import Server

ICT = timezone(timedelta(hours=7))
CAP = Path(__file__).parents[1] / "data" / "cap"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    server = Server(tmp_path, patch=lambda doc: doc.setdefault("alerts", {}).update(
        {"cap_areas": {"VN-XA=29590": "commune-a"}}))
    for name, role, zones in (("op-b", "operator", ["commune-b"]), ("viewer-a", "viewer", ["commune-a"])):
        server.app.storage.add_user(name, role, zones)
        server.tokens[name] = server.app.storage.new_token(name)
    return server


def upload(server: Server, zone: str, title: str, who: str = "admin") -> str:
    buffer = io.BytesIO()
    t = np.arange(48000 * 2) / 48000
    soundfile.write(buffer, (0.3 * np.sin(2 * np.pi * 880 * t)).astype(np.float32), 48000, format="WAV")
    status, media = server.http("POST", f"/api/v1/media?zone={zone}&title={title}", raw=buffer.getvalue(), who=who)
    assert status == 201, media
    return str(media["id"])


def soon(server: Server, days: int, hour: int = 6) -> str:
    """A local start time ``days`` after the memory server's today."""
    day = datetime.fromtimestamp(server.wall(), ICT).date() + timedelta(days=days)
    return f"{day.isoformat()}T{hour:02d}:00"


def schedule(server: Server, title: str, zone: str, media: list[str], start: str, who: str = "admin") -> str:
    status, programme = server.http("POST", "/api/v1/programmes", {
        "title": title, "zones": [zone], "media": media, "start": start}, who=who)
    assert status == 201, programme
    return str(programme["id"])


def rejected(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("broadcaster_cap_rejected_total", {"reason": reason}) or 0.0


# --- media in use -----------------------------------------------------------------------------------------


def test_media_in_use_is_not_deleted_and_the_refusal_names_its_programmes(server: Server) -> None:
    media = upload(server, "commune-a", "bulletin")
    own = schedule(server, "Bản tin sáng", "commune-a", [media], soon(server, 2), who="op-a")
    other = schedule(server, "Bản tin xã B", "commune-b", [media], soon(server, 2, 7))  # the admin may

    status, reply = server.http("DELETE", f"/api/v1/media/{media}", who="op-a")
    assert status == 409 and reply["error"]["code"] == "in_use", reply
    message = reply["error"]["message"]
    assert own in message and "Bản tin sáng" in message
    assert other not in message and "Bản tin xã B" not in message, "another commune's programme stays unnamed"
    assert "1 programme outside your zones" in message
    status, reply = server.http("DELETE", f"/api/v1/media/{media}")
    assert status == 409 and own in reply["error"]["message"] and other in reply["error"]["message"]
    assert "Bản tin xã B" in reply["error"]["message"]
    assert server.http("GET", f"/api/v1/media/{media}")[0] == 200, "nothing was deleted"
    assert Path(server.app.storage.db.query_sync("SELECT path FROM media")[0]["path"]).exists()

    for programme in (own, other):
        assert server.http("DELETE", f"/api/v1/programmes/{programme}")[0] == 204
    assert server.http("DELETE", f"/api/v1/media/{media}", who="op-a")[0] == 204
    assert server.http("GET", f"/api/v1/media/{media}")[0] == 404


def test_a_programme_is_not_stored_on_media_deleted_meanwhile(server: Server) -> None:
    """The check and the delete are one transaction, and a programme's insert checks its media in
    its own: whichever comes second of a delete and a programme using the item is refused."""
    results: list[Any] = []
    item = NewProgramme(id="p-late", title="late", zones=["commune-a"], media=["gone"], start_local="2027-01-04T06:00",
                        duration_s=10.0, recurrence="once", weekdays=[], until=None, priority=20,
                        on_restart="resume", on_preempt="pause")
    server.app.storage.programmes.add(Actor("admin"), item).addBoth(results.append)
    server.advance(0)
    assert results and hasattr(results[0], "check") and results[0].check(Conflict), results
    assert server.app.storage.db.query_sync("SELECT id FROM programmes") == []


# --- what a caller outside a zone may learn ---------------------------------------------------------------


def same_as_missing(server: Server, method: str, path: str, real: str, who: str, body: Any = None) -> None:
    status, reply = server.http(method, path.replace("{id}", real), body, who=who)
    missing_status, missing = server.http(method, path.replace("{id}", "nope"), body, who=who)
    assert status == missing_status == 404, (method, path, reply)
    assert reply["error"]["code"] == "not_found"
    assert reply["error"]["message"] == missing["error"]["message"].replace("nope", real)


def test_a_resource_the_caller_may_not_see_is_answered_as_missing(server: Server) -> None:
    for method, path, body in (("GET", "/api/v1/loudspeakers/{id}", None),
                               ("PATCH", "/api/v1/loudspeakers/{id}", {"volume": 10}),
                               ("POST", "/api/v1/loudspeakers/{id}/rotate-key", None),
                               ("DELETE", "/api/v1/loudspeakers/{id}", None)):
        same_as_missing(server, method, path, "spk-b1", "op-a", body)
        same_as_missing(server, method, path, "spk-b1", "viewer-a", body)
    status, row = server.http("GET", "/api/v1/loudspeakers/spk-b1")
    assert status == 200 and row["volume"] != 10, "nothing changed"

    media_b = upload(server, "commune-b", "b-only")
    for method in ("GET", "DELETE"):
        same_as_missing(server, method, "/api/v1/media/{id}", media_b, "op-a")
    programme_b = schedule(server, "B", "commune-b", [media_b], soon(server, 2))
    for method in ("GET", "DELETE"):
        same_as_missing(server, method, "/api/v1/programmes/{id}", programme_b, "op-a")

    # Another commune's media item is "no media item" when referred to, as one that does not exist.
    for real in (media_b, "nope"):
        status, reply = server.http("POST", "/api/v1/programmes", {
            "title": "x", "zones": ["commune-a"], "media": [real], "start": soon(server, 3)}, who="op-a")
        assert (status, reply["error"]) == (400, {"code": "bad_reference", "message": f"media: no media item {real!r}"})


def test_writes_into_zones_the_caller_may_see_stay_forbidden(server: Server) -> None:
    for method, path, body in (("PATCH", "/api/v1/loudspeakers/spk-a1", {"volume": 10}),
                               ("POST", "/api/v1/loudspeakers/spk-a1/rotate-key", None),
                               ("DELETE", "/api/v1/loudspeakers/spk-a1", None)):
        status, reply = server.http(method, path, body, who="viewer-a")
        assert status == 403 and reply["error"]["code"] == "forbidden", (method, path, reply)
    status, reply = server.http("PATCH", "/api/v1/loudspeakers/spk-a1", {"channel": "ch-b"}, who="op-a")
    assert status == 403
    media_a = upload(server, "commune-a", "a")
    assert server.http("DELETE", f"/api/v1/media/{media_a}", who="viewer-a")[0] == 403


# --- bodies that must not give 500s -----------------------------------------------------------------------


@pytest.mark.parametrize("raw, words", [
    (b"[" * 30_000 + b"]" * 30_000, "nested"),
    (b'{"name": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "nested"),
    (b'{"name": ' + b'{"a": ' * 9_000 + b"1" + b"}" * 9_000 + b"}", "nested"),
    (b'{"name": "\\ud800"}', "surrogate"),
    (b'{"name": "\xed\xa0\x80"}', "not UTF-8"),
    (b'{"\\udfff": 1}', "surrogate"),
])
def test_deep_nesting_and_broken_text_are_a_clear_400(server: Server, raw: bytes, words: str) -> None:
    status, reply = server.http("PATCH", "/api/v1/loudspeakers/spk-a1", raw=raw)
    assert status == 400 and reply["error"]["code"] == "bad_json", reply
    assert words in reply["error"]["message"]


def test_nesting_inside_strings_is_just_text(server: Server) -> None:
    status, reply = server.http("PATCH", "/api/v1/loudspeakers/spk-a1", {"name": "[" * 5000 + "{" * 5000})
    assert status == 200 and reply["name"].startswith("[[[")


def test_nulls_are_absent_or_a_400_never_a_500(server: Server) -> None:
    for method, path, body in (("PATCH", "/api/v1/loudspeakers/spk-a1", {"volume": None, "name": None}),
                               ("POST", "/api/v1/alerts", {"title": None, "zones": ["commune-a"]}),
                               ("POST", "/api/v1/programmes", {"title": "t", "zones": None, "media": [None]}),
                               ("POST", "/api/v1/zones", {"id": "z", "name": None, "kind": "hamlet"})):
        status, reply = server.http(method, path, raw=json.dumps(body).encode())
        assert status in (200, 400), (method, path, reply)
    assert server.http("PATCH", "/api/v1/loudspeakers/spk-a1", raw=b"null")[0] == 400


def test_a_json_body_over_the_door_limit_is_413_not_an_empty_object(server: Server) -> None:
    raw = b'{"volume": 5, "name": "' + b"x" * BODY_BYTES + b'"}'
    status, reply = server.http("PATCH", "/api/v1/loudspeakers/spk-a1", raw=raw)
    assert status == 413 and reply["error"]["code"] == "too_large", reply


# --- CAP --------------------------------------------------------------------------------------------------


def storm(server: Server, sent_offset_s: float = 0.0) -> bytes:
    """The storm warning with its times around the memory server's wall clock."""
    now = datetime.fromtimestamp(server.wall(), ICT).replace(microsecond=0)
    data = (CAP / "storm_warning.xml").read_bytes()
    for old, offset in ((b"2026-11-26T14:30:00+07:00", sent_offset_s), (b"2026-11-27T06:00:00+07:00", 3600.0),
                        (b"2026-11-28T18:00:00+07:00", 86400.0)):
        assert old in data
        data = data.replace(old, (now + timedelta(seconds=offset)).isoformat().encode(), 1)
    return data


def test_the_same_cap_message_twice_plays_once(server: Server) -> None:
    message = storm(server)
    status, first = server.http("POST", "/api/v1/alerts/cap", raw=message)
    assert status == 201, first
    before = rejected("duplicate")
    status, reply = server.http("POST", "/api/v1/alerts/cap", raw=message)
    assert status == 409 and reply["error"]["code"] == "duplicate", reply
    assert first["id"] in reply["error"]["message"]
    assert list(server.app.alerts.active) == [first["id"]], "one alert on air"
    assert rejected("duplicate") == before + 1

    # Ended, it is still the same message: it does not play again.
    assert server.http("POST", f"/api/v1/alerts/{first['id']}/cancel")[0] == 200
    status, reply = server.http("POST", "/api/v1/alerts/cap", raw=message)
    assert status == 409 and reply["error"]["code"] == "duplicate"
    assert server.app.alerts.active == {}

    # The same identifier sent at another time is another message (a sender re-issuing it).
    status, again = server.http("POST", "/api/v1/alerts/cap", raw=storm(server, sent_offset_s=-60))
    assert status == 201 and again["id"] != first["id"]


def test_a_cap_document_over_the_limit_is_413_and_counted(server: Server) -> None:
    before = rejected("too_large")
    status, reply = server.http("POST", "/api/v1/alerts/cap", raw=storm(server) + b" " * (BODY_BYTES + 10))
    assert status == 413 and reply["error"]["code"] == "too_large", reply
    assert rejected("too_large") == before + 1
    assert server.app.alerts.active == {}


def test_every_refused_cap_message_is_counted_with_its_reason(server: Server) -> None:
    cancel = (CAP / "storm_cancel.xml").read_bytes()
    before = rejected("not_found")
    status, reply = server.http("POST", "/api/v1/alerts/cap", raw=cancel)
    assert status == 404, reply
    assert rejected("not_found") == before + 1
    before = rejected("forbidden")
    status, reply = server.http("POST", "/api/v1/alerts/cap", raw=storm(server), who="op-a")
    assert status == 403, reply
    assert rejected("forbidden") == before + 1


# --- uploads when the workers are busy --------------------------------------------------------------------


def test_an_upload_beyond_the_workers_queue_is_503_with_retry_after(server: Server) -> None:
    server.app.workers = ProcessWorkers(server.reactor, workers=0, waiting=0)  # no room at all: refused at once
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(48000, np.float32), 48000, format="WAV")
    data = buffer.getvalue()
    request = (f"POST /api/v1/media?zone=commune-a&title=x HTTP/1.0\r\nHost: memory\r\nContent-Length: {len(data)}\r\n"
               f"Authorization: Bearer {server.tokens['admin']}\r\n\r\n").encode() + data
    protocol = server.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
    protocol.makeConnection(transport)
    protocol.dataReceived(request)
    server.advance(0.1)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"503" and b"Retry-After: 10" in head, head
    assert json.loads(body)["error"]["code"] == "busy"
    assert server.http("GET", "/api/v1/media")[1]["total"] == 0
