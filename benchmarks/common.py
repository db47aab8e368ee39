"""Shared pieces of the benchmarks: a generated configuration, a server process, its CPU time."""

from __future__ import annotations

import functools
import http.server
import json
import os
import platform
import resource
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

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
                 keepalive_s: float = 5.0, fanout: str = "auto", extra: dict[str, Any] | None = None) -> Path:
    """extra: top-level sections merged into the document (e.g. {"storage": {...}})."""
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
    for section, settings in (extra or {}).items():
        document[section] = {**document.get(section, {}), **settings}
    path = directory / "bench.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def cli(config: Path, *args: str, python: str | None = None, root: Path | None = None) -> str:
    """Run `broadcaster ARGS -c CONFIG` (from another checkout with python/root) and return its stdout."""
    return subprocess.run([python or sys.executable, "-m", "broadcaster", *args, "-c", str(config)],
                          capture_output=True, text=True, check=True, cwd=root or ROOT).stdout


def admin_token(config: Path, name: str = "admin", python: str | None = None, root: Path | None = None) -> str:
    return cli(config, "user", "add", name, "--role", "admin", "--token", python=python, root=root).split()[-1]


def process_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU time of a process (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


class ServerProcess:
    def __init__(self, config: Path, *, python: str | None = None, root: Path | None = None,
                 stderr_path: Path | None = None) -> None:
        """python/root: run the server of another checkout (its venv's python, its directory)."""
        self._stderr = open(stderr_path, "ab") if stderr_path is not None else None  # noqa: SIM115
        self.process = subprocess.Popen(
            [python or sys.executable, "-m", "broadcaster", "serve", "-c", str(config), "--http-port", "0",
             "--udp-port", "0"],
            stdout=subprocess.PIPE, stderr=self._stderr or subprocess.DEVNULL, text=True, cwd=root or ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 60)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("listening "):
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"server did not start: {line!r}"
                               + (f" (its stderr is in {stderr_path})" if stderr_path else ""))
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        self.http_port = int(fields["http"].rsplit(":", 1)[1])
        self.udp_port = int(fields["udp"].rsplit(":", 1)[1])

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU time of the server so far: control and its audio core process together."""
        return tree_cpu_seconds(self.process.pid)

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

    def get_text(self, path: str, timeout_s: float = 10.0) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout_s) as response:
            return str(response.read().decode("utf-8"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()


Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Sample:
    """Prometheus text exposition to {(name, sorted labels): value}; comments skipped."""
    samples: Sample = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, labels = head, cast(tuple[tuple[str, str], ...], ())
        if "{" in head:
            name, _, rest = head.partition("{")
            pairs = []
            for part in rest.rstrip("}").split(","):
                if "=" in part:
                    k, _, v = part.partition("=")
                    pairs.append((k.strip(), v.strip().strip('"')))
            labels = tuple(sorted(pairs))
        try:
            samples[(name.strip(), labels)] = float(value)
        except ValueError:
            continue
    return samples


def metric_total(samples: Sample, name: str) -> float | None:
    """Sum of a metric over all its label sets; None if the server does not export it."""
    values = [v for (n, _), v in samples.items() if n == name]
    return sum(values) if values else None


def histogram_buckets(samples: Sample, name: str) -> dict[float, float]:
    """Cumulative bucket counts of a histogram by upper bound (summed over other labels)."""
    buckets: dict[float, float] = {}
    for (n, labels), v in samples.items():
        if n == f"{name}_bucket":
            le = float(dict(labels)["le"])
            buckets[le] = buckets.get(le, 0.0) + v
    return buckets


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """Quantile of the observations made between two scrapes, interpolated inside the bucket as
    Prometheus' histogram_quantile does (so it is only as fine as the buckets). None if nothing observed."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower  # beyond the last finite bucket: its bound is all we know
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


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


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU time of a process and its live descendants (a server that runs its audio core
    or workers as child processes is measured whole)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    user = system = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            u, s = process_cpu_seconds(current)
        except (OSError, IndexError, ValueError):
            continue
        user, system = user + u, system + s
        stack.extend(children.get(current, []))
    return user, system


ICECAST_XML = """<icecast>
  <limits><clients>{clients}</clients><sources>2</sources><queue-size>1048576</queue-size>
    <burst-size>{burst}</burst-size><source-timeout>10</source-timeout></limits>
  <authentication><source-password>peer-source</source-password><admin-user>admin</admin-user>
    <admin-password>peer-admin</admin-password></authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>0</fileserve>
  <paths><logdir>{dir}</logdir><webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot><pidfile>{dir}/pid</pidfile></paths>
  <logging><accesslog>-</accesslog><errorlog>error.log</errorlog><loglevel>2</loglevel></logging>
  <security><chroot>0</chroot>{changeowner}</security>
</icecast>
"""


