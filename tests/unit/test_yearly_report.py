"""The yearly report (issue 12 item 6): its period at the boundaries, and every figure of it on a
fixed data set written straight into a real database (storage.reports.yearly_report_txn)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook

from broadcaster.config import ConfigError, parse_config
from broadcaster.control.auth import ZoneTree
from broadcaster.control.report_files import yearly_csv, yearly_xlsx
from broadcaster.storage import KeySealer, Storage
from broadcaster.storage.reports import report_year, report_year_of

TZ = "Asia/Ho_Chi_Minh"
VN = ZoneInfo(TZ)
SEALER = KeySealer(b"k" * 32)
HOUR = 3600.0


def local(*parts: int) -> float:
    """Unix seconds of a local (Asia/Ho_Chi_Minh) date and time."""
    return datetime(*parts, tzinfo=VN).timestamp()  # type: ignore[arg-type, misc]


START, END = local(2024, 12, 15), local(2025, 12, 15)  # the report year 2025
NOW = local(2026, 1, 10)  # the year is over: nothing is clipped to "now"
YEAR_H = 365 * 24.0


# --- the period -------------------------------------------------------------------------------------

def test_the_report_year_runs_from_15_december_to_14_december_local_time() -> None:
    assert report_year(2025, TZ) == (START, END)
    assert datetime.fromtimestamp(START, VN).isoformat() == "2024-12-15T00:00:00+07:00"
    assert END - START == YEAR_H * HOUR
    assert report_year(2025, TZ, "01-01") == (local(2025, 1, 1), local(2026, 1, 1))  # the calendar year
    assert report_year(2025, TZ, "07-01") == (local(2024, 7, 1), local(2025, 7, 1))
    # Local midnight, not UTC's: in Paris the year starts at 23:00 UTC on the 14th.
    paris = report_year(2025, "Europe/Paris")[0]
    assert datetime.fromtimestamp(paris, ZoneInfo("UTC")).isoformat() == "2024-12-14T23:00:00+00:00"


@pytest.mark.parametrize(("at", "year"), [
    (local(2024, 12, 14, 23, 59, 59), 2024), (local(2024, 12, 15), 2025), (local(2025, 1, 1), 2025),
    (local(2025, 12, 14, 23, 59, 59), 2025), (local(2025, 12, 15), 2026), (local(2025, 12, 31, 23, 59), 2026)])
def test_the_report_year_of_a_moment_at_the_boundaries(at: float, year: int) -> None:
    assert report_year_of(at, TZ) == year
    start, end = report_year(year, TZ)
    assert start <= at < end


def config_with(reports: Any) -> Any:
    return parse_config({"reports": reports}, file="t.yaml", base_dir=Path("."))


def test_the_year_start_is_configured_and_validated() -> None:
    assert config_with(None).reports.year_starts == "12-15"
    assert config_with({"year_starts": "01-01"}).reports.year_starts == "01-01"
    for bad in ("13-01", "02-29", "1215", "12-32", "12-5"):
        with pytest.raises(ConfigError, match=r"reports\.year_starts"):
            config_with({"year_starts": bad})
    with pytest.raises(ConfigError, match=r"reports\.year_starts.*expected str"):
        config_with({"year_starts": 1215})


# --- a fixed data set ----------------------------------------------------------------------------------

def build(storage: Storage) -> ZoneTree:
    """Province p; commune a (hamlet a1, stations ch-a and ch-a2, loudspeakers s1 and s2); ward b
    (hamlet b1, station ch-b, loudspeaker s3); commune c with nothing. Rows at the year's edges."""
    with storage.db.transaction() as db:
        for zone, name, kind, parent in (("p", "Tỉnh Vĩnh Long", "province", None), ("a", "Xã An Bình", "commune", "p"),
                                         ("a1", "Ấp 1", "hamlet", "a"), ("b", "Phường Bình Minh", "ward", "p"),
                                         ("b1", "Khóm 1", "hamlet", "b"), ("c", "Xã Cái Nhum", "commune", "p")):
            db.execute("INSERT INTO zones (id, name, kind, parent) VALUES (?,?,?,?)", (zone, name, kind, parent))
        db.execute("INSERT INTO channels (id, name, zone) VALUES ('ch-a', 'A', 'a'), ('ch-a2', 'A2', 'a'), "
                   "('ch-b', 'B', 'b')")
        for speaker, zone, channel in (("s1", "a1", "ch-a"), ("s2", "a1", "ch-a"), ("s3", "b1", "ch-b")):
            db.execute("INSERT INTO loudspeakers (id, zone, channel, key_sealed, created_at) VALUES (?,?,?,?,0)",
                       (speaker, zone, channel, b"x"))
        log = [  # channel, zone, kind, source, item, start, end
            ("ch-a", "a", "scheduled", "local", "news", local(2024, 12, 14, 23), local(2024, 12, 15, 1)),  # 1 h in
            ("ch-a", "a", "live", "local", "studio", local(2025, 3, 1, 8), local(2025, 3, 1, 9, 30)),
            ("ch-a2", "a", "live", "local", "studio", local(2025, 3, 1, 8), local(2025, 3, 1, 9, 30)),  # same session
            ("ch-a", "a", "alert", "local", "storm", local(2025, 9, 1, 10), local(2025, 9, 1, 10, 15)),
            ("ch-b", "b", "relay", "relay", "VOV1", local(2025, 12, 14, 23), local(2025, 12, 15, 1)),  # 1 h in
            ("ch-b", "b", "announcement", "province", "notice", local(2025, 6, 1, 7), local(2025, 6, 1, 7, 30)),
            ("ch-b", "b", "live", "local", "late", local(2025, 12, 14, 23, 59), local(2025, 12, 15, 0, 9)),  # 1 min in
            ("ch-b", "b", "live", "local", "next", local(2025, 12, 15, 0, 1), local(2025, 12, 15, 0, 31)),  # next year
        ]
        for channel, zone, kind, source, item, start, end in log:
            db.execute("INSERT INTO broadcast_log (channel, zone, kind, source, item, started_at, ended_at, "
                       "started_by) VALUES (?,?,?,?,?,?,?,'t')", (channel, zone, kind, source, item, start, end))
        sessions = [("s1", "a1", local(2024, 12, 1), None),                       # the whole year
                    ("s2", "a1", START - 2 * HOUR, START + YEAR_H / 4 * HOUR),    # a quarter of it
                    ("s3", "b1", END - YEAR_H / 10 * HOUR, END + 10 * HOUR)]      # a tenth
        for speaker, zone, start, end in sessions:
            db.execute("INSERT INTO speaker_sessions (loudspeaker, zone, channel, started_at, ended_at) "
                       "VALUES (?,?,?,?,?)", (speaker, zone, "c", start, end))
        bulletins = [  # id, class, category, zones, approved_at
            ("bt1", "thong-thuong", "nông nghiệp", ["a"], local(2025, 1, 5)),
            ("bt2", "uu-tien", "thời tiết", ["p"], local(2024, 12, 14, 23, 59)),  # approved the year before
            ("bt3", "khan-cap", "thời tiết", ["b1"], local(2025, 12, 14, 23, 59)),
            ("bt4", "thong-thuong", "y tế", ["a", "b"], local(2025, 5, 1)),
            ("bt5", "thong-thuong", "y tế", ["p"], local(2025, 8, 1)),  # the whole province, never played
        ]
        for bid, cls, category, zones, approved in bulletins:
            db.execute("INSERT INTO bulletins (id, title, class, category, zones, plan, state, created_by, created_at, "
                       "approved_at) VALUES (?,?,?,?,?,'{}','played','t',0,?)",
                       (bid, bid.upper(), cls, category, json.dumps(zones), approved))
        plays = [  # bulletin, channel, zone, start, outcome
            ("bt1", "ch-a", "a", local(2025, 1, 6, 6), "completed"),
            ("bt1", "ch-a", "a", local(2025, 1, 7, 6), "completed"),  # played twice: one bulletin
            ("bt2", "ch-a", "a", local(2024, 12, 15, 0, 1), "completed"),
            ("bt2", "ch-b", "b", local(2024, 12, 15, 0, 5), "completed"),
            ("bt3", "ch-b", "b", local(2025, 11, 1, 6), "failed"),  # not heard
            ("bt3", "ch-b", "b", local(2025, 12, 15, 0, 1), "completed"),  # next year
            ("bt4", "ch-b", "b", local(2025, 5, 2, 6), None),  # on air when the report was made
        ]
        for bid, channel, zone, start, outcome in plays:
            db.execute("INSERT INTO bulletin_plays (bulletin, slot, channel, zone, started_at, ended_at, outcome) "
                       "VALUES (?,?,?,?,?,?,?)", (bid, start, channel, zone, start, start + 300, outcome))
        alerts = [  # id, zones, start, commanded, acknowledged, by zone
            ("al1", ["a"], local(2025, 2, 1, 10), 2, 1, {"a1": [2, 1]}),
            ("al2", ["p"], local(2025, 12, 14, 23, 59), 3, 3, {"a1": [2, 2], "b1": [1, 1]}),
            ("al3", ["b"], local(2025, 12, 15, 0, 1), 1, 1, {"b1": [1, 1]}),       # next year
            ("al4", ["b"], local(2024, 12, 14, 23, 59), 1, 0, {"b1": [1, 0]}),     # the year before
        ]
        for aid, zones, start, commanded, acknowledged, by_zone in alerts:
            db.execute("INSERT INTO alert_results (id, title, zones, priority, started_at, ended_at, commanded, "
                       "acknowledged, by_zone) VALUES (?,?,?,50,?,?,?,?,?)",
                       (aid, aid.upper(), json.dumps(zones), start, start + 600, commanded, acknowledged,
                        json.dumps(by_zone)))
    return ZoneTree.from_rows(storage.db.query_sync("SELECT id, name, kind, parent FROM zones"))


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path / "b.db", SEALER)


