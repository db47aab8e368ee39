"""The province link through the real HTTP site, in memory: both sides of it.

A commune server takes pushed feeds (signed, replay-safe, idempotent by the
upstream's id and version, unknown area codes counted and skipped); a
province server serves each downstream its own feed and stores reports once,
however often they come. The two real processes talking to each other are
tests/e2e/test_link.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from broadcaster import metrics
from broadcaster.link import protocol
from broadcaster.link.signing import REPLY_HEADER, check_reply, sign
from broadcaster.storage import Actor
from broadcaster.storage.bulletins import BulletinContent
from tests.integration import memory
from tests.integration.memory import Server

SECRET = "the-secret-of-commune-a-0001"
CODE = "86.855.29620"


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def link_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Link requests run at once too (a report to the unreachable upstream fails at once)."""
    monkeypatch.setattr(memory, "POOLS", (*memory.POOLS, "link"))


def signed(server: Server, method: str, path: str, body: bytes = b"", key: str = "commune-a",
           secret: str = SECRET, header: str | None = None,
           nonce: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    """A request with the link's signature through the server's real site (no bearer token)."""
    authorization = header or sign(secret.encode(), method, path, key, body, server.wall(), nonce)
    lines = [f"{method} {path} HTTP/1.0", "Host: memory", f"Content-Length: {len(body)}",
             f"Authorization: {authorization}"]
    proto = server.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50001))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50001))
    proto.makeConnection(transport)
    proto.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    for _ in range(20):
        if transport.disconnecting or Server._complete(transport.value()):
            break
        server.reactor.advance(0)
    head, _, payload = transport.value().partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {k.decode().lower(): v.decode() for k, _, v in (
        line.partition(b": ") for line in head.split(b"\r\n")[1:])}
    return status, payload, headers


# --- the commune ------------------------------------------------------------------------------

def commune(tmp_path: Path) -> Server:
    def patch(doc: dict[str, Any]) -> None:
        doc["link"] = {"upstream": {"url": "http://127.0.0.1:9/api/v1/link", "id": "commune-a", "secret": SECRET,
                                    "origin": "tinh", "poll_s": 0, "report_s": 3600,
                                    "areas": {CODE: "commune-a"}, "approve": {"uu-tien": "submit"}}}
    return Server(tmp_path, patch)


def wire(bulletin_id: str, version: int = 1, areas: tuple[str, ...] = (CODE,), state: str = "approved",
         **changes: Any) -> dict[str, Any]:
    row = {"id": bulletin_id, "version": version, "state": state, "title": f"Tin {bulletin_id}", "summary": "",
           "body": "Nội dung bản tin.", "category": "", "class": "uu-tien", "language": "vi", "valid_from": None,
           "valid_until": None, "zones": [], "media": None, "plan": {"times": ["06:00"]}, **changes}
    return protocol.bulletin_to_wire(row, areas)


def push(server: Server, *bulletins: dict[str, Any], nonce: str | None = None) -> tuple[int, Any, dict[str, str]]:
    body = json.dumps(protocol.feed_document("tinh", "Asia/Ho_Chi_Minh", list(bulletins), server.wall())).encode()
    status, payload, headers = signed(server, "POST", "/api/v1/link/bulletins", body, nonce=nonce)
    return status, json.loads(payload), headers


def imported(server: Server) -> dict[str, dict[str, Any]]:
    return {r["origin_id"]: r for r in server.app.storage.db.query_sync(
        "SELECT * FROM bulletins WHERE origin = 'tinh'")}


