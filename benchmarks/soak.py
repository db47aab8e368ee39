"""Soak benchmark: does the server stay flat over an hour of ordinary work?

A leak shows only with time: a few kilobytes per live session, a file
descriptor per reconnecting listener, a timer per programme. This runs the
whole server for a bounded time (--minutes, default an hour) under the load
of a busy province, and samples both of its processes every --sample-s:

- N loudspeakers (--speakers, default 1,000) on 10 channels, subscribed with
  the real protocol by a receiver process (stalls.py's Receiver: cookie
  handshake, staggered keepalives, alert commands acknowledged); every RTP
  packet is read with its kernel receive timestamp (SO_TIMESTAMPNS), so the
  RTP sequence gives the loss and the timestamps the largest gap;
- L HTTP listeners (--listeners, default 200) on /channels/CH.ogg, spread
  over the channels, read by one select loop in a thread, which counts the
  bytes and reconnects (after 1 s) any listener the server drops. The server
  limits connections per address (http.max_connections_per_address, 64 by
  default) and every client here is 127.0.0.1, so the benchmark's
  configuration raises that limit to L + 64 (rather than spreading clients
  over other loopback addresses);
- a live studio: ffmpeg pushes a tone as Ogg/Opus in real time (-re) to
  /ingest/ch-0 as an operator with a password; every 60 s it is stopped
  (SIGTERM and SIGKILL in turn) and a new one connects, so every minute one
  session ends and the next begins;
- a programme every 5 minutes (--programme-every-s, from 30 s): one 20 s
  media item is uploaded at the start (POST /api/v1/media) and each
  programme (POST /api/v1/programmes, the whole province, local time
  Asia/Ho_Chi_Minh) starts 10 s after it is made; on ch-0 the live studio
  preempts it (it pauses, and is cut when the next one starts);
- an alert every 10 minutes (--alert-every-s, from 90 s): POST
  /api/v1/alerts with a short text read aloud (espeak-ng), repeat 1, on
  communes 0 and 1.

Each sample records: RSS (VmRSS) and open fds (/proc/PID/fd) and threads of
control (the `broadcaster serve` process), of its core child (`python -m
broadcaster.core.process`) and of any other child (upload workers,
multiprocessing's resource tracker, espeak-ng); ticks and ticks missed
(/metrics `broadcaster_ticks_missed_total`, /healthz); packets received and
lost by the loudspeakers and the largest gap since the last sample; listener
bytes and reconnects; live sessions, programmes and alerts so far (the
broadcast log of ch-0, broadcaster_programmes_total, broadcaster_alerts_total).
At the end: a table, one row per sample, and the verdict: growth of RSS and
fds from the first sample after the warm-up (--warmup-s, 2 minutes) to the
last, and the slope of a straight line fitted to those samples.

The server's core runs at the benchmark's own nice value (server.core_nice;
its default, -5, would put it ahead of the simulated loudspeakers on these
shared cores). All traffic stays on 127.0.0.1; every loop is bounded in count
and time; the server, ffmpeg, the receiver process and the temporary
directory go away at the end, also after an error or Ctrl-C.

    .venv/bin/python benchmarks/soak.py                                   # an hour, 1,000 + 200
    .venv/bin/python benchmarks/soak.py --minutes 3 --speakers 200 --listeners 20
    nice -n 5 .venv/bin/python benchmarks/soak.py --minutes 30 --out /tmp/soak.json
    .venv/bin/python benchmarks/soak.py --minutes 8 --speakers 300 --listeners 60 --programme-every-s 30

The server inherits the environment, so an allocator setting such as
MALLOC_ARENA_MAX=1 in front of the command applies to it (and its children).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    ServerProcess,
    admin_token,
    machine,
    metric_total,
    parse_metrics,
    raise_fd_limit,
    speaker_key,
    write_config,
)
from benchmarks.stalls import KEEPALIVE_S, Receiver, Window  # noqa: E402

CHANNELS = 10
STUDIO_USER = "studio-soak"
STUDIO_PASSWORD = "soak-studio-pass-1"
STUDIO_CHANNEL = "ch-0"
STUDIO_PERIOD_S = 60.0
PROGRAMME_FIRST_S = 30.0
ALERT_FIRST_S = 90.0
MEDIA_SECONDS = 20.0
TIMEZONE = ZoneInfo("Asia/Ho_Chi_Minh")
ALERT_TEXT = "Thông báo thử: kiểm tra hệ thống truyền thanh của xã."
GAP_S = 0.08


# --------------------------------------------------------------------------- the server's processes

@dataclass
class ProcStat:
    pid: int
    name: str
    rss_kib: int
    fds: int
    threads: int


def proc_stat(pid: int) -> ProcStat | None:
    """VmRSS, open fds and threads of a live process from /proc; None if it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields.get("VmRSS", "0 kB").split()[0])
    return ProcStat(pid, process_name(cmdline, fields.get("Name", "?").strip()), rss, fds,
                    int(fields.get("Threads", "0").strip()))


