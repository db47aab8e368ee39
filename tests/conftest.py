"""Shared fixtures: write a configuration, start the real server as a process."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import yaml
from twisted.python.failure import Failure

ROOT = Path(__file__).resolve().parents[1]
KEYS = {f"spk-{i}": f"test-key-for-speaker-{i:04d}" for i in range(1, 5)}


WAIT_S = 20.0  # a bound on waiting for an event, never an expectation of speed


def wait_until(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class SyncPool:
    """A thread pool that runs work at once, on the caller's thread (tests' stand-in for twisted's)."""

    def callInThreadWithCallback(self, on_result: Callable[[bool, Any], None], f: Callable[..., Any],  # noqa: N802
                                 *args: Any, **kwargs: Any) -> None:
        try:
            result = f(*args, **kwargs)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


class RecordingSocket:
    """Stands in for a UDP socket: records every (datagram, address) sent."""

    family = None

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        self.sent.append((bytes(data), address))
        return len(data)

    def to(self, address: tuple[str, int]) -> list[bytes]:
        return [d for d, a in self.sent if a == address]


def tone_file(path: Path, frequency_hz: float = 440.0, level_dbfs: float = -12.0, seconds: float = 2.0) -> Path:
    t = np.arange(int(seconds * 48000)) / 48000
    amplitude = 10 ** (level_dbfs / 20) * np.sqrt(2)
    soundfile.write(str(path), (amplitude * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32), 48000)
    return path


def write_config(tmp_path: Path, *, loops: dict[str, Path | None] | None = None,
                 multicast: dict[str, Any] | None = None, frame_ms: int = 20,
                 extra: dict[str, Any] | None = None) -> Path:
    """Two communes, a channel each (ch-a, ch-b); spk-1/2 on ch-a, spk-3/4 on ch-b."""
    loops = loops if loops is not None else {"ch-a": tone_file(tmp_path / "a.wav", 440.0),
                                             "ch-b": tone_file(tmp_path / "b.wav", 1000.0)}
    channels = []
    for cid, zone in (("ch-a", "commune-a"), ("ch-b", "commune-b")):
        channel: dict[str, Any] = {"id": cid, "zone": zone, "name": f"Kênh {cid}"}
        if loops.get(cid):
            channel["loop"] = str(loops[cid])
        if multicast and cid in multicast:
            channel["multicast"] = multicast[cid]
        channels.append(channel)
    document: dict[str, Any] = {
        "server": {"host": "127.0.0.1"},
        "audio": {"frame_ms": frame_ms},
        "speakers": {"keepalive_s": 1, "missed_keepalives": 3},
        "zones": [{"id": "province", "children": [
            {"id": "commune-a", "children": [{"id": "hamlet-a", "kind": "hamlet"}]},
            {"id": "commune-b", "children": [{"id": "hamlet-b", "kind": "hamlet"}]}]}],
        "channels": channels,
        "loudspeakers": [
            {"id": sid, "zone": "hamlet-a" if i < 3 else "hamlet-b", "channel": "ch-a" if i < 3 else "ch-b", "key": key}
            for i, (sid, key) in enumerate(KEYS.items(), start=1)],
    }
    for section, values in (extra or {}).items():
        document.setdefault(section, {}).update(values)
    path = tmp_path / "broadcaster.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    http_port: int
    udp_port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url(path), timeout=10) as response:
            return bytes(response.read())

    def get_json(self, path: str) -> Any:
        return json.loads(self.get(path))

    @property
    def udp(self) -> str:
        return f"127.0.0.1:{self.udp_port}"

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.stderr.read() if self.process.stderr else ""


def start_server(config: Path, prefix: Sequence[str] = (), http_port: int = 0) -> RunningServer:
    """``http_port``: 0 for any free one; a fixed one when another server's config names it."""
    command = [*prefix, sys.executable, "-m", "broadcaster", "serve", "-c", str(config),
               "--http-port", str(http_port), "--udp-port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("listening "):
        process.kill()
        raise AssertionError(f"server did not start: {line!r} {process.stderr.read() if process.stderr else ''}")
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    return RunningServer(process, int(fields["http"].rsplit(":", 1)[1]), int(fields["udp"].rsplit(":", 1)[1]))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(write_config(tmp_path))
    yield running
    running.stop()


def run_speaker(server: RunningServer, device: str, seconds: float, out: Path | None = None,
                channel: str | None = None, key: str | None = None) -> dict[str, Any]:
    channel = channel or ("ch-a" if device in ("spk-1", "spk-2") else "ch-b")
    command = [sys.executable, "-m", "broadcaster", "speaker", "--device", device,
               "--key", key or KEYS.get(device, "x" * 16), "--channel", channel,
               "--server", server.udp, "--duration", str(seconds)]
    if out is not None:
        command += ["--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, cwd=ROOT)
    lines = result.stdout.strip().splitlines()
    assert lines, f"speaker printed nothing: {result.stderr}"
    return dict(json.loads(lines[-1]))


# --- the admin API: users, tokens and a client -----------------------------------

MAX_UPLOAD = 600_000


def cli(config: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "broadcaster", *args, "-c", str(config)], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


class Api:
    def __init__(self, server: RunningServer, config: Path, tokens: dict[str, str]) -> None:
        self.server, self.config, self.tokens = server, config, tokens

    def __call__(self, method: str, path: str, who: str | None = "admin", body: Any = None,
                 raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.server.url(path), data=data, method=method)
        if who is not None:
            request.add_header("Authorization", f"Bearer {self.tokens.get(who, who)}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, payload, ctype = response.status, response.read(), response.headers["Content-Type"] or ""
        except urllib.error.HTTPError as exc:
            status, payload, ctype = exc.code, exc.read(), exc.headers["Content-Type"] or ""
        if ctype.startswith("application/json") and payload:
            return status, json.loads(payload)
        return status, payload.decode()


def prepare(tmp_path: Path, extra: dict[str, Any] | None = None) -> tuple[Path, dict[str, str]]:
    config = write_config(tmp_path, extra={"storage": {"max_upload_bytes": MAX_UPLOAD},
                                           "alerts": {"cap_areas": {"VN-XA=29590": "commune-a"}}, **(extra or {})})
    # Users are made in this process with the same storage calls `broadcaster user add` makes (that
    # command itself is run by test_users_made_by_the_cli_can_use_the_api): a process start each costs seconds.
    from broadcaster.config import load_config
    from broadcaster.storage import KeySealer, Storage, seed_from_config

    loaded = load_config(config)
    storage = Storage(loaded.storage.path, KeySealer.from_file(loaded.storage.secret_file))
    try:
        if storage.is_empty():
            seed_from_config(storage, loaded)
        tokens = {}
        for name, role, zones in (("admin", "admin", []), ("op-a", "operator", ["commune-a"]),
                                  ("viewer-a", "viewer", ["commune-a"])):
            storage.add_user(name, role, zones)
            tokens[name] = storage.new_token(name)
    finally:
        storage.close()
    return config, tokens


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    config, tokens = prepare(tmp_path)
    server = start_server(config)
    yield Api(server, config, tokens)
    server.stop()
