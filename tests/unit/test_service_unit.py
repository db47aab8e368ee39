"""The shipped systemd unit: systemd itself finds nothing wrong with it, and it keeps the hardening
and the limits docs/operations.md promises."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from broadcaster.config import HttpConfig
from tests.conftest import ROOT

UNIT = ROOT / "conf" / "broadcaster.service"


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser["Service"]


def test_the_unit_runs_as_its_own_user_hardened_with_room_for_every_listener() -> None:
    s = service()
    assert s["User"] == "broadcaster" and s["NoNewPrivileges"] == "yes" and s["ProtectSystem"] == "strict"
    assert s["StateDirectory"] == "broadcaster" and s["PrivateTmp"] == "yes" and s["ProtectHome"] == "yes"
    assert int(s["LimitNOFILE"]) >= 4 * HttpConfig.max_listeners
    assert "--log-format json serve" in s["ExecStart"] and s["KillMode"] == "mixed"
    assert "AF_UNIX" in s["RestrictAddressFamilies"] and "AF_INET6" in s["RestrictAddressFamilies"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is part of systemd")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # Pointed at this checkout's interpreter, since /opt/broadcaster is where an install puts it.
    text = UNIT.read_text(encoding="utf-8").replace("/opt/broadcaster/.venv/bin/broadcaster",
                                                     f"{sys.executable} -m broadcaster")
    copy = tmp_path / "broadcaster.service"
    copy.write_text(text, encoding="utf-8")
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if "broadcaster.service" in line]
    assert complaints == [], complaints
