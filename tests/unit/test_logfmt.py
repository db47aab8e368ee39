"""Log lines as JSON by option, in this process and in the children that inherit the choice."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from broadcaster.logfmt import ENV, JsonLines, configure
from tests.conftest import ROOT


def test_a_record_is_one_json_object_with_its_traceback() -> None:
    formatter = JsonLines("control")
    try:
        raise ValueError("hỏng")
    except ValueError:
        record = logging.LogRecord("broadcaster.x", logging.ERROR, __file__, 1, "kênh %s lỗi", ("xa-an-binh",),
                                   sys.exc_info())
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "kênh xa-an-binh lỗi" and entry["level"] == "error"
    assert entry["process"] == "control" and entry["logger"] == "broadcaster.x"
    assert "ValueError: hỏng" in entry["traceback"] and entry["time"].endswith("+00:00")


def test_the_choice_travels_to_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure("control", fmt="json")
        assert os.environ[ENV] == "json"
        child = subprocess.run(
            [sys.executable, "-c", "import logging; from broadcaster.logfmt import configure; configure('core'); "
             "logging.getLogger('broadcaster.core').warning('trễ %d khung', 3)"],
            capture_output=True, text=True, cwd=ROOT, timeout=30, env=dict(os.environ))
        entry = json.loads(child.stderr.strip())
        assert entry == {**entry, "process": "core", "level": "warning", "message": "trễ 3 khung"}
        stream = io.StringIO()
        configure("control", fmt="text")
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("broadcaster").info("text again")
        assert stream.getvalue().rstrip().endswith("INFO broadcaster: text again")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        os.environ.pop(ENV, None)
