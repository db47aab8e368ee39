"""The yearly report as files a Department of Culture officer opens: CSV and XLSX.

Pure formatting of the dict storage.reports.yearly_year_txn returns; no I/O,
no clock. Headers are in Vietnamese and English ("Giờ phát sóng / Hours on
air"), because the officer reads the first and the vendor's support the
second. Both formats hold the same table: a row per commune, then the total
of the report's zone. The XLSX is built with openpyxl in the reports pool
(api/reports.py, cli.py), never on the reactor: a province's workbook takes
tens of milliseconds of Python.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HEADER_ROW = 5  # in every sheet: the title, the period and when it was made above it

KIND_LABELS = {"scheduled": ("theo lịch", "scheduled"), "announcement": ("thông báo ưu tiên", "announcement"),
               "emergency": ("khẩn cấp", "emergency"), "live": ("trực tiếp", "live"),
               "alert": ("cảnh báo", "alert"), "relay": ("tiếp sóng", "relay")}
SOURCE_LABELS = {"local": ("địa phương", "local"), "province": ("tỉnh", "province"),
                 "central": ("trung ương", "central"), "relay": ("tiếp sóng", "relay")}
PRIORITY_LABELS = {50: "khẩn cấp / emergency", 40: "thông báo / announcement"}  # core/mixer.py Priority
CLASS_LABELS = {"thong-thuong": ("thông thường", "normal"), "uu-tien": ("ưu tiên", "priority"),
                "khan-cap": ("khẩn cấp", "emergency")}


def _label(labels: dict[str, tuple[str, str]], key: str) -> tuple[str, str]:
    return labels.get(key, (key, key))


Column = tuple[str, Callable[[dict[str, Any]], Any], str]  # header, value of a row, kind: text, int, hours, share


def _at(figure: str, key: str) -> Callable[[dict[str, Any]], Any]:
    """A row's value of one key of one breakdown (hours by kind, bulletins by class...)."""
    return lambda row: row[figure][key]


def summary_columns(report: dict[str, Any]) -> list[Column]:
    """The one table's columns; the per-kind, per-source, per-class and per-category ones follow
    what the report holds (every row of a report has the same keys)."""
    total = report["total"]
    cols: list[Column] = [
        ("Mã vùng / Zone id", lambda r: r["zone"], "text"),
        ("Tên / Name", lambda r: r["name"], "text"),
        ("Số đài truyền thanh / Stations", lambda r: r["stations"], "int"),
        ("Số cụm loa / Loudspeaker clusters", lambda r: r["loudspeaker_clusters"], "int"),
        ("Tỷ lệ cụm loa hoạt động / Share of clusters online", lambda r: r["clusters_online_share"], "share"),
        ("Giờ phát sóng / Hours on air", lambda r: r["hours_on_air"], "hours"),
    ]
    for kind in total["hours_by_class"]:
        vi, en = _label(KIND_LABELS, kind)
        cols.append((f"Giờ phát sóng {vi} / Hours on air, {en}", _at("hours_by_class", kind), "hours"))
    for source in total["hours_by_source"]:
        vi, en = _label(SOURCE_LABELS, source)
        cols.append((f"Giờ phát sóng nguồn {vi} / Hours on air, {en} source",
                     _at("hours_by_source", source), "hours"))
    cols.append(("Bản tin đã phát / Bulletins played", lambda r: r["bulletins_played"], "int"))
    for cls in total["bulletins_by_class"]:
        vi, en = _label(CLASS_LABELS, cls)
        cols.append((f"Bản tin {vi} / Bulletins, {en}", _at("bulletins_by_class", cls), "int"))
    cols += [
        ("Bản tin được duyệt / Bulletins approved", lambda r: r["bulletins_approved"], "int"),
        ("Số cảnh báo / Alerts", lambda r: r["alerts"], "int"),
        ("Cụm loa nhận lệnh cảnh báo / Loudspeakers commanded in alerts",
         lambda r: r["alert_loudspeakers_commanded"], "int"),
        ("Cụm loa xác nhận / Loudspeakers that acknowledged", lambda r: r["alert_loudspeakers_acknowledged"], "int"),
        ("Tỷ lệ xác nhận / Acknowledged share", lambda r: r["alert_acknowledged_share"], "share"),
        ("Phiên phát trực tiếp / Live sessions", lambda r: r["live_sessions"], "int"),
        ("Giờ phát trực tiếp / Live hours", lambda r: r["live_hours"], "hours"),
    ]
    return cols


def category_columns(report: dict[str, Any]) -> list[Column]:
    cols: list[Column] = [("Mã vùng / Zone id", lambda r: r["zone"], "text"),
                          ("Tên / Name", lambda r: r["name"], "text"),
                          ("Bản tin đã phát / Bulletins played", lambda r: r["bulletins_played"], "int")]
    for category in report["total"]["bulletins_by_category"]:
        name = category or "(không chuyên mục / no category)"
        cols.append((f"Chuyên mục / Category: {name}", _at("bulletins_by_category", category), "int"))
    return cols


