"""Shared pieces of the benchmarks: a generated configuration, a server process, its CPU time."""

from __future__ import annotations

import json
import os
import platform
import resource
import select
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


def speaker_key(i: int) -> str:
    return f"bench-key-{i:06d}-0123456789"


def write_config(directory: Path, *, speakers_per_channel: int, channels: int = 1, frame_ms: int = 20,
                 keepalive_s: float = 5.0, fanout: str = "auto") -> Path:
    t = np.arange(4 * 48000) / 48000
    tone = directory / "tone.wav"
    soundfile.write(str(tone), (0.25 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 48000)
    communes = [{"id": f"commune-{c}", "kind": "commune", "children": [{"id": f"hamlet-{c}", "kind": "hamlet"}]}
                for c in range(channels)]
    document: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "udp_fanout": fanout},
        "audio": {"frame_ms": frame_ms},
        "http": {"burst_ms": 0},
        "speakers": {"keepalive_s": keepalive_s, "missed_keepalives": 3},
        "zones": [{"id": "province", "children": communes}],
        "channels": [{"id": f"ch-{c}", "zone": f"commune-{c}", "loop": str(tone)} for c in range(channels)],
        "loudspeakers": [
            {"id": f"spk-{c}-{i}", "zone": f"hamlet-{c}", "channel": f"ch-{c}", "key": speaker_key(i)}
            for c in range(channels) for i in range(speakers_per_channel)],
    }
    path = directory / "bench.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


class ServerProcess:
    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "broadcaster", "serve", "-c", str(config), "--http-port", "0", "--udp-port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 60)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("listening "):
            self.process.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        self.http_port = int(fields["http"].rsplit(":", 1)[1])
        self.udp_port = int(fields["udp"].rsplit(":", 1)[1])

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU time of the server process so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as response:
            return json.loads(response.read())

    def wait_online(self, count: int, timeout_s: float = 30.0) -> int:
        deadline = time.monotonic() + timeout_s
        online = 0
        while time.monotonic() < deadline:
            online = int(self.get_json("/healthz")["loudspeakers_online"])
            if online >= count:
                break
            time.sleep(0.2)
        return online

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"