EXPECTED_A = {
    "zone": "a", "name": "Xã An Bình", "stations": 2, "loudspeaker_clusters": 2,
    "clusters_online_share": 0.625,  # (a year + a quarter) / two years
    "hours_on_air": 4.25,
    "hours_by_class": {"scheduled": 1.0, "announcement": 0.0, "emergency": 0.0, "live": 3.0, "alert": 0.25,
                       "relay": 0.0},
    "hours_by_source": {"local": 4.25, "province": 0.0, "central": 0.0, "relay": 0.0},
    "bulletins_played": 2, "bulletins_approved": 3,
    "bulletins_by_class": {"thong-thuong": 1, "uu-tien": 1, "khan-cap": 0},
    "bulletins_by_category": {"nông nghiệp": 1, "thời tiết": 1, "y tế": 0},
    "alerts": 2, "alert_loudspeakers_commanded": 4, "alert_loudspeakers_acknowledged": 3,
    "alert_acknowledged_share": 0.75, "live_sessions": 1, "live_hours": 3.0,
}
EXPECTED_B = {
    "zone": "b", "name": "Phường Bình Minh", "stations": 1, "loudspeaker_clusters": 1,
    "clusters_online_share": 0.1,
    "hours_on_air": 1.5167,  # 1 h relay + 0.5 h announcement + 1 min live
    "hours_by_class": {"scheduled": 0.0, "announcement": 0.5, "emergency": 0.0, "live": 0.0167, "alert": 0.0,
                       "relay": 1.0},
    "hours_by_source": {"local": 0.0167, "province": 0.5, "central": 0.0, "relay": 1.0},
    "bulletins_played": 2, "bulletins_approved": 3,
    "bulletins_by_class": {"thong-thuong": 1, "uu-tien": 1, "khan-cap": 0},
    "bulletins_by_category": {"nông nghiệp": 0, "thời tiết": 1, "y tế": 1},
    "alerts": 1, "alert_loudspeakers_commanded": 1, "alert_loudspeakers_acknowledged": 1,
    "alert_acknowledged_share": 1.0, "live_sessions": 1, "live_hours": 0.0167,
}
EXPECTED_C = {
    "zone": "c", "name": "Xã Cái Nhum", "stations": 0, "loudspeaker_clusters": 0, "clusters_online_share": None,
    "hours_on_air": 0.0, "hours_by_class": dict.fromkeys(EXPECTED_A["hours_by_class"], 0.0),  # type: ignore[arg-type]
    "hours_by_source": dict.fromkeys(EXPECTED_A["hours_by_source"], 0.0),  # type: ignore[arg-type]
    "bulletins_played": 0, "bulletins_approved": 1,  # bt5, to the whole province
    "bulletins_by_class": {"thong-thuong": 0, "uu-tien": 0, "khan-cap": 0},
    "bulletins_by_category": {"nông nghiệp": 0, "thời tiết": 0, "y tế": 0},
    "alerts": 1, "alert_loudspeakers_commanded": 0, "alert_loudspeakers_acknowledged": 0,
    "alert_acknowledged_share": None, "live_sessions": 0, "live_hours": 0.0,
}
EXPECTED_TOTAL = {
    "zone": "p", "name": "Tỉnh Vĩnh Long", "stations": 3, "loudspeaker_clusters": 3,
    "clusters_online_share": 0.45,  # (1 + 1/4 + 1/10) years of three loudspeakers' three
    "hours_on_air": 5.7667,
    "hours_by_class": {"scheduled": 1.0, "announcement": 0.5, "emergency": 0.0, "live": 3.0167, "alert": 0.25,
                       "relay": 1.0},
    "hours_by_source": {"local": 4.2667, "province": 0.5, "central": 0.0, "relay": 1.0},
    "bulletins_played": 3, "bulletins_approved": 4,  # bt2 played in a and b: once here
    "bulletins_by_class": {"thong-thuong": 2, "uu-tien": 1, "khan-cap": 0},
    "bulletins_by_category": {"nông nghiệp": 1, "thời tiết": 1, "y tế": 1},
    "alerts": 2, "alert_loudspeakers_commanded": 5, "alert_loudspeakers_acknowledged": 4,
    "alert_acknowledged_share": 0.8, "live_sessions": 2, "live_hours": 3.0167,
}