def _rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The communes, then the total, named as such."""
    total = {**report["total"], "name": f"Tổng cộng / Total: {report['total']['name']}"}
    return [*report["communes"], total]


def yearly_csv(report: dict[str, Any]) -> str:
    """One table, a row per commune and the total last. It starts with a byte-order mark, so
    that Excel reads the Vietnamese as UTF-8; a share left empty has nothing to divide."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    cols = summary_columns(report)
    writer.writerow([header for header, _, _ in cols])
    for row in _rows(report):
        writer.writerow(["" if (v := value(row)) is None else v for _, value, _ in cols])
    return out.getvalue()


def period_text(report: dict[str, Any]) -> str:
    first, last = (datetime.fromisoformat(report[k]).strftime("%d/%m/%Y") for k in ("first_day", "last_day"))
    return f"Kỳ báo cáo / Period: {first} – {last} ({report['timezone']})"


def yearly_xlsx(report: dict[str, Any]) -> bytes:
    """The workbook: "Tổng hợp - Summary" (the table of yearly_csv), "Bản tin - Bulletins" (by
    category) and "Cảnh báo - Alerts" (one row per alert). Each sheet says its period at the
    top; the header row is bold and frozen; numbers are numbers (shares as percentages)."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter

    tz = ZoneInfo(report["timezone"])
    book = Workbook()
    bold = Font(bold=True)
    formats = {"int": "0", "hours": "0.00", "share": "0.0%", "time": "dd/mm/yyyy hh:mm"}
    title = f"Báo cáo năm {report['year']} / Yearly report {report['year']}: {report['name']}"

    def head(sheet: Any, what: str) -> None:
        """Rows 1 to 3: what, for when, made when; row 4 is left empty, the table starts on row 5."""
        generated = datetime.fromtimestamp(report["generated_at"], tz).strftime("%d/%m/%Y %H:%M")
        for i, text in enumerate((f"{title} ({what})", period_text(report), f"Lập lúc / Generated: {generated}"),
                                 start=1):
            sheet.cell(row=i, column=1, value=text)
        sheet["A1"].font = Font(bold=True, size=13)

    def table(sheet: Any, cols: list[Column], rows: list[dict[str, Any]]) -> None:
        header_row = HEADER_ROW
        for j, (header, _, _) in enumerate(cols, start=1):
            cell = sheet.cell(row=header_row, column=j, value=header)
            cell.font = bold
            cell.alignment = Alignment(wrap_text=True, vertical="top")
        for i, row in enumerate(rows, start=header_row + 1):
            for j, (_, value, kind) in enumerate(cols, start=1):
                cell = sheet.cell(row=i, column=j, value=value(row))
                if kind in formats:
                    cell.number_format = formats[kind]
        for i, (header, _, kind) in enumerate(cols, start=1):
            sheet.column_dimensions[get_column_letter(i)].width = 30 if kind == "text" and i == 2 else (
                max(12, min(24, len(header) // 2 + 2)))
        sheet.row_dimensions[header_row].height = 60
        sheet.freeze_panes = sheet.cell(row=header_row + 1, column=3)

    summary = book.active
    summary.title = "Tổng hợp - Summary"
    head(summary, "Tổng hợp / Summary")
    rows = _rows(report)
    table(summary, summary_columns(report), rows)
    for cell in summary[summary.max_row]:
        cell.font = bold

    bulletins = book.create_sheet("Bản tin - Bulletins")
    head(bulletins, "Bản tin theo chuyên mục / Bulletins by category")
    table(bulletins, category_columns(report), rows)

    alerts = book.create_sheet("Cảnh báo - Alerts")
    head(alerts, "Cảnh báo / Alerts")

    def when(at: float | None) -> datetime | None:
        return None if at is None else datetime.fromtimestamp(at, tz).replace(tzinfo=None)

    alert_cols: list[Column] = [
        ("Mã / Id", lambda a: a["id"], "text"), ("Tiêu đề / Title", lambda a: a["title"], "text"),
        ("Vùng / Zones", lambda a: ", ".join(a["zones"]), "text"),
        ("Mức ưu tiên / Priority", lambda a: PRIORITY_LABELS.get(a["priority"], str(a["priority"])), "text"),
        ("Bản tin / Bulletin", lambda a: a["bulletin"] or "", "text"),
        ("Bắt đầu / Started", lambda a: when(a["started_at"]), "time"),
        ("Kết thúc / Ended", lambda a: when(a["ended_at"]), "time"),
        ("Cụm loa nhận lệnh / Loudspeakers commanded", lambda a: a["loudspeakers_commanded"], "int"),
        ("Cụm loa xác nhận / Loudspeakers that acknowledged", lambda a: a["loudspeakers_acknowledged"], "int"),
        ("Tỷ lệ xác nhận / Acknowledged share", lambda a: a["acknowledged_share"], "share"),
    ]
    table(alerts, alert_cols, report["alert_list"])
    for column in ("F", "G"):
        alerts.column_dimensions[column].width = 17
    if report["alert_list_truncated"]:
        n = len(report["alert_list"])
        alerts.cell(row=alerts.max_row + 2, column=1, value=f"Chỉ liệt kê {n} cảnh báo đầu tiên / Only the first {n} "
                                                              "alerts are listed; the summary counts them all")
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