def process_name(cmdline: str, name: str) -> str:
    if "broadcaster.core.process" in cmdline:
        return "core"
    if "broadcaster serve" in cmdline:
        return "control"
    if "resource_tracker" in cmdline:
        return "resource_tracker"
    if "multiprocessing" in cmdline:
        return "worker"
    return name


def children(pid: int) -> list[int]:
    """The direct children of a process (every thread's /proc/PID/task/TID/children)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            found += [int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return sorted(set(found))


def descendants(pid: int, limit: int = 64) -> list[int]:
    out: list[int] = []
    stack = children(pid)
    while stack and len(out) < limit:
        child = stack.pop()
        out.append(child)
        stack.extend(children(child))
    return out


# --------------------------------------------------------------------------- the loudspeakers

@dataclass
class SpeakerWindow:
    """What the loudspeakers heard between two samples (the receiver's Window, summed)."""

    label: str
    received: int
    lost: int
    drops: int
    hearing: int
    max_gap_ms: float
    over_gap: int             # loudspeakers with a gap over GAP_S in the window
    max_lag_ms: float
    commands_acked: int       # cumulative


def summarise(receiver: Receiver, window: Window) -> SpeakerWindow:
    timed = [i for i, t in enumerate(receiver.timed) if t]
    lost = sum(max(0, (window.highest_at_end[i] - window.highest_at_start[i]) - window.received[i])
               for i in timed if window.highest_at_start[i] >= 0)
    return SpeakerWindow(window.label, sum(window.received[i] for i in timed), lost,
                         sum(window.drops_at_end[i] - window.drops_at_start[i] for i in timed),
                         sum(1 for i in timed if window.received[i]),
                         max((window.max_gap[i] for i in timed), default=0.0) * 1000,
                         sum(1 for i in timed if window.max_gap[i] > GAP_S), window.max_lag * 1000,
                         receiver.commands_acked)


def receiver_main(conn: Any, devices: list[tuple[int, str, bytes, str, bool]], server: tuple[str, int],
                  limit_s: float) -> None:
    """The receiver process: subscribe, then read until told to stop (or limit_s passes), sending each
    window's summary as soon as the window closes (the next boundary's first packet), and forgetting it."""
    receiver = Receiver(devices, server, GAP_S)
    try:
        conn.send(("acked", receiver.subscribe_until_acked(60.0)))
        receiver.poller.register(conn.fileno(), select.EPOLLIN)
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and receiver._receive(1.0, conn):
            if receiver.done:
                conn.send(("windows", [summarise(receiver, w) for w in receiver.done]))
                receiver.done.clear()
        receiver.finish()
        conn.send(("windows", [summarise(receiver, w) for w in receiver.done]))
        conn.send(("stopped",))
    finally:
        receiver.close()
        conn.close()


class Speakers:
    """The receiver process and its pipe; windows are collected as they come."""

    def __init__(self, n: int, server: tuple[str, int], limit_s: float, channels: int = CHANNELS,
                 timed_per_channel: int | None = None) -> None:
        """timed_per_channel: only so many loudspeakers a channel have every packet timed; the others
        subscribe and keep alive, their audio dropped in the kernel (one Python process cannot read
        thousands of loudspeakers' packets)."""
        per_channel = n // channels
        timed = per_channel if timed_per_channel is None else timed_per_channel
        devices = [(c * per_channel + i, f"spk-{c}-{i}", speaker_key(i).encode(), f"ch-{c}", i < timed)
                   for c in range(channels) for i in range(per_channel)]
        context = multiprocessing.get_context("fork")  # before any thread of this process starts
        self.conn, child = context.Pipe()
        self.process = context.Process(target=receiver_main, args=(child, devices, server, limit_s), daemon=True)
        self.process.start()
        child.close()
        self.windows: dict[str, SpeakerWindow] = {}
        self.stopped = False

    def wait_acked(self, timeout_s: float = 90.0) -> int:
        if not self.conn.poll(timeout_s):
            raise RuntimeError("the receiver process did not finish subscribing")
        return int(self.conn.recv()[1])

    def boundary(self, label: str, at: float) -> None:
        self.conn.send(("window", label, at))

    def collect(self, wait_for: str | None = None, timeout_s: float = 5.0) -> None:
        """Take every summary sent so far; with wait_for, wait (bounded) until that window's has come."""
        deadline = time.monotonic() + timeout_s
        while True:
            timeout = max(0.0, deadline - time.monotonic()) if wait_for and wait_for not in self.windows else 0.0
            if not self.conn.poll(timeout):
                return
            message = self.conn.recv()
            if message[0] == "windows":
                self.windows.update((w.label, w) for w in message[1])
            elif message[0] == "stopped":
                self.stopped = True
                return

    def stop(self, at: float) -> None:
        self.conn.send(("stop", at))
        deadline = time.monotonic() + 30
        while not self.stopped and time.monotonic() < deadline:
            self.collect(timeout_s=1.0)
            if not self.stopped:
                time.sleep(0.05)

    def close(self) -> None:
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.conn.close()


# --------------------------------------------------------------------------- the HTTP listeners

@dataclass
class Client:
    channel: str
    sock: socket.socket | None = None
    head: bytes = b""
    streaming: bool = False
    retry_at: float = 0.0
    bytes: int = 0


class Listeners(threading.Thread):
    """L Ogg listeners in one selector loop. A listener the server closes (or refuses) reconnects after a
    second; a full server (503) or a refused connection is counted."""

    def __init__(self, port: int, count: int, limit_s: float, channels: int = CHANNELS) -> None:
        super().__init__(daemon=True, name="listeners")
        self.port = port
        self.clients = [Client(f"ch-{i % channels}") for i in range(count)]
        self.limit_s = limit_s
        self.stopping = threading.Event()
        self.selector = selectors.DefaultSelector()
        self.bytes_total = 0
        self.connects = 0
        self.disconnects = 0          # a stream that had started, then closed by the server
        self.refusals: dict[str, int] = {}

    @property
    def streaming(self) -> int:
        return sum(1 for c in self.clients if c.streaming)

    def _connect(self, client: Client) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        client.sock, client.head, client.streaming = sock, b"", False
        self.connects += 1
        self.selector.register(sock, selectors.EVENT_WRITE, client)

    def _drop(self, client: Client, reason: str | None, retry_s: float) -> None:
        if client.sock is not None:
            try:
                self.selector.unregister(client.sock)
            except (KeyError, ValueError):
                pass
            client.sock.close()
        if client.streaming:
            self.disconnects += 1
        elif reason is not None:
            self.refusals[reason] = self.refusals.get(reason, 0) + 1
        client.sock, client.streaming, client.head = None, False, b""
        client.retry_at = time.monotonic() + retry_s

    def _writable(self, client: Client) -> None:
        assert client.sock is not None
        error = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self._drop(client, os.strerror(error), 1.0)
            return
        request = (f"GET /channels/{client.channel}.ogg HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "User-Agent: soak-listener\r\n\r\n").encode()
        try:
            client.sock.send(request)  # a few dozen bytes into an empty send buffer
        except OSError as exc:
            self._drop(client, type(exc).__name__, 1.0)
            return
        self.selector.modify(client.sock, selectors.EVENT_READ, client)

    def _readable(self, client: Client) -> None:
        assert client.sock is not None
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop(client, type(exc).__name__, 1.0)
            return
        if not data:
            self._drop(client, "closed before the stream", 1.0)
            return
        if client.streaming:
            client.bytes += len(data)
            self.bytes_total += len(data)
            return
        client.head += data
        if b"\r\n\r\n" not in client.head:
            if len(client.head) > 16384:
                self._drop(client, "no header end", 2.0)
            return
        head, _, body = client.head.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode("ascii", "replace") if b" " in head else "?"
        if status != "200":
            self._drop(client, f"HTTP {status}", 2.0)
            return
        client.streaming, client.head = True, b""
        client.bytes += len(body)
        self.bytes_total += len(body)

    def run(self) -> None:
        end = time.monotonic() + self.limit_s
        try:
            for client in self.clients:
                self._connect(client)
            while not self.stopping.is_set() and time.monotonic() < end:
                now = time.monotonic()
                for client in self.clients:
                    if client.sock is None and now >= client.retry_at:
                        self._connect(client)
                if not self.selector.get_map():
                    self.stopping.wait(0.1)
                    continue
                for key, events in self.selector.select(0.1):
                    client = key.data
                    if events & selectors.EVENT_WRITE:
                        self._writable(client)
                    elif events & selectors.EVENT_READ:
                        self._readable(client)
        finally:
            for client in self.clients:
                if client.sock is not None:
                    client.sock.close()
                    client.sock = None
            self.selector.close()


# --------------------------------------------------------------------------- the live studio

class Studio(threading.Thread):
    """ffmpeg on air on ch-0, replaced by a new one every STUDIO_PERIOD_S (stopped with SIGTERM and SIGKILL in
    turn). An ffmpeg that exits by itself (refused, an error) is counted and retried after 3 s."""

    def __init__(self, port: int, log: Path, limit_s: float) -> None:
        super().__init__(daemon=True, name="studio")
        self.port = port
        self.log = log
        self.limit_s = limit_s
        self.stopping = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0
        self.ended_early: list[int] = []    # exit codes of the ffmpegs that ended before their minute
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as err:
            return subprocess.Popen(
                ["ffmpeg", "-v", "error", "-nostdin", "-re", "-f", "lavfi", "-i",
                 f"sine=frequency=880:sample_rate=48000:duration={STUDIO_PERIOD_S * 2:.0f}",
                 "-c:a", "libopus", "-b:a", "48k", "-page_duration", "200000", "-f", "ogg",
                 "-content_type", "audio/ogg",
                 f"icecast://{STUDIO_USER}:{STUDIO_PASSWORD}@127.0.0.1:{self.port}/ingest/{STUDIO_CHANNEL}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)

    def kill(self, hard: bool) -> None:
        with self._lock:
            process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            (process.kill if hard else process.terminate)()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def run(self) -> None:
        end = time.monotonic() + self.limit_s
        slots = int(self.limit_s / STUDIO_PERIOD_S) + 2
        for slot in range(slots):
            if self.stopping.is_set() or time.monotonic() >= end:
                break
            slot_end = min(end, time.monotonic() + STUDIO_PERIOD_S)
            for _attempt in range(10):
                if self.stopping.is_set() or time.monotonic() >= slot_end:
                    break
                with self._lock:
                    self.process = self._start()
                    process = self.process
                self.started += 1
                try:
                    code = process.wait(max(0.0, slot_end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    break  # on air for the whole minute
                if self.stopping.is_set():
                    break  # stopped by the benchmark's end, not by itself
                self.ended_early.append(code)
                self.stopping.wait(3.0)
            self.kill(hard=slot % 2 == 1)
            self.stopping.wait(0.5)
        self.kill(hard=False)


# --------------------------------------------------------------------------- the operators

class Api:
    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token
        self.errors: list[str] = []

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json",
             timeout_s: float = 30.0) -> tuple[int | str, Any]:
        request = urllib.request.Request(self.base + path, data=body, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                data = response.read()
                status: int | str = response.status
        except urllib.error.HTTPError as error:
            status, data = error.code, error.read()
        except (OSError, urllib.error.URLError) as error:
            status, data = type(error).__name__, b""
        try:
            decoded = json.loads(data) if data else None
        except ValueError:
            decoded = data.decode("utf-8", "replace")
        if not (isinstance(status, int) and status < 400):
            self.errors.append(f"{method} {path.split('?')[0]}: {status} {str(decoded)[:200]}")
        return status, decoded


def prepare(tmp: Path, per_channel: int, channels: int, listeners: int,
            server: dict[str, Any] | None = None) -> tuple[Path, str]:
    """The server's configuration (its database, media and recordings under tmp/var), an admin
    token, and the studio's user (an operator of commune-0 with a password)."""
    config = write_config(tmp, speakers_per_channel=per_channel, channels=channels, keepalive_s=KEEPALIVE_S,
                          extra={"server": server or {},
                                 "http": {"max_connections_per_address": listeners + 64,
                                          "max_listeners": max(2000, listeners + 100)},
                                 "storage": {"path": str(tmp / "var" / "broadcaster.db"),
                                             "secret_file": str(tmp / "var" / "secret.key"),
                                             "media_dir": str(tmp / "var" / "media")},
                                 "live": {"recordings_dir": str(tmp / "var" / "recordings")}})
    token = admin_token(config)
    subprocess.run([sys.executable, "-m", "broadcaster", "user", "add", STUDIO_USER, "--role", "operator",
                    "--zone", "commune-0", "--password", "-c", str(config)], input=STUDIO_PASSWORD + "\n",
                   text=True, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    return config, token


def upload_media(api: Api, directory: Path) -> str:
    t = np.arange(int(MEDIA_SECONDS * 48000)) / 48000
    path = directory / "programme.wav"
    soundfile.write(str(path), (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 48000)
    status, body = api.call("POST", "/api/v1/media?zone=province&title=Ch%C6%B0%C6%A1ng%20tr%C3%ACnh%20th%E1%BB%AD"
                            "&filename=programme.wav", path.read_bytes(), "audio/wav", timeout_s=120)
    if status != 201:
        raise RuntimeError(f"the media upload failed: {status} {body}")
    return str(body["id"])


def schedule_programme(api: Api, media_id: str, k: int) -> int | str:
    start = (datetime.now(TIMEZONE) + timedelta(seconds=10)).replace(tzinfo=None)
    status, _ = api.call("POST", "/api/v1/programmes", json.dumps({
        "title": f"Chương trình thử {k}", "zones": ["province"], "media": [media_id],
        "start": start.isoformat(timespec="seconds")}).encode())
    return status


def send_alert(api: Api, k: int) -> int | str:
    status, _ = api.call("POST", "/api/v1/alerts", json.dumps({
        "title": f"Thông báo thử {k}", "zones": ["commune-0", "commune-1"], "text": ALERT_TEXT,
        "repeat": 1}).encode())
    return status


def log_counts(api: Api, since: float) -> dict[str, int]:
    """ch-0's broadcast log since the start: plays by kind, and how many are still open (no end)."""
    counts: dict[str, int] = {}
    offset = 0
    for _ in range(20):
        status, page = api.call("GET", f"/api/v1/broadcasts?zone=commune-0&from={int(since)}&limit=500"
                                f"&offset={offset}")
        if status != 200 or not isinstance(page, dict):
            break
        for item in page["items"]:
            if item["channel"] == STUDIO_CHANNEL:
                counts[item["kind"]] = counts.get(item["kind"], 0) + 1
                if item["ended_at"] is None:
                    counts["open"] = counts.get("open", 0) + 1
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            break
    return counts


# --------------------------------------------------------------------------- sampling

@dataclass
class Sample:
    label: str
    t_s: float
    control: ProcStat | None
    core: ProcStat | None
    others: list[ProcStat]
    ticks: float
    ticks_missed: float
    online: float
    programmes: dict[str, float]
    alerts: float
    live_now: float
    ingest_refused: float
    listeners_dropped: float
    server_listeners: int
    log: dict[str, int]
    listener_bytes: int
    listeners_streaming: int
    listener_reconnects: int
    studio_started: int
    scrape_ms: float
    speakers: SpeakerWindow | None = None   # the window that ends at this sample
    load: float = field(default_factory=lambda: os.getloadavg()[0])


def take_sample(label: str, t0: float, server: ServerProcess, api: Api, listeners: Listeners, studio: Studio,
                since: float) -> Sample:
    control = proc_stat(server.process.pid)
    core, others = None, []
    for pid in descendants(server.process.pid):
        stat = proc_stat(pid)
        if stat is None:
            continue
        if stat.name == "core" and core is None:
            core = stat
        else:
            others.append(stat)
    t_scrape = time.monotonic()
    samples = {}
    try:
        samples = parse_metrics(server.get_text("/metrics", timeout_s=30))
    except OSError:
        pass
    scrape_ms = (time.monotonic() - t_scrape) * 1000
    health: dict[str, Any] = {}
    channels: list[dict[str, Any]] = []
    try:
        health = server.get_json("/healthz")
        channels = server.get_json("/channels")
    except OSError:
        pass
    programmes: dict[str, float] = {}
    for (name, labels), value in samples.items():
        if name == "broadcaster_programmes_total":
            programmes[dict(labels).get("outcome", "?")] = value

    def total(name: str, absent: float = float("nan")) -> float:
        """absent: the value of a labelled counter not exported yet (no label set used so far)."""
        value = metric_total(samples, name)
        if value is None:
            return absent if samples else float("nan")
        return value

    return Sample(
        label=label, t_s=time.monotonic() - t0, control=control, core=core, others=others,
        ticks=float(health.get("ticks", float("nan"))), ticks_missed=total("broadcaster_ticks_missed_total"),
        online=total("broadcaster_loudspeakers_online"), programmes=programmes,
        alerts=total("broadcaster_alerts_total", 0.0), live_now=total("broadcaster_live_sessions"),
        ingest_refused=total("broadcaster_ingest_refused_total", 0.0),
        listeners_dropped=total("broadcaster_listeners_dropped_total", 0.0),
        server_listeners=sum(int(c.get("listeners", 0)) for c in channels), log=log_counts(api, since),
        listener_bytes=listeners.bytes_total, listeners_streaming=listeners.streaming,
        listener_reconnects=listeners.connects - len(listeners.clients), studio_started=studio.started,
        scrape_ms=scrape_ms)


# --------------------------------------------------------------------------- the run

def mib(kib: int | None) -> float:
    return float("nan") if kib is None else kib / 1024


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def new_result(args: argparse.Namespace) -> dict[str, Any]:
    """What run() fills in as it goes (so that an interrupted run still reports its samples)."""
    return {"n": 0, "acked": 0, "online": 0, "listeners": args.listeners, "samples": [], "events": [],
            "api_errors": [], "studio_started": 0, "studio_ended_early": [], "listener_refusals": {},
            "listener_disconnects": 0, "recordings": 0, "log_problems": [], "ffmpeg_log": [],
            "duration_s": args.minutes * 60.0, "interrupted": False}


def run(args: argparse.Namespace, r: dict[str, Any]) -> None:
    duration_s = args.minutes * 60.0
    per_channel = max(1, args.speakers // CHANNELS)
    n = per_channel * CHANNELS
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    server: ServerProcess | None = None
    speakers: Speakers | None = None
    listeners: Listeners | None = None
    studio: Studio | None = None
    samples: list[Sample] = r["samples"]
    events: list[str] = r["events"]
    pids_seen: set[int] = set()
    try:
        config, token = prepare(tmp, per_channel, CHANNELS, args.listeners,
                                {"core_nice": os.getpriority(os.PRIO_PROCESS, 0)})
        server = ServerProcess(config, stderr_path=tmp / "server.log")
        pids_seen.add(server.process.pid)
        limit_s = duration_s + 300
        speakers = Speakers(n, ("127.0.0.1", server.udp_port), limit_s)
        acked = speakers.wait_acked()
        online = server.wait_online(n, timeout_s=30)
        r.update(n=n, acked=acked, online=online)
        print(f"{acked} of {n} loudspeakers acknowledged, {online} online", flush=True)
        api = Api(server.http_port, token)
        api.errors = r["api_errors"]
        media_id = upload_media(api, tmp)
        listeners = Listeners(server.http_port, args.listeners, limit_s)
        studio = Studio(server.http_port, tmp / "ffmpeg.log", duration_s)
        since = time.time() - 5
        t0 = time.monotonic()
        listeners.start()
        studio.start()

        next_sample, next_programme, next_alert = 0.0, PROGRAMME_FIRST_S, ALERT_FIRST_S
        programmes = alerts = 0
        for k in range(int(duration_s / args.sample_s) + 2):
            while True:  # the events due before the next sample (bounded: the run's duration)
                due = min(next_programme, next_alert)
                if due >= min(next_sample, duration_s):
                    break
                time.sleep(max(0.0, t0 + due - time.monotonic()))
                if next_programme <= next_alert:
                    if next_programme + 10 + MEDIA_SECONDS < duration_s:
                        status = schedule_programme(api, media_id, programmes)
                        events.append(f"{time.monotonic() - t0:7.1f} s programme {programmes}: {status}")
                        programmes += 1
                    next_programme += args.programme_every_s
                else:
                    if next_alert + 20 < duration_s:
                        status = send_alert(api, alerts)
                        events.append(f"{time.monotonic() - t0:7.1f} s alert {alerts}: {status}")
                        alerts += 1
                    next_alert += args.alert_every_s
            at = min(next_sample, duration_s)
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            label = str(k)
            speakers.boundary(label, time.time())
            sample = take_sample(label, t0, server, api, listeners, studio, since)
            pids_seen.update(p.pid for p in ([sample.control, sample.core] + sample.others) if p is not None)
            samples.append(sample)
            if k:
                speakers.collect(wait_for=str(k - 1))
                samples[-2].speakers = speakers.windows.get(str(k - 1))
            print(progress(sample, samples[-2].speakers if k else None), flush=True)
            if at >= duration_s:
                break
            next_sample += args.sample_s
        speakers.stop(time.time())
        samples[-1].speakers = speakers.windows.get(samples[-1].label)
        listeners.stopping.set()
        studio.stopping.set()
        studio.join(20)
        listeners.join(10)
    finally:
        if studio is not None:
            studio.stopping.set()
            studio.kill(hard=True)
            r.update(studio_started=studio.started, studio_ended_early=studio.ended_early)
        if listeners is not None:
            listeners.stopping.set()
            listeners.join(5)
            r.update(listener_refusals=listeners.refusals, listener_disconnects=listeners.disconnects)
        log = (tmp / "server.log").read_text(errors="replace") if (tmp / "server.log").exists() else ""
        ffmpeg_log = (tmp / "ffmpeg.log").read_text(errors="replace") if (tmp / "ffmpeg.log").exists() else ""
        r.update(recordings=len(list((tmp / "var" / "recordings").rglob("*.ogg"))), log_problems=problems(log),
                 ffmpeg_log=ffmpeg_log.strip().splitlines()[-5:])
        if speakers is not None:
            speakers.close()
        if server is not None:
            server.stop()
        time.sleep(0.5)
        for pid in sorted(pids_seen):  # a child the server left behind (it should take them with it)
            stat = proc_stat(pid)
            if stat is not None and stat.name in ("core", "worker", "resource_tracker", "control"):
                print(f"warning: {stat.name} process {pid} outlived the server; killing it", file=sys.stderr)
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if args.keep_log and (tmp / "server.log").exists():
            shutil.copy(tmp / "server.log", args.keep_log)
        shutil.rmtree(tmp, ignore_errors=True)


def problems(log: str) -> list[str]:
    """Distinct ERROR / WARNING / Traceback lines of the server's log (timestamps and ids stripped)."""
    seen: dict[str, int] = {}
    for line in log.splitlines():
        if "ERROR" in line or "Traceback" in line or "WARNING" in line or "CRITICAL" in line:
            key = re.sub(r"^\S+ \S+ ", "", line)
            key = re.sub(r"\b(a|p|m|s)-[0-9a-f]{6,}\b|\d+(\.\d+)?", "#", key)[:200]
            seen[key] = seen.get(key, 0) + 1
    return [f"{count} x {line}" for line, count in sorted(seen.items(), key=lambda kv: -kv[1])]


def progress(s: Sample, sp: SpeakerWindow | None) -> str:
    """One line per sample while it runs; sp: what the loudspeakers heard since the previous sample."""
    speaker = f"spk +{sp.received} lost {sp.lost} gap {sp.max_gap_ms:.0f} ms" if sp is not None else "spk -"
    return (f"[{s.t_s / 60:5.1f} min] control {mib(s.control.rss_kib if s.control else None):6.1f} MiB "
            f"{s.control.fds if s.control else -1} fds | core {mib(s.core.rss_kib if s.core else None):6.1f} MiB "
            f"{s.core.fds if s.core else -1} fds | others {[(o.name, round(mib(o.rss_kib), 1)) for o in s.others]} "
            f"| missed {fmt(s.ticks_missed, 0)} | {speaker} | listeners {s.listeners_streaming} "
            f"({s.server_listeners} at server) {s.listener_bytes / 1e6:.1f} MB | log {s.log} "
            f"| programmes {s.programmes} alerts {fmt(s.alerts, 0)} | load {s.load:.2f}")


def growth(samples: list[Sample], warmup_s: float, value: Any) -> tuple[float, float, float, float, float] | None:
    """(time of the first sample after the warm-up, its value, the last value, last - first, least-squares slope
    per hour over those samples) of value(sample)."""
    points = [(s.t_s, float(value(s))) for s in samples if s.t_s >= warmup_s - 1 and value(s) is not None]
    points = [(t, v) for t, v in points if v == v]
    if len(points) < 2:
        return None
    first, last = points[0][1], points[-1][1]
    t = np.array([p[0] for p in points])
    v = np.array([p[1] for p in points])
    slope = float(np.polyfit(t, v, 1)[0]) * 3600 if np.ptp(t) > 0 else float("nan")
    return points[0][0], first, last, last - first, slope


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    samples: list[Sample] = r["samples"]
    print()
    print("| minute | control RSS MiB | core RSS MiB | control fds | core fds | other children (RSS MiB) "
          "| ticks missed (cumulative) | loudspeaker packets (cumulative) | loudspeaker loss % (cumulative) "
          "| largest gap ms (since last row) | listeners streaming / MB | live sessions / programmes started "
          "/ alerts |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    received = lost = 0
    for j, s in enumerate(samples):
        # The window that ends at this row's time is the one that started at the previous row.
        previous = samples[j - 1].speakers if j else None
        if previous is not None:
            received, lost = received + previous.received, lost + previous.lost
        gap = fmt(previous.max_gap_ms, 0) if previous is not None else "–"
        others = ", ".join(f"{o.name} {mib(o.rss_kib):.0f}" for o in s.others) or "–"
        loss = 100 * lost / (received + lost) if received + lost else float("nan")
        print(f"| {s.t_s / 60:.1f} | {fmt(mib(s.control.rss_kib) if s.control else None)} "
              f"| {fmt(mib(s.core.rss_kib) if s.core else None)} | {s.control.fds if s.control else 'n/a'} "
              f"| {s.core.fds if s.core else 'n/a'} | {others} | {fmt(s.ticks_missed, 0)} | {received:,} "
              f"| {fmt(loss, 3)} | {gap} | {s.listeners_streaming} / {s.listener_bytes / 1e6:.1f} "
              f"| {s.log.get('live', 0)} / {fmt(s.programmes.get('started', 0.0), 0)} / {fmt(s.alerts, 0)} |")
    tail = samples[-1].speakers
    if tail is not None:  # the last window (after the last sample's boundary: the stop) is empty or tiny
        received, lost = received + tail.received, lost + tail.lost
    print()
    warm = args.warmup_s
    for label, value in (("control RSS MiB", lambda s: mib(s.control.rss_kib) if s.control else None),
                         ("core RSS MiB", lambda s: mib(s.core.rss_kib) if s.core else None),
                         ("control fds", lambda s: s.control.fds if s.control else None),
                         ("core fds", lambda s: s.core.fds if s.core else None),
                         ("control threads", lambda s: s.control.threads if s.control else None),
                         ("core threads", lambda s: s.core.threads if s.core else None)):
        g = growth(samples, warm, value)
        if g is None:
            print(f"verdict: {label}: not enough samples after the {warm:.0f} s warm-up")
            continue
        at, first, final, delta, slope = g
        pct = 100 * delta / first if first else float("nan")
        print(f"verdict: {label}: {first:.1f} at {at / 60:.1f} min -> {final:.1f} at the end: {delta:+.1f} "
              f"({pct:+.1f} %); fitted slope {slope:+.2f} per hour")
    last = samples[-1]
    windows = [s.speakers for s in samples if s.speakers is not None]
    over = sum(w.over_gap for w in windows)
    print(f"\nloudspeakers: {r['n']} ({r['acked']} acknowledged, {r['online']} online at the start, "
          f"{fmt(last.online, 0)} at the end); packets received {received:,}, lost {lost:,} "
          f"({fmt(100 * lost / (received + lost) if received + lost else float('nan'), 4)} %), receiver drops "
          f"{sum(w.drops for w in windows)}; largest gap {max((w.max_gap_ms for w in windows), default=0):.0f} ms; "
          f"loudspeaker-windows with a gap > {GAP_S * 1000:.0f} ms: {over}; alert commands acknowledged "
          f"{windows[-1].commands_acked if windows else 0}; receiver max read lag "
          f"{max((w.max_lag_ms for w in windows), default=0):.0f} ms")
    print(f"ticks: {fmt(last.ticks, 0)}, missed {fmt(last.ticks_missed, 0)}; /metrics scrape max "
          f"{max(s.scrape_ms for s in samples):.0f} ms")
    print(f"listeners: {r['listeners']}, streaming at the end {last.listeners_streaming} "
          f"({last.server_listeners} counted by the server), {last.listener_bytes / 1e6:.1f} MB received, "
          f"{r['listener_disconnects']} dropped mid-stream and reconnected, refusals {r['listener_refusals']}, "
          f"server's broadcaster_listeners_dropped_total {fmt(last.listeners_dropped, 0)}")
    print(f"studio: {r['studio_started']} ffmpeg sessions started, {len(r['studio_ended_early'])} ended by "
          f"themselves (exit codes {r['studio_ended_early']}); ch-0 log: {last.log}; recordings {r['recordings']}; "
          f"ingest refused {fmt(last.ingest_refused, 0)}")
    print(f"programmes (broadcaster_programmes_total): {last.programmes}; alerts: {fmt(last.alerts, 0)}")
    print(f"events: {len(r['events'])}; API errors: {len(r['api_errors'])}")
    for line in r["api_errors"][:10]:
        print(f"  {line}")
    if r["ffmpeg_log"]:
        print("ffmpeg said (last lines): " + " / ".join(r["ffmpeg_log"]))
    print(f"server log: {len(r['log_problems'])} distinct warning/error lines")
    for line in r["log_problems"][:15]:
        print(f"  {line}")


def interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="how long the soak runs (bounded)")
    parser.add_argument("--speakers", type=int, default=1000, help="simulated loudspeakers (over 10 channels)")
    parser.add_argument("--listeners", type=int, default=200, help="HTTP Ogg listeners")
    parser.add_argument("--sample-s", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--warmup-s", type=float, default=120.0, help="growth is measured from the first sample "
                        "after this")
    parser.add_argument("--programme-every-s", type=float, default=300.0,
                        help="a programme this often (30: the programme path alone, ten times as often)")
    parser.add_argument("--alert-every-s", type=float, default=600.0)
    parser.add_argument("--out", default=None, help="write every sample as JSON here")
    parser.add_argument("--keep-log", default=None, help="copy the server's stderr here")
    args = parser.parse_args()
    if (not 0 < args.minutes <= 24 * 60 or args.sample_s < 5 or args.speakers < CHANNELS or args.listeners < 0
            or args.programme_every_s < MEDIA_SECONDS + 10 or args.alert_every_s < 30):
        sys.exit("--minutes in (0, 1440], --sample-s >= 5, --speakers >= 10, --listeners >= 0, "
                 f"--programme-every-s >= {MEDIA_SECONDS + 10:.0f} (no overlap), --alert-every-s >= 30")
    for tool in ("ffmpeg", "espeak-ng"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: scripts/system-deps.sh {tool}")
    raise_fd_limit(args.speakers + args.listeners + 1024)
    signal.signal(signal.SIGTERM, interrupted)  # a `kill PID` cleans up as Ctrl-C does
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}; nice {os.nice(0)}; "
          f"{args.minutes:g} min, {args.speakers} loudspeakers on {CHANNELS} channels, {args.listeners} listeners, "
          f"a sample every {args.sample_s:g} s", flush=True)
    r = new_result(args)
    try:
        run(args, r)
    except KeyboardInterrupt as stop:
        r["interrupted"] = True
        print(f"\ninterrupted ({stop or 'Ctrl-C'}) after {len(r['samples'])} samples; everything it started is "
              "stopped", flush=True)
    if r["samples"]:
        report(r, args)
    if args.out:
        Path(args.out).write_text(json.dumps({**r, "samples": [asdict(s) for s in r["samples"]],
                                              "args": vars(args), "machine": machine()}, indent=1,
                                             default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