def test_every_figure_of_the_province_report_on_a_fixed_data_set(storage: Storage) -> None:
    tree = build(storage)
    report = storage.reports.yearly_sync(tree, "p", 2025, TZ, "12-15", NOW)
    assert (report["year"], report["first_day"], report["last_day"]) == (2025, "2024-12-15", "2025-12-14")
    assert (report["from"], report["to"], report["zone"], report["name"]) == (START, END, "p", "Tỉnh Vĩnh Long")
    assert [c["zone"] for c in report["communes"]] == ["a", "b", "c"]
    a, b, c = report["communes"]
    assert a == EXPECTED_A
    assert b == EXPECTED_B
    assert c == EXPECTED_C
    assert report["total"] == EXPECTED_TOTAL
    assert report["alert_list"] == [
        {"id": "al1", "title": "AL1", "zones": ["a"], "priority": 50, "bulletin": None,
         "started_at": local(2025, 2, 1, 10), "ended_at": local(2025, 2, 1, 10, 10), "loudspeakers_commanded": 2,
         "loudspeakers_acknowledged": 1, "acknowledged_share": 0.5},
        {"id": "al2", "title": "AL2", "zones": ["p"], "priority": 50, "bulletin": None,
         "started_at": local(2025, 12, 14, 23, 59), "ended_at": local(2025, 12, 15, 0, 9),
         "loudspeakers_commanded": 3, "loudspeakers_acknowledged": 3, "acknowledged_share": 1.0}]
    assert report["alert_list_truncated"] is False