@contextmanager
def icecast_peer(clients: int, burst_bytes: int = 0,
                 bitrate: int = 32000) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Debian's icecast2 on a free loopback port with one mount, /ch-0.ogg, fed by ffmpeg with a
    440 Hz tone (Opus, 1 s pages), as the peer of benchmarks and tests. Yields (icecast, port)
    once the source is on air and icecast2 has parsed its codec."""
    icecast = shutil.which("icecast2") or shutil.which("icecast")
    if icecast is None:
        raise RuntimeError("icecast2 is not installed (make test installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)  # icecast2 refuses to run as root: it changes to nobody, who writes its logs here
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        owner = "<changeowner><user>nobody</user><group>nogroup</group></changeowner>" if os.getuid() == 0 else ""
        xml = Path(tmp) / "icecast.xml"
        xml.write_text(ICECAST_XML.format(clients=clients, port=port, dir=tmp, changeowner=owner, burst=burst_bytes))
        server = subprocess.Popen([icecast, "-c", str(xml)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        source = None
        try:
            _wait_port(port)
            source = icecast_source(port, "/ch-0.ogg", bitrate=bitrate)
            deadline = time.monotonic() + 20
            while not _icecast_on_air(port):
                if source.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("ffmpeg could not feed icecast2")
                time.sleep(0.2)
            yield server, port
        finally:
            if source is not None:
                source.kill()
                source.wait()
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:  # icecast2 can take its time to stop with many clients gone
                server.kill()
                server.wait()


def icecast_source(port: int, mount: str, frequency: float = 440.0, codec: str = "opus",
                   bitrate: int = 32000) -> subprocess.Popen[bytes]:
    """ffmpeg feeding a tone to icecast_peer's server on ``mount``: Ogg/Opus (1 s pages) or MP3."""
    encode = (["-c:a", "libopus", "-page_duration", "1000000", "-f", "ogg", "-content_type", "audio/ogg"]
              if codec == "opus" else ["-c:a", "libmp3lame", "-f", "mp3", "-content_type", "audio/mpeg"])
    return subprocess.Popen(
        ["ffmpeg", "-v", "error", "-nostdin", "-re", "-f", "lavfi",
         "-i", f"sine=frequency={frequency}:sample_rate=48000", "-ac", "1", "-b:a", str(bitrate), *encode,
         f"icecast://source:peer-source@127.0.0.1:{port}{mount}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class HlsUpstream:
    """A live HLS station: ffmpeg's hls muxer (AAC in MPEG-TS, 1 s segments by default) and an HTTP server on
    loopback. ``stop`` takes both down; ``start`` brings them back on the same port, as a restarted
    encoder does: a new playlist whose media sequence starts again at 0."""

    def __init__(self, directory: Path, frequency: float, segment_s: int = 1) -> None:
        self.directory, self.frequency, self.segment_s = directory, frequency, segment_s
        self.port = 0
        self.ffmpeg: subprocess.Popen[bytes] | None = None
        self.http: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/live.m3u8"

    def start(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self.ffmpeg = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-nostdin", "-re", "-f", "lavfi", "-i", f"sine=frequency={self.frequency}:"
             "sample_rate=44100", "-c:a", "aac", "-b:a", "64k", "-f", "hls", "-hls_time", str(self.segment_s),
             "-hls_list_size", "6", "-hls_flags", "delete_segments", str(self.directory / "live.m3u8")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        handler = functools.partial(_Quiet, directory=str(self.directory))
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        deadline = time.monotonic() + 20
        while not (self.directory / "live.m3u8").exists():
            if self.ffmpeg.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ffmpeg's hls muxer wrote no playlist")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.ffmpeg is not None:
            self.ffmpeg.kill()
            self.ffmpeg.wait()
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("icecast2 did not start")


def icecast_status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status-json.xsl", timeout=10) as response:
        return dict(json.loads(response.read()))


def icecast_sources(status: dict[str, Any]) -> list[dict[str, Any]]:
    """icestats.source as an exporter reads it: an object for one source, a list for several."""
    found = status["icestats"].get("source", [])
    return [found] if isinstance(found, dict) else list(found)


def _icecast_on_air(port: int) -> bool:
    try:
        return any("subtype" in source for source in icecast_sources(icecast_status(port)))
    except ValueError:  # icecast2's XSL writes no valid JSON while it has no source
        return False
