"""A real Prometheus server scrapes the real broadcaster and sees its series."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import RunningServer

PROMETHEUS = shutil.which("prometheus")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def query(port: int, expression: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success"
    return list(body["data"]["result"])


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is installed by `make test`")
def test_prometheus_scrapes_broadcaster(server: RunningServer, tmp_path: Path) -> None:
    # The shipped scrape config, pointed at this test's port.
    config = yaml.safe_load((Path(__file__).parents[2] / "conf" / "prometheus" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["scrape_configs"][0]["scrape_interval"] = "1s"
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{server.http_port}"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # Keep a listener on so frames are encoded while Prometheus scrapes.
        with urllib.request.urlopen(server.url("/channels/ch-a.ogg"), timeout=10) as stream:
            deadline = time.monotonic() + 40
            up: list[dict[str, Any]] = []
            encoded: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                stream.read(1000)
                try:
                    up = query(port, 'up{job="broadcaster"}')
                    encoded = query(port, 'broadcaster_frames_encoded_total{channel="ch-a"} > 0')
                except OSError:
                    pass  # Prometheus still starting
                if up and up[0]["value"][1] == "1" and encoded:
                    break
                time.sleep(0.5)
        assert up and up[0]["value"][1] == "1", "Prometheus reached /metrics and parsed it"
        assert encoded and float(encoded[0]["value"][1]) > 0
        lateness = query(port, "broadcaster_tick_lateness_seconds_count")
        assert lateness and float(lateness[0]["value"][1]) > 0
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