def test_a_commune_report_holds_that_commune_and_what_reached_it(storage: Storage) -> None:
    tree = build(storage)
    report = storage.reports.yearly_sync(tree, "a", 2025, TZ, "12-15", NOW)
    mine = {**EXPECTED_A, "bulletins_by_category": {"nông nghiệp": 1, "thời tiết": 1}}  # the categories it played
    assert report["communes"] == [mine]
    assert report["total"] == mine
    assert [(x["id"], x["loudspeakers_commanded"]) for x in report["alert_list"]] == [("al1", 2), ("al2", 2)]
    hamlet = storage.reports.yearly_sync(tree, "b1", 2025, TZ, "12-15", NOW)  # a hamlet's row is its commune's
    assert [c["zone"] for c in hamlet["communes"]] == ["b"]
    assert hamlet["total"]["loudspeaker_clusters"] == 1 and hamlet["total"]["alerts"] == 1


def test_the_next_year_counts_what_began_after_14_december(storage: Storage) -> None:
    tree = build(storage)
    report = storage.reports.yearly_sync(tree, "p", 2026, TZ, "12-15", NOW)
    total = report["total"]
    assert total["hours_by_class"]["relay"] == 1.0  # the other half of the relay across midnight
    assert total["live_sessions"] == 1 and total["live_hours"] == 0.5 + 0.15  # "next", and 9 min of "late"
    assert total["alerts"] == 1 and [x["id"] for x in report["alert_list"]] == ["al3"]
    assert total["bulletins_played"] == 1 and total["bulletins_by_class"]["khan-cap"] == 1
    # Open until "now" (10 January 2026): s1 has been online 26 days of the 26 so far.
    assert total["clusters_online_share"] == round((26 * 24 + 10) / (3 * 26 * 24), 4)


