"""`broadcaster report --year` run as a user runs it: a subprocess on a database holding the fixed
data set of tests/unit/test_yearly_report.py, in JSON, CSV and XLSX, and its refusals."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from openpyxl import load_workbook

from broadcaster.storage import Storage
from tests.unit.test_yearly_report import EXPECTED_A, EXPECTED_TOTAL, SEALER, build


@pytest.fixture
def config(tmp_path: Path) -> Path:
    storage = Storage(tmp_path / "var" / "broadcaster.db", SEALER)
    build(storage)
    storage.close()
    path = tmp_path / "broadcaster.yaml"
    path.write_text(yaml.safe_dump({"schedule": {"timezone": "Asia/Ho_Chi_Minh"},
                                    "reports": {"year_starts": "12-15"}}), encoding="utf-8")
    return path


def report(config: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "broadcaster", "report", "-c", str(config), *args],
                            capture_output=True, text=True, cwd=config.parent, timeout=60)
    assert result.returncode == expect, result.stderr
    return result


def test_the_yearly_report_from_the_command_line(config: Path) -> None:
    out = json.loads(report(config, "--year", "2025", "--format", "json").stdout)
    assert (out["year"], out["first_day"], out["last_day"]) == (2025, "2024-12-15", "2025-12-14")
    assert out["communes"][0] == EXPECTED_A and out["total"] == EXPECTED_TOTAL

    table = list(csv.reader(io.StringIO(report(config, "--year", "2025").stdout.lstrip("\ufeff"))))  # csv: default
    assert table[0][:2] == ["Mã vùng / Zone id", "Tên / Name"]
    assert [r[0] for r in table[1:]] == ["a", "b", "c", "p"] and table[4][5] == "5.7667"

    written = report(config, "--year", "2025", "--format", "xlsx")  # no --output: report-2025.xlsx, here
    assert written.stdout == "" and "report-2025.xlsx" in written.stderr
    book = load_workbook(config.parent / "report-2025.xlsx")
    assert book["Tổng hợp - Summary"]["A2"].value == "Kỳ báo cáo / Period: 15/12/2024 – 14/12/2025 (Asia/Ho_Chi_Minh)"
    assert book["Tổng hợp - Summary"]["F9"].value == 5.7667

    report(config, "--year", "2025", "--zone", "a", "--format", "xlsx", "--output", "xa-a.xlsx")
    summary = load_workbook(config.parent / "xa-a.xlsx")["Tổng hợp - Summary"]
    assert [r[0] for r in summary.iter_rows(min_row=6, values_only=True)] == ["a", "a"]  # the commune, its total

    old = report(config, "--from", "2025-03-01T00:00+07:00", "--to", "2025-03-02T00:00+07:00").stdout
    assert old.splitlines()[1] == "a,Xã An Bình,3.0,3.0,2,1.0"  # the broadcast report is still there


@pytest.mark.parametrize(("args", "message"), [
    (("--year", "1999"), "from 2000 to 2100"),
    (("--year", "2025", "--from", "2025-01-01"), "leave out --from"),
    (("--format", "xlsx"), "add --year"),
    (("--year", "2025", "--zone", "nowhere"), "no zone 'nowhere'"),
])
def test_what_the_command_refuses(config: Path, args: tuple[str, ...], message: str) -> None:
    assert message in report(config, *args, expect=2).stderr