def test_a_pushed_feed_is_taken_once_by_upstream_id_and_version(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    server = commune(tmp_path)
    unknown_before = sample("broadcaster_link_area_unknown_total")
    with caplog.at_level(logging.WARNING, logger="broadcaster.link.downstream"):
        status, reply, headers = push(server, wire("b-1"), wire("b-2", areas=("99.999",)),
                                      wire("b-3", areas=("99.998", CODE)), nonce="first-push-nonce-0001")
    assert status == 200, reply
    check_reply(SECRET.encode(), "commune-a", "first-push-nonce-0001", 200,
                json.dumps(reply, separators=(",", ":")).encode(), headers[REPLY_HEADER.lower()])
    assert reply["taken"] == {"new": 2, "updated": 0, "withdrawn": 0, "unchanged": 0, "skipped": 1, "failed": 0}
    rows = imported(server)
    assert sorted(rows) == ["b-1", "b-3"]  # b-2 has no area of ours; b-3 keeps the area it has
    assert all(r["state"] == "submitted" and r["source"] == "province" and json.loads(r["zones"]) == ["commune-a"]
               for r in rows.values())
    assert sample("broadcaster_link_area_unknown_total") - unknown_before == 2
    assert "'99.999' has no zone" in caplog.text and "'99.998' has no zone" in caplog.text

    # The same feed again (a poll after a push, a restart): nothing changes, and what was said is not said again.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="broadcaster.link.downstream"):
        status, reply, _ = push(server, wire("b-1"), wire("b-2", areas=("99.999",)),
                                wire("b-3", areas=("99.998", CODE)))
    assert reply["taken"]["unchanged"] == 2 and reply["taken"]["skipped"] == 1 and imported(server) == rows
    assert "99.999" not in caplog.text and sample("broadcaster_link_area_unknown_total") - unknown_before == 2
    # A new version is an edit of the same bulletin; a withdrawn one is withdrawn.
    status, reply, _ = push(server, wire("b-1", version=2, title="Tin sửa"), wire("b-3", state="withdrawn"))
    assert reply["taken"] == {"new": 0, "updated": 1, "withdrawn": 1, "unchanged": 0, "skipped": 0, "failed": 0}
    after = imported(server)
    assert len(after) == 2 and after["b-1"]["title"] == "Tin sửa" and after["b-3"]["state"] == "withdrawn"
    # An older version arriving late (a poll's reply racing the push) never takes the bulletin back to it.
    status, reply, _ = push(server, wire("b-1", version=1))
    assert reply["taken"]["unchanged"] == 1 and imported(server)["b-1"]["title"] == "Tin sửa"


def test_replayed_forged_and_unsigned_pushes_are_refused_before_any_work(tmp_path: Path) -> None:
    server = commune(tmp_path)
    body = json.dumps(protocol.feed_document("tinh", "Asia/Ho_Chi_Minh", [wire("b-9")], server.wall())).encode()
    header = sign(SECRET.encode(), "POST", "/api/v1/link/bulletins", "commune-a", body, server.wall())
    assert signed(server, "POST", "/api/v1/link/bulletins", body, header=header)[0] == 200
    before = {r: sample("broadcaster_link_signature_rejected_total", reason=r)
              for r in ("replay", "bad_signature", "stale", "unknown_key", "malformed")}
    cases = [(header, body, "replay"),
             (sign(b"not-the-secret-0000000", "POST", "/api/v1/link/bulletins", "commune-a", body, server.wall()),
              body, "bad_signature"),
             (sign(SECRET.encode(), "POST", "/api/v1/link/bulletins", "commune-a", body, server.wall() - 400),
              body, "stale"),
             (sign(SECRET.encode(), "POST", "/api/v1/link/bulletins", "commune-b", body, server.wall()),
              body, "unknown_key"),
             (sign(SECRET.encode(), "POST", "/api/v1/link/bulletins", "commune-a", body, server.wall()),
              body.replace(b"b-9", b"b-8"), "bad_signature"),
             ("Bearer " + server.tokens["admin"], body, "malformed")]
    for value, data, reason in cases:
        status, payload, _ = signed(server, "POST", "/api/v1/link/bulletins", data, header=value)
        assert status == 401 and json.loads(payload)["error"]["code"] == f"signature_{reason}", (reason, payload)
    for reason in before:
        assert sample("broadcaster_link_signature_rejected_total", reason=reason) - before[reason] == (
            2 if reason == "bad_signature" else 1)
    assert list(imported(server)) == ["b-9"]
    # Routes of a side this server does not play are not there.
    assert signed(server, "GET", "/api/v1/link/bulletins")[0] == 404


# --- the province -----------------------------------------------------------------------------

def province(tmp_path: Path) -> Server:
    def patch(doc: dict[str, Any]) -> None:
        doc["link"] = {"id": "tinh", "area_codes": {"commune-a": CODE},
                       "downstream": [{"id": "commune-a", "secret": SECRET, "zones": ["commune-a"]}]}
    return Server(tmp_path, patch)


def stored_bulletin(server: Server, bulletin_id: str, zones: list[str], state: str = "approved") -> None:
    content = BulletinContent(title=f"Tin {bulletin_id}", summary="", body="Nội dung.", category="", klass="uu-tien",
                              language="vi", valid_from=None, valid_until=None, zones=zones,
                              plan={"times": ["06:00"]})
    from broadcaster.storage.bulletins import _create  # the transaction the desk's create runs

    server.app.storage.db.run_sync(_create, Actor("op"), bulletin_id, content, state, server.wall(), "approver")


def test_the_province_serves_each_downstream_its_feed_and_stores_reports_once(tmp_path: Path) -> None:
    server = province(tmp_path)
    stored_bulletin(server, "b-tinh", ["province"])        # above the commune: sent with the commune's code
    stored_bulletin(server, "b-ap", ["hamlet-a"])          # below it: sent by its own id (no code configured)
    stored_bulletin(server, "b-khac", ["commune-b"])       # another commune's
    stored_bulletin(server, "b-nhap", ["commune-a"], state="submitted")  # not approved: never sent
    status, payload, headers = signed(server, "GET", "/api/v1/link/bulletins", nonce="feed-request-nonce-01")
    assert status == 200, payload
    check_reply(SECRET.encode(), "commune-a", "feed-request-nonce-01", 200, payload, headers[REPLY_HEADER.lower()])
    feed = protocol.parse_feed(json.loads(payload))
    assert feed.problems == [] and feed.server == "tinh"
    assert {b.upstream_id: b.areas for b in feed.bulletins} == {"b-tinh": (CODE,), "b-ap": ("hamlet-a",)}

    play = {"id": 41, "bulletin": "local-id", "slot": server.wall() - 60, "channel": "ch-x", "zone": "commune-a",
            "started_at": server.wall() - 60, "ended_at": server.wall() - 30, "outcome": "played", "online": 2,
            "acknowledged": 1}
    report = protocol.report_document(
        "commune-a", [protocol.play_to_wire(play, "b-tinh", CODE), protocol.play_to_wire({**play, "id": 42},
                                                                                          "b-unknown", CODE)],
        [protocol.loudspeaker_to_wire({"id": "spk-9", "name": "Ấp 9", "channel": "ch-x", "lat": 10.2, "lon": 106.3},
                                      CODE, True, server.wall())],
        [protocol.day_to_wire({"day": "2027-01-15", "channel": "ch-x", "hours_on_air": 2.0, "loudspeakers": 1,
                               "online_share": 0.5}, CODE)], server.wall())
    body = json.dumps(report).encode()
    for _ in range(2):  # sent twice (the acknowledgement was lost): stored once
        status, payload, _ = signed(server, "POST", "/api/v1/link/report", body)
        assert status == 200, payload
    assert json.loads(payload)["stored"] == {"plays": 1, "new_plays": 0, "loudspeakers": 1, "days": 1,
                                             "rejected": 1}  # a play of a bulletin we never had is refused
    status, results = server.http("GET", "/api/v1/bulletins/b-tinh/results")
    assert status == 200 and results["downstreams"] == ["commune-a"]
    assert [(p["play_id"], p["duration_s"], p["online"], p["acknowledged"]) for p in results["plays"]] == [
        (41, 30.0, 2, 1)]
    assert server.http("GET", "/api/v1/bulletins/b-tinh/results", who="op-a")[0] == 404  # not op-a's bulletin
    assert server.http("GET", "/api/v1/bulletins/b-tinh/results", who=None)[0] == 401
    status, downstreams = server.http("GET", "/api/v1/link/downstreams", who="op-a")
    (state,) = downstreams["items"]
    assert state["id"] == "commune-a" and state["loudspeakers"] == 1 and state["online"] == 1
    assert state["last_pull_at"] is not None and state["last_report_at"] is not None
    speakers = server.http("GET", "/api/v1/link/downstreams/commune-a/loudspeakers", who="op-a")[1]["items"]
    assert [(s["id"], s["lat"], s["status"]) for s in speakers] == [("spk-9", 10.2, "online")]
    days = server.http("GET", "/api/v1/link/downstreams/commune-a/daily?from=2027-01-01", who="op-a")[1]["items"]
    assert [(d["day"], d["hours_on_air"], d["online_share"]) for d in days] == [("2027-01-15", 2.0, 0.5)]