def test_the_report_is_a_few_aggregates_not_a_list_of_rows(storage: Storage) -> None:
    tree = build(storage)
    statements: list[str] = []
    with storage.db.transaction(write=False) as conn:
        conn.set_trace_callback(statements.append)
        from broadcaster.storage.reports import yearly_report_txn

        yearly_report_txn(conn, tree, "p", START, END, NOW)
        conn.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(selects) == 10


def test_an_empty_database_gives_every_commune_with_zeros(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "e.db", SEALER)
    with storage.db.transaction() as db:
        db.execute("INSERT INTO zones (id, name, kind, parent) VALUES ('p', 'P', 'province', NULL), "
                   "('a', 'A', 'commune', 'p')")
    tree = ZoneTree.from_rows(storage.db.query_sync("SELECT id, name, kind, parent FROM zones"))
    report = storage.reports.yearly_sync(tree, "p", 2025, TZ, "12-15", NOW)
    assert [c["zone"] for c in report["communes"]] == ["a"]
    assert report["total"]["hours_on_air"] == 0.0 and report["total"]["clusters_online_share"] is None
    assert report["alert_list"] == []


def test_sqlite_has_what_the_report_needs() -> None:
    assert sqlite3.sqlite_version_info >= (3, 35)  # MATERIALIZED common table expressions


# --- the files: CSV and XLSX ------------------------------------------------------------------------------

def test_the_csv_is_one_table_with_headers_in_vietnamese_and_english(storage: Storage) -> None:
    tree = build(storage)
    text = yearly_csv(storage.reports.yearly_sync(tree, "p", 2025, TZ, "12-15", NOW))
    assert text.startswith("\ufeff"), "a byte-order mark, so that Excel reads UTF-8"
    table = list(csv.reader(io.StringIO(text[1:])))
    header, rows = table[0], table[1:]
    assert header[:6] == ["Mã vùng / Zone id", "Tên / Name", "Số đài truyền thanh / Stations",
                          "Số cụm loa / Loudspeaker clusters", "Tỷ lệ cụm loa hoạt động / Share of clusters online",
                          "Giờ phát sóng / Hours on air"]
    assert "Giờ phát sóng nguồn tỉnh / Hours on air, province source" in header
    assert "Bản tin khẩn cấp / Bulletins, emergency" in header and "Số cảnh báo / Alerts" in header
    assert len(header) == 27 and all(len(r) == 27 for r in rows)
    assert [r[0] for r in rows] == ["a", "b", "c", "p"]
    named = [dict(zip(header, r, strict=True)) for r in rows]
    assert named[0]["Giờ phát sóng / Hours on air"] == "4.25"
    assert named[1]["Giờ phát sóng nguồn tiếp sóng / Hours on air, relay source"] == "1.0"
    assert named[2]["Tỷ lệ cụm loa hoạt động / Share of clusters online"] == ""  # no clusters: nothing to divide
    assert named[3]["Tên / Name"] == "Tổng cộng / Total: Tỉnh Vĩnh Long"
    assert named[3]["Tỷ lệ xác nhận / Acknowledged share"] == "0.8"
    assert named[3]["Phiên phát trực tiếp / Live sessions"] == "2"


