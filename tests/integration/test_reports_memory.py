"""The yearly report through the whole server in memory: an alert's result written when it ends
(loudspeakers commanded and acknowledged, per zone) and counted per commune, and
GET /api/v1/reports/yearly in JSON, CSV and XLSX with its scope and its errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from openpyxl import load_workbook
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from broadcaster.control.report_files import XLSX_TYPE
from broadcaster.storage.reports import report_year
from tests.integration.memory import Server, Speaker

TZ = "Asia/Ho_Chi_Minh"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    return Server(tmp_path)


def fetch(server: Server, path: str, who: str | None = "admin") -> tuple[int, dict[str, str], bytes]:
    """GET through the real site: status, headers (lower-case names), body."""
    headers = [f"GET {path} HTTP/1.0", "Host: memory"]
    if who is not None:
        headers.append(f"Authorization: Bearer {server.tokens[who]}")
    protocol = server.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
    protocol.makeConnection(transport)
    protocol.dataReceived(("\r\n".join(headers) + "\r\n\r\n").encode())
    for _ in range(50):
        if transport.disconnecting:
            break
        server.reactor.advance(0)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    found = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ", 2)[1]), found, body


def live(server: Server, seconds: float, acking: list[Speaker], silent: list[Speaker]) -> None:
    """Time passes; every loudspeaker keeps its subscription, only ``acking`` ones acknowledge commands."""
    for step in range(round(seconds / 0.5)):
        server.advance(0.5)
        for speaker in acking:
            speaker.ack_all()
        if step % 2:
            for speaker in (*acking, *silent):
                speaker.keepalive()


def test_an_alert_leaves_its_result_and_each_commune_gets_its_own_share(server: Server) -> None:
    a1, a2, b1 = (server.speaker("spk-a1", "ch-a", 40001), server.speaker("spk-a2", "ch-a", 40002),
                  server.speaker("spk-b1", "ch-b", 40003))
    for speaker in (a1, a2, b1):
        speaker.subscribe()
    live(server, 1.5, [a1, a2, b1], [])
    status, alert = server.http("POST", "/api/v1/alerts", {
        "title": "Triều cường", "zones": ["province"], "priority": "khan-cap", "repeat": 1, "gap_s": 0.5,
        "text": "Triều cường dâng cao."})
    assert status == 201, alert
    live(server, 10.0, [a1, b1], [a2])  # spk-a2 hears it but never acknowledges
    assert server.http("GET", f"/api/v1/alerts/{alert['id']}")[1]["status"] == "completed"
    server.advance(1.0)
    rows = server.app.storage.db.query_sync("SELECT * FROM alert_results")
    assert len(rows) == 1
    row = rows[0]
    assert (row["id"], row["title"], json.loads(row["zones"]), row["priority"], row["bulletin"]) == (
        alert["id"], "Triều cường", ["province"], 50, None)
    assert (row["commanded"], row["acknowledged"]) == (3, 2)
    assert json.loads(row["by_zone"]) == {"hamlet-a": [2, 1], "hamlet-b": [1, 1]}
    assert row["started_at"] <= row["ended_at"] <= server.wall()

    status, report = server.http("GET", "/api/v1/reports/yearly")
    assert status == 200, report
    a, b = report["communes"]
    assert (a["zone"], a["alerts"], a["alert_loudspeakers_commanded"], a["alert_loudspeakers_acknowledged"],
            a["alert_acknowledged_share"]) == ("commune-a", 1, 2, 1, 0.5)
    assert (b["zone"], b["alerts"], b["alert_acknowledged_share"]) == ("commune-b", 1, 1.0)
    total = report["total"]
    assert (total["alerts"], total["alert_loudspeakers_commanded"], total["alert_acknowledged_share"]) == (
        1, 3, round(2 / 3, 4))
    assert total["hours_by_class"]["alert"] > 0  # its broadcast-log rows, one per channel
    assert [x["id"] for x in report["alert_list"]] == [alert["id"]]


def test_the_yearly_route_answers_json_csv_and_xlsx_within_the_callers_zones(server: Server) -> None:
    status, report = server.http("GET", "/api/v1/reports/yearly")
    assert status == 200, report
    # The memory server's clock is in January 2027: the report year that holds it is 2027.
    assert (report["year"], report["first_day"], report["last_day"]) == (2027, "2026-12-15", "2027-12-14")
    assert (report["from"], report["to"]) == report_year(2027, TZ)
    assert [(c["zone"], c["stations"], c["loudspeaker_clusters"]) for c in report["communes"]] == [
        ("commune-a", 1, 2), ("commune-b", 1, 1)]
    assert (report["total"]["zone"], report["total"]["stations"], report["total"]["loudspeaker_clusters"]) == (
        "province", 2, 3)
    assert server.http("GET", "/api/v1/reports/yearly?year=2025")[1]["first_day"] == "2024-12-15"

    for query, code in (("year=1999", "bad_query"), ("year=2101", "bad_query"), ("year=next", "bad_query"),
                        ("format=pdf", "bad_query"), ("zone=nowhere", "bad_reference")):
        status, error = server.http("GET", f"/api/v1/reports/yearly?{query}")
        assert (status, error["error"]["code"]) == (400, code), query
    assert server.http("GET", "/api/v1/reports/yearly", who=None)[0] == 401
    assert server.http("GET", "/api/v1/reports/yearly?zone=commune-b", who="op-a")[0] == 403
    assert server.http("GET", "/api/v1/reports/yearly", who="op-a")[0] == 403  # the province is not op-a's
    status, own = server.http("GET", "/api/v1/reports/yearly?zone=commune-a", who="op-a")
    assert status == 200 and [c["zone"] for c in own["communes"]] == ["commune-a"]

    status, headers, body = fetch(server, "/api/v1/reports/yearly?year=2027&format=csv")
    assert status == 200 and headers["content-type"] == "text/csv; charset=utf-8"
    assert headers["content-disposition"] == 'attachment; filename="report-2027-province.csv"'
    table = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert table[0][2] == "Số đài truyền thanh / Stations"
    assert [(r[0], r[2], r[3]) for r in table[1:]] == [("commune-a", "1", "2"), ("commune-b", "1", "1"),
                                                       ("province", "2", "3")]

    status, headers, body = fetch(server, "/api/v1/reports/yearly?zone=commune-a&format=xlsx", who="op-a")
    assert status == 200 and headers["content-type"] == XLSX_TYPE
    assert headers["content-disposition"] == 'attachment; filename="report-2027-commune-a.xlsx"'
    book = load_workbook(io.BytesIO(body))
    summary = book["Tổng hợp - Summary"]
    assert summary["A2"].value == "Kỳ báo cáo / Period: 15/12/2026 – 14/12/2027 (Asia/Ho_Chi_Minh)"
    assert [c.value for c in summary[6]][:4] == ["commune-a", "commune-a", 1, 2]


def test_the_broadcast_report_still_answers(server: Server) -> None:
    status, report = server.http("GET", "/api/v1/reports/broadcast?zone=commune-a")
    assert status == 200 and [c["zone"] for c in report["communes"]] == ["commune-a"]
