"""The channels spread over two core processes (core/shards.py), on the real server: each
process plays its own channel to its loudspeakers, an alert on both communes is split between
them (its speech shared by a hard link each), /metrics merges both processes' metrics, and a
core process that dies stops the server rather than leaving a channel silent."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, RunningServer, prepare, run_speaker, start_server, wait_until
from tests.e2e.test_alerts import online, windows
from tests.e2e.test_http_stream import metric

pytestmark = pytest.mark.solo  # asserts no frame missed or lost: run alone (Makefile)


def core_processes(server: RunningServer) -> dict[int, list[str]]:
    """The server's core processes (its children and theirs running broadcaster.core.process)."""
    found: dict[int, list[str]] = {}
    parents = {server.process.pid}
    for _ in range(3):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent in parents and "broadcaster.core.process" in argv:
                found[int(entry.name)] = argv
                parents.add(int(entry.name))
    return found


def test_two_core_processes_play_one_channel_each_and_an_alert_on_both(tmp_path: Path) -> None:
    config, tokens = prepare(tmp_path, {"server": {"host": "127.0.0.1", "core_processes": 2}})
    api = Api(start_server(config), config, tokens)
    try:
        processes = core_processes(api.server)
        assert len(processes) == 2 and sum("--shard" in argv for argv in processes.values()) == 1, processes
        results: dict[str, dict[str, Any]] = {}

        def listen(device: str) -> None:
            results[device] = run_speaker(api.server, device, 14.0, out=tmp_path / f"{device}.wav")

        listeners = [threading.Thread(target=listen, args=(d,)) for d in ("spk-1", "spk-3")]
        for t in listeners:
            t.start()
        assert wait_until(lambda: online(api.server) == 2), "both loudspeakers subscribe"
        time.sleep(1.5)
        status, alert = api("POST", "/api/v1/alerts", body={
            "title": "Cảnh báo lũ", "zones": ["province"], "priority": "khan-cap", "repeat": 1,
            "text": "Nước sông đang lên nhanh. Bà con di chuyển lên chỗ cao."})
        assert status == 201, alert
        assert sorted(alert["channels"]) == ["ch-a", "ch-b"]
        for t in listeners:
            t.join(60)
        for device in ("spk-1", "spk-3"):
            heard = windows(tmp_path / f"{device}.wav")
            assert heard[0] == "loop" and heard.count("tone") >= 6 and heard.count("speech") >= 4, (device, heard)
            assert results[device]["lost"] == 0, results[device]
        text = api.server.get("/metrics").decode()
        for family in ("broadcaster_frames_encoded_total", "broadcaster_ticks_missed_total"):
            assert text.count(f"# TYPE {family} ") == 1, family  # one family, merged from both processes
        for channel in ("ch-a", "ch-b"):
            assert metric(api.server, "broadcaster_frames_encoded_total", {"channel": channel}) > 0
        assert api.server.get_json("/healthz")["ticks_missed"] == 0
    finally:
        api.server.stop()


def test_a_core_process_that_dies_stops_the_server(tmp_path: Path) -> None:
    config, _ = prepare(tmp_path, {"server": {"host": "127.0.0.1", "core_processes": 2}})
    server = start_server(config)
    try:
        shard = next(pid for pid, argv in core_processes(server).items() if "--shard" in argv)
        os.kill(shard, signal.SIGKILL)
        server.process.wait(20)
        assert server.process.returncode != 0
        assert "core process 1 ended" in server.stop()
    finally:
        server.stop()