def test_the_xlsx_opens_with_its_period_a_frozen_bold_header_and_numbers(storage: Storage) -> None:
    tree = build(storage)
    book = load_workbook(io.BytesIO(yearly_xlsx(storage.reports.yearly_sync(tree, "p", 2025, TZ, "12-15", NOW))))
    assert book.sheetnames == ["Tổng hợp - Summary", "Bản tin - Bulletins", "Cảnh báo - Alerts"]
    summary = book["Tổng hợp - Summary"]
    assert summary["A1"].value == "Báo cáo năm 2025 / Yearly report 2025: Tỉnh Vĩnh Long (Tổng hợp / Summary)"
    assert summary["A2"].value == "Kỳ báo cáo / Period: 15/12/2024 – 14/12/2025 (Asia/Ho_Chi_Minh)"
    assert summary["A3"].value == "Lập lúc / Generated: 10/01/2026 00:00"
    assert summary.freeze_panes == "C6"  # the header row and the zone's id and name stay in view
    header = [c.value for c in summary[5]]
    assert header[0] == "Mã vùng / Zone id" and header[5] == "Giờ phát sóng / Hours on air"
    assert all(c.font.bold for c in summary[5])
    rows = {r[0]: dict(zip(header, r, strict=True)) for r in summary.iter_rows(min_row=6, values_only=True)}
    assert list(rows) == ["a", "b", "c", "p"]
    a, total = rows["a"], rows["p"]
    assert a["Số đài truyền thanh / Stations"] == 2 and a["Giờ phát sóng / Hours on air"] == 4.25
    assert a["Tỷ lệ cụm loa hoạt động / Share of clusters online"] == 0.625
    assert rows["c"]["Tỷ lệ cụm loa hoạt động / Share of clusters online"] is None
    assert total["Giờ phát sóng / Hours on air"] == 5.7667 and total["Cụm loa nhận lệnh cảnh báo / Loudspeakers "
                                                                     "commanded in alerts"] == 5
    share_column = header.index("Tỷ lệ xác nhận / Acknowledged share") + 1
    assert summary.cell(row=6, column=share_column).number_format == "0.0%"
    assert summary.cell(row=6, column=6).number_format == "0.00"
    assert all(c.font.bold for c in summary[9]), "the total row is bold"
    assert summary.column_dimensions["B"].width == 30

    bulletins = book["Bản tin - Bulletins"]
    assert bulletins["A2"].value == summary["A2"].value
    assert [c.value for c in bulletins[5]] == ["Mã vùng / Zone id", "Tên / Name", "Bản tin đã phát / Bulletins played",
                                               "Chuyên mục / Category: nông nghiệp", "Chuyên mục / Category: thời tiết",
                                               "Chuyên mục / Category: y tế"]
    assert [list(r) for r in bulletins.iter_rows(min_row=6, values_only=True)] == [
        ["a", "Xã An Bình", 2, 1, 1, 0], ["b", "Phường Bình Minh", 2, 0, 1, 1], ["c", "Xã Cái Nhum", 0, 0, 0, 0],
        ["p", "Tổng cộng / Total: Tỉnh Vĩnh Long", 3, 1, 1, 1]]

    alerts = book["Cảnh báo - Alerts"]
    listed = list(alerts.iter_rows(min_row=6, values_only=True))
    assert [r[:4] for r in listed] == [("al1", "AL1", "a", "khẩn cấp / emergency"),
                                       ("al2", "AL2", "p", "khẩn cấp / emergency")]
    assert listed[1][5] == datetime(2025, 12, 14, 23, 59)  # local time, as Excel shows it
    assert listed[0][7:] == (2, 1, 0.5)
    assert alerts.cell(row=6, column=6).number_format == "dd/mm/yyyy hh:mm"
