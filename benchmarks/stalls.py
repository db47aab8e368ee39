"""Stall benchmark: do loudspeakers hear a gap while operators work?

N simulated loudspeakers listen on 10 channels; the database holds a year of
history (1M loudspeaker-session rows, some broadcast-log rows, written into
the server's SQLite file before it starts); after a quiet baseline an
operator storm runs in parallel threads: the yearly report as JSON and as
CSV, 50 loudspeaker edits, a 3-minute upload, an alert with TTS, log
listings. Measured, for the quiet window and for the storm window:

- per loudspeaker the largest RTP inter-arrival gap, from the kernel's
  receive timestamps (SO_TIMESTAMPNS: on loopback the packet is stamped in
  the server's send call, so a late receiver does not make a gap), and how
  many loudspeakers saw one over 80 ms;
- frame ticks missed and the tick-lateness p99 (the server's /metrics,
  difference between the window's two scrapes);
- API latency p50/p99 of every storm request, and of a steady probe
  (GET /api/v1/me every 100 ms from its own thread).

All traffic stays on 127.0.0.1; every loop is bounded; the temporary
directory and the server process go away at the end.

    .venv/bin/python benchmarks/stalls.py                          # 1,000 loudspeakers
    .venv/bin/python benchmarks/stalls.py --speakers 1000 5000
    .venv/bin/python benchmarks/stalls.py --server-root /tmp/stalls-before \\
        --server-python /tmp/stalls-before/.venv/bin/python --label "before (7dc5537)"
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing
import os
import random
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    ROOT,
    ServerProcess,
    admin_token,
    histogram_buckets,
    histogram_quantile,
    machine,
    metric_total,
    parse_metrics,
    process_cpu_seconds,
    raise_fd_limit,
    speaker_key,
    tree_cpu_seconds,
    write_config,
)
from broadcaster.protocols.rtp import rtp_sequence, seq_delta  # noqa: E402
from broadcaster.protocols.speaker import MAGIC, MessageType, ProtocolError, parse_envelope  # noqa: E402
from broadcaster.speaker.client import SubscriptionMessages  # noqa: E402

YEAR_S = 365 * 86400
CHANNELS = 10
KEEPALIVE_S = 5.0
ALERT_TEXT = ("Thông báo khẩn cấp: bão số chín đang tiến vào đất liền, bà con di chuyển tàu thuyền vào nơi "
              "tránh trú an toàn. Các hộ dân ven sông chằng chống nhà cửa trước mười bảy giờ hôm nay.")

# Linux socket options the socket module may not name.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
ANCILLARY = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)
TIMESPEC = struct.Struct("@qq")
U32 = struct.Struct("@I")


# --------------------------------------------------------------------------- the loudspeakers

def attach_control_only_filter(sock: socket.socket) -> None:
    """A classic BPF filter that lets only BCS1 control datagrams into the socket: the kernel drops the
    RTP (after the server has sent it) instead of this process reading 50 packets a second. A UDP socket's
    filter sees the 8-byte UDP header first (checked by check_filter)."""
    magic = int.from_bytes(MAGIC, "big")
    program = b"".join(struct.pack("=HBBI", *insn) for insn in (
        (0x20, 0, 0, 8),              # ld  [8]          (the payload's first 32 bits; a shorter packet is dropped)
        (0x15, 0, 1, magic),          # jeq #MAGIC, accept, drop
        (0x06, 0, 0, 0xFFFFFFFF),     # accept: ret #-1
        (0x06, 0, 0, 0)))             # drop:   ret #0
    buffer = ctypes.create_string_buffer(program, len(program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("@HP", 4, ctypes.addressof(buffer)))


def check_filter() -> None:
    """The filter passes a control datagram and drops an RTP one on this kernel, or the benchmark stops."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        attach_control_only_filter(receiver)
        receiver.settimeout(0.2)
        sender.sendto(b"\x80\x6f" + bytes(30), receiver.getsockname())
        sender.sendto(MAGIC + bytes(30), receiver.getsockname())
        got = []
        try:
            while True:
                got.append(receiver.recv(64))
        except TimeoutError:
            pass
        if got != [MAGIC + bytes(30)]:
            raise RuntimeError(f"the control-only socket filter does not work here (got {got!r}); use --timed N "
                               "with N at least the loudspeaker count")
    finally:
        receiver.close()
        sender.close()


@dataclass
class Window:
    label: str
    start: float                    # wall time (CLOCK_REALTIME, as the kernel timestamps)
    max_gap: list[float]            # per timed loudspeaker, seconds
    received: list[int]
    highest_at_start: list[int]
    drops_at_start: list[int]
    highest_at_end: list[int] = field(default_factory=list)
    drops_at_end: list[int] = field(default_factory=list)
    stalls: list[tuple[float, float, int]] = field(default_factory=list)  # (from, to, global index) > gap_s
    max_lag: float = 0.0            # how far behind the kernel's stamp this process read a packet


class Receiver:
    """One process's share of the loudspeakers, speaking the real protocol (SubscriptionMessages):
    subscribe with the cookie handshake, staggered keepalives, command acknowledgements as a device sends.
    Timed loudspeakers read every RTP packet with its kernel receive timestamp; the others only subscribe
    (a socket filter drops their RTP in the kernel) so that one process can keep up at 5,000."""

    MAX_STALLS = 50_000

    def __init__(self, devices: list[tuple[int, str, bytes, str, bool]], server: tuple[str, int],
                 gap_s: float, rcvbuf_bytes: int = 1 << 20) -> None:
        import select

        self.server = server
        self.gap_s = gap_s
        self.global_index = [d[0] for d in devices]
        self.messages = [SubscriptionMessages(d[1], d[2], d[3]) for d in devices]
        self.timed = [d[4] for d in devices]
        self.sockets: list[socket.socket] = []
        self.poller = select.epoll()
        for timed in self.timed:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            if timed:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
            else:
                attach_control_only_filter(sock)
            self.sockets.append(sock)
            self.poller.register(sock.fileno(), select.EPOLLIN)
        self._index = {sock.fileno(): i for i, sock in enumerate(self.sockets)}
        n = len(devices)
        self.acked = [False] * n
        self.commands_acked = 0
        self.last_ts = [0.0] * n
        self.highest = [-1] * n
        self.drops = [0] * n          # the kernel's count of datagrams dropped at this socket (SO_RXQ_OVFL)
        self.window: Window | None = None
        self.pending: list[tuple[str, float]] = []
        self.done: list[Window] = []
        self._acked_commands: set[tuple[int, int]] = set()
        self._keepalive_start = 0.0
        self._keepalives_sent = 0
        self.stop_at = float("inf")     # packets stamped after this are not counted
        self.past_stop = [not t for t in self.timed]

    def _send(self, i: int, data: bytes) -> None:
        try:
            self.sockets[i].sendto(data, self.server)
        except (BlockingIOError, OSError):
            pass  # as a device: retried at the next keepalive

    def subscribe_until_acked(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while not all(self.acked) and time.monotonic() < deadline:
            for i, acked in enumerate(self.acked):
                if not acked:
                    self._send(i, self.messages[i].subscribe())
                    if i % 100 == 99:
                        self._receive(0.002)
            self._receive(1.0)
        self._keepalive_start = time.monotonic()
        return sum(self.acked)

    def _keepalives(self, now: float) -> None:
        """Each loudspeaker every KEEPALIVE_S, spread evenly over the period as a real fleet is."""
        n = len(self.sockets)
        due = int((now - self._keepalive_start) / KEEPALIVE_S * n)
        while self._keepalives_sent < due:
            i = self._keepalives_sent % n
            self._send(i, self.messages[i].subscribe())
            self._keepalives_sent += 1

    def finish(self) -> None:
        """The stop: read what the kernel still holds from before it (until every timed socket
        has a packet stamped after it, or 5 s), then close the last window with the gaps still
        open at the stop."""
        stop_at = self.pending[-1][1] if self.pending else time.time()
        self.pending = [p for p in self.pending if p[0]]
        self.stop_at = stop_at
        until = time.monotonic() + 5.0
        while not all(self.past_stop) and time.monotonic() < until:
            self._receive(0.05)
        self._switch_if_due(stop_at)
        self._close(stop_at, open_gaps=True)

    def _close(self, at: float, open_gaps: bool = False) -> None:
        """End the window at wall time `at`. With open_gaps (the last window, every socket read up to `at`),
        a gap still open then (no packet since) counts up to `at`; at a boundary between windows it is
        counted whole in the next window instead, when its packet comes."""
        if self.window is not None:
            w = self.window
            for i, last in enumerate(self.last_ts if open_gaps else []):
                if self.timed[i] and last and at > last:
                    gap = at - last
                    if gap > w.max_gap[i]:
                        w.max_gap[i] = gap
                    if gap > self.gap_s and len(w.stalls) < self.MAX_STALLS:
                        w.stalls.append((last, at, self.global_index[i]))
            self.window.highest_at_end, self.window.drops_at_end = list(self.highest), list(self.drops)
            self.done.append(self.window)
            self.window = None

    def _open(self, label: str, start: float) -> None:
        self._close(start)
        timed = len(self.sockets)
        self.window = Window(label, start, [0.0] * timed, [0] * timed, list(self.highest), list(self.drops))

    def _switch_if_due(self, ts: float) -> None:
        while self.pending and ts >= self.pending[0][1]:
            label, start = self.pending.pop(0)
            self._open(label, start)

    def _receive(self, duration_s: float, conn: Any = None) -> bool:
        """Read for up to duration_s; False when the parent said stop (or went away)."""
        end = time.monotonic() + duration_s
        conn_fd = conn.fileno() if conn is not None else -1
        while True:
            now = time.monotonic()
            if now >= end:
                return True
            if self._keepalive_start:
                self._keepalives(now)
            for fd, _ in self.poller.poll(min(0.01, end - now)):
                if fd == conn_fd:
                    try:
                        message = conn.recv()
                    except EOFError:
                        return False
                    if message[0] == "stop":
                        self.pending.append(("", message[1]))
                        return False
                    self.pending.append((message[1], message[2]))
                    continue
                self._drain(self._index[fd])
            # Boundaries pass on the wall clock even when no packet arrives (a stalled server).
            if self.pending and time.time() > self.pending[0][1] + 1.0:
                self._switch_if_due(self.pending[0][1])

    def _drain(self, i: int) -> None:
        sock = self.sockets[i]
        if not self.timed[i]:
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    return
                self._control(i, data)
        while True:
            try:
                data, ancillary, _, _ = sock.recvmsg(2048, ANCILLARY)
            except BlockingIOError:
                return
            if data[:4] == MAGIC:
                self._control(i, data)
                continue
            ts = 0.0
            for level, kind, cdata in ancillary:
                if level == socket.SOL_SOCKET:
                    if kind == SO_TIMESTAMPNS:
                        seconds, nanoseconds = TIMESPEC.unpack_from(cdata)
                        ts = seconds + nanoseconds * 1e-9
                    elif kind == SO_RXQ_OVFL:
                        self.drops[i] = U32.unpack_from(cdata)[0]
            if not ts:
                ts = time.time()
            if ts > self.stop_at:
                self.past_stop[i] = True
                continue
            if self.pending:
                self._switch_if_due(ts)
            seq = rtp_sequence(data)
            highest = self.highest[i]
            self.highest[i] = seq if highest < 0 else max(highest, highest + seq_delta(highest & 0xFFFF, seq))
            window = self.window
            last = self.last_ts[i]
            self.last_ts[i] = ts
            if window is None:
                continue
            window.received[i] += 1
            if last:
                gap = ts - last
                if gap > window.max_gap[i]:
                    window.max_gap[i] = gap
                if gap > self.gap_s and len(window.stalls) < self.MAX_STALLS:
                    window.stalls.append((last, ts, self.global_index[i]))
            lag = time.time() - ts
            if lag > window.max_lag:
                window.max_lag = lag

    def _control(self, i: int, data: bytes) -> None:
        messages = self.messages[i]
        try:
            envelope = parse_envelope(data)
            if not envelope.verify(messages.key):
                return
            body = envelope.json()
        except ProtocolError:
            return
        if envelope.type is MessageType.COMMAND:
            seq = body.get("seq")
            if isinstance(seq, int) and (i, seq) not in self._acked_commands:
                self._acked_commands.add((i, seq))
                self.commands_acked += 1
            if isinstance(seq, int):
                self._send(i, messages.command_ack(seq))
            return
        if envelope.type is not MessageType.ACK:
            return
        if isinstance(body.get("cookie"), str):
            messages.cookie = body["cookie"]
        if body.get("verified") is False:
            self._send(i, messages.subscribe())
        elif body.get("expires_s"):
            self.acked[i] = True

    def results(self) -> list[dict[str, Any]]:
        out = []
        timed = [i for i, t in enumerate(self.timed) if t]
        for w in self.done:
            out.append({
                "label": w.label, "start": w.start,
                "max_gap": {self.global_index[i]: w.max_gap[i] for i in timed},
                "received": sum(w.received[i] for i in timed),
                "hearing": sum(1 for i in timed if w.received[i]),
                "lost": sum(max(0, (w.highest_at_end[i] - w.highest_at_start[i]) - w.received[i]) for i in timed
                            if w.highest_at_start[i] >= 0),
                "drops": sum(w.drops_at_end[i] - w.drops_at_start[i] for i in timed),
                "stalls": w.stalls, "max_lag": w.max_lag})
        return out

    def close(self) -> None:
        for i, sock in enumerate(self.sockets):
            self._send(i, self.messages[i].unsubscribe())
            sock.close()
        self.poller.close()


def receiver_main(conn: Any, devices: list[tuple[int, str, bytes, str, bool]], server: tuple[str, int],
                  gap_s: float, limit_s: float) -> None:
    """A receiver process: subscribe, report, then read until told to stop (or limit_s passes)."""
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID prints where it is
    receiver = Receiver(devices, server, gap_s)
    try:
        conn.send(("acked", receiver.subscribe_until_acked(60.0)))
        import select

        receiver.poller.register(conn.fileno(), select.EPOLLIN)
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and receiver._receive(1.0, conn):
            pass
        receiver.finish()
        conn.send(("results", receiver.results(), receiver.commands_acked))
    finally:
        receiver.close()
        conn.close()


class Swarm:
    """The loudspeakers split over receiver processes (round-robin, so each process has every channel)."""

    def __init__(self, devices: list[tuple[str, bytes, str]], timed: set[int], server: tuple[str, int],
                 processes: int, gap_s: float, limit_s: float) -> None:
        context = multiprocessing.get_context("fork")  # no threads exist yet in this process
        self.workers: list[tuple[Any, Any]] = []
        for p in range(processes):
            share = [(i, d, k, c, i in timed) for i, (d, k, c) in enumerate(devices) if i % processes == p]
            parent, child = context.Pipe()
            process = context.Process(target=receiver_main, args=(child, share, server, gap_s, limit_s),
                                      daemon=True)
            process.start()
            child.close()
            self.workers.append((process, parent))

    def wait_acked(self, timeout_s: float = 90.0) -> int:
        total = 0
        for _, conn in self.workers:
            if not conn.poll(timeout_s):
                raise RuntimeError("a receiver process did not finish subscribing")
            total += conn.recv()[1]
        return total

    def boundary(self, label: str, at: float) -> None:
        for _, conn in self.workers:
            conn.send(("window", label, at))

    def cpu_seconds(self) -> float:
        total = 0.0
        for process, _ in self.workers:
            try:
                total += sum(process_cpu_seconds(process.pid))
            except OSError:
                pass
        return total

    def stop(self, at: float) -> tuple[dict[str, dict[str, Any]], int]:
        for _, conn in self.workers:
            conn.send(("stop", at))
        merged: dict[str, dict[str, Any]] = {}
        commands = 0
        for _, conn in self.workers:
            if not conn.poll(30):
                raise RuntimeError("a receiver process did not report")
            _, windows, acked = conn.recv()
            commands += acked
            for w in windows:
                m = merged.setdefault(w["label"], {"max_gap": {}, "received": 0, "hearing": 0, "lost": 0,
                                                   "drops": 0, "stalls": [], "max_lag": 0.0})
                m["max_gap"].update(w["max_gap"])
                for key in ("received", "hearing", "lost", "drops"):
                    m[key] += w[key]
                m["stalls"] += w["stalls"]
                m["max_lag"] = max(m["max_lag"], w["max_lag"])
        return merged, commands

    def close(self) -> None:
        for process, conn in self.workers:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
            conn.close()


# --------------------------------------------------------------------------- the operators

@dataclass
class Call:
    kind: str
    start: float            # wall time sent
    seconds: float
    status: int | str
    size: int


class Api:
    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1"
        self.token = token
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def call(self, kind: str, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json", timeout_s: float = 60.0) -> tuple[int | str, bytes]:
        request = urllib.request.Request(self.base + path, data=body, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": content_type})
        start, t0 = time.time(), time.monotonic()
        status: int | str
        data = b""
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                data = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            status, data = error.code, error.read()
        except (OSError, urllib.error.URLError) as error:
            status = type(error).__name__
        with self._lock:
            self.calls.append(Call(kind, start, time.monotonic() - t0, status, len(data)))
        return status, data


def write_upload(path: Path, seconds: float = 180.0, rate: int = 44100) -> None:
    """A 3-minute programme as an editor exports it: 44.1 kHz stereo 16-bit WAV (about 32 MB), speech-like
    (tones under a syllable-rate envelope, a little noise), so the server decodes, resamples, folds to mono,
    measures loudness and re-encodes it."""
    rng = np.random.default_rng(1)
    with soundfile.SoundFile(str(path), "w", samplerate=rate, channels=2, subtype="PCM_16") as out:
        for start in range(0, int(seconds * rate), rate * 10):
            t = (start + np.arange(min(rate * 10, int(seconds * rate) - start))) / rate
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
            voice = 0.2 * np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 0.3 * t)) * t) * envelope
            noise = 0.01 * rng.standard_normal(len(t))
            out.write(np.stack([voice + noise, 0.8 * voice + noise], axis=1).astype(np.float32))


TASKS = ("report-json", "report-csv", "edits", "upload", "alert", "listings")


def run_storm(api: Api, *, speakers: list[str], upload: Path, year_from: float, year_to: float,
              deadline: float, tasks: list[str]) -> list[threading.Thread]:
    """Start the operator storm (one thread per operator task); every task stops at `deadline` (monotonic)."""
    period = f"from={int(year_from)}&to={int(year_to)}"

    def left() -> float:
        return deadline - time.monotonic()

    def reports(fmt: str) -> None:
        api.call(f"report {fmt}", "GET", f"/reports/broadcast?{period}" + ("&format=csv" if fmt == "csv" else ""),
                 timeout_s=max(1.0, left()))

    def edits() -> None:
        rng = random.Random(10)
        for device in rng.sample(speakers, min(50, len(speakers))):
            if left() <= 0:
                return
            api.call("PATCH loudspeaker", "PATCH", f"/loudspeakers/{device}",
                     json.dumps({"volume": rng.randrange(40, 101)}).encode(), timeout_s=max(1.0, left()))

    def media() -> None:
        api.call("POST media (3 min WAV)", "POST", "/media?zone=province&title=Ch%C6%B0%C6%A1ng%20tr%C3%ACnh"
                 "&filename=storm.wav", upload.read_bytes(), "audio/wav", timeout_s=max(1.0, left()))

    def alert() -> None:
        status, body = api.call("POST alert (TTS)", "POST", "/alerts", json.dumps({
            "title": "Cảnh báo bão", "zones": ["commune-0"], "text": ALERT_TEXT, "repeat": 1}).encode(),
            timeout_s=max(1.0, left()))
        if status != 201:
            return
        alert_id = json.loads(body)["id"]
        while left() > 0:  # the storm lasts while the alert is on air (its command rounds included)
            time.sleep(1.0)
            status, body = api.call("GET alert", "GET", f"/alerts/{alert_id}", timeout_s=max(1.0, left()))
            if status != 200 or json.loads(body).get("status") != "on_air":
                return

    def listings() -> None:
        for _ in range(5):
            for kind, path in (("GET broadcasts", f"/broadcasts?{period}&limit=500"),
                               ("GET audit", "/audit?limit=500"), ("GET loudspeakers", "/loudspeakers?limit=500")):
                if left() <= 0:
                    return
                api.call(kind, "GET", path, timeout_s=max(1.0, left()))

    functions = {"report-json": lambda: reports("json"), "report-csv": lambda: reports("csv"), "edits": edits,
                 "upload": media, "alert": alert, "listings": listings}
    threads = [threading.Thread(target=functions[task], daemon=True) for task in tasks]
    for thread in threads:
        thread.start()
    return threads


class Probe(threading.Thread):
    """GET /api/v1/me every 100 ms (a console's steady polling), one request at a time."""

    def __init__(self, api: Api, limit_s: float) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.limit_s = limit_s
        self.stopping = threading.Event()
        self.calls: list[Call] = []

    def run(self) -> None:
        end = time.monotonic() + self.limit_s
        probe = Api(0, self.api.token)
        probe.base = self.api.base
        while not self.stopping.is_set() and time.monotonic() < end:
            t0 = time.monotonic()
            probe.call("GET me", "GET", "/me", timeout_s=30.0)
            self.stopping.wait(max(0.0, 0.1 - (time.monotonic() - t0)))
        self.calls = probe.calls


# --------------------------------------------------------------------------- the database

def seed_database(db: Path, *, session_rows: int, broadcast_rows: int, now: float) -> None:
    """A year of history written straight into the server's SQLite file (the server is stopped): sessions
    for every loudspeaker spread over the past year, programmes on every channel."""
    con = sqlite3.connect(str(db), timeout=30)
    try:
        for table, needed in (("speaker_sessions", {"loudspeaker", "zone", "channel", "started_at", "ended_at"}),
                              ("broadcast_log", {"channel", "zone", "kind", "item", "started_at", "ended_at",
                                                 "started_by", "outcome"})):
            columns = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
            if not needed <= columns:
                raise RuntimeError(f"{table} has columns {sorted(columns)}; the seeding writes {sorted(needed)}")
        speakers = con.execute("SELECT id, zone, channel FROM loudspeakers ORDER BY id").fetchall()
        channels = con.execute("SELECT id, zone FROM channels ORDER BY id").fetchall()
        rng = np.random.default_rng(8)
        start = now - YEAR_S
        span = YEAR_S - 3600.0
        per = -(-session_rows // len(speakers))
        slot = span / per
        rows = np.arange(session_rows)
        who = rows % len(speakers)
        began = start + ((rows // len(speakers)) + rng.uniform(0.0, 0.2, session_rows)) * slot
        ended = began + slot * rng.uniform(0.5, 0.8, session_rows)
        with con:
            con.executemany("INSERT INTO speaker_sessions (loudspeaker, zone, channel, started_at, ended_at) "
                            "VALUES (?,?,?,?,?)",
                            ((*speakers[w], b, e) for w, b, e in zip(who.tolist(), began.tolist(), ended.tolist(),
                                                                     strict=True)))
            per_channel = max(1, broadcast_rows // len(channels))
            kinds = ["loop", "scheduled", "scheduled", "live", "alert"]
            log = []
            for channel, zone in channels:
                starts = np.sort(rng.uniform(start, now - 3600.0, per_channel))
                for k, (b, length) in enumerate(zip(starts.tolist(), rng.uniform(300, 3600, per_channel).tolist(),
                                                    strict=True)):
                    log.append((channel, zone, kinds[k % len(kinds)], f"seed-{k}", b, b + length, "seed",
                                "completed"))
            con.executemany("INSERT INTO broadcast_log (channel, zone, kind, item, started_at, ended_at, "
                            "started_by, outcome) VALUES (?,?,?,?,?,?,?,?)", log[:broadcast_rows])
    finally:
        con.close()


# --------------------------------------------------------------------------- one row

def percentiles(values: list[float], *qs: float) -> list[float]:
    return [float(np.percentile(values, q)) for q in qs] if values else [float("nan")] * len(qs)


def steal_seconds() -> float:
    """CPU time the hypervisor gave to others, all CPUs (/proc/stat): a virtual machine's pauses show here."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def scrape(server: ServerProcess) -> dict[str, Any]:
    """The server's counters now; a server too busy to answer within 30 s gives NaN (shown as n/a)."""
    samples = {}
    missed: float | None = float("nan")
    try:
        samples = parse_metrics(server.get_text("/metrics", timeout_s=30))
        missed = metric_total(samples, "broadcaster_ticks_missed_total")
        if missed is None:
            missed = float(server.get_json("/healthz").get("ticks_missed", float("nan")))
    except OSError:
        pass
    return {"missed": missed, "lateness": histogram_buckets(samples, "broadcaster_tick_lateness_seconds"),
            "cpu": sum(tree_cpu_seconds(server.process.pid)), "steal": steal_seconds(), "wall": time.monotonic()}


def stall_events(stalls: list[tuple[float, float, int]], calls: list[Call]) -> list[dict[str, Any]]:
    """Gaps over the threshold merged into events (overlapping in time), worst first, each with the storm
    requests that were in flight during it."""
    events: list[dict[str, Any]] = []
    for start, end, device in sorted(stalls):
        if events and start <= events[-1]["end"]:
            e = events[-1]
            e["end"] = max(e["end"], end)
            e["worst"] = max(e["worst"], end - start)
            e["speakers"].add(device)
        else:
            events.append({"start": start, "end": end, "worst": end - start, "speakers": {device}})
    for e in events:
        e["in_flight"] = sorted({c.kind for c in calls if c.start <= e["end"] and c.start + c.seconds >= e["start"]})
    return sorted(events, key=lambda e: -e["worst"])


def run_one(n: int, args: argparse.Namespace) -> dict[str, Any]:
    per_channel = n // CHANNELS
    n = per_channel * CHANNELS
    python = args.server_python
    root = Path(args.server_root).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="stalls-"))
    server: ServerProcess | None = None
    swarm: Swarm | None = None
    probe: Probe | None = None
    try:
        config = write_config(tmp, speakers_per_channel=per_channel, channels=CHANNELS, keepalive_s=KEEPALIVE_S,
                              extra={"storage": {"path": str(tmp / "var" / "broadcaster.db"),
                                                 "secret_file": str(tmp / "var" / "secret.key"),
                                                 "media_dir": str(tmp / "var" / "media")}})
        token = admin_token(config, python=python, root=root)
        log = tmp / "server.log"
        server = ServerProcess(config, python=python, root=root, stderr_path=log)  # creates schema, seeds devices
        server.stop()
        t0 = time.monotonic()
        now = time.time()
        seed_database(tmp / "var" / "broadcaster.db", session_rows=args.session_rows,
                      broadcast_rows=args.broadcast_rows, now=now)
        seeded_s = time.monotonic() - t0
        upload = tmp / "storm.wav"
        write_upload(upload)
        server = ServerProcess(config, python=python, root=root, stderr_path=log)
        devices = [(f"spk-{c}-{i}", speaker_key(i).encode(), f"ch-{c}") for c in range(CHANNELS)
                   for i in range(per_channel)]
        step = max(1, -(-n // args.timed)) if args.timed else n + 1
        timed = set(range(0, n, step))
        limit_s = 60 + args.warmup_s + args.quiet_s + args.storm_max_s + 60
        swarm = Swarm(devices, timed, ("127.0.0.1", server.udp_port), args.receivers, args.gap_ms / 1000, limit_s)
        acked = swarm.wait_acked()
        if acked < n:
            raise RuntimeError(f"only {acked} of {n} loudspeakers were acknowledged")
        online = server.wait_online(n, timeout_s=30)
        api = Api(server.http_port, token)
        probe = Probe(api, limit_s)
        probe.start()
        time.sleep(args.warmup_s)

        windows: dict[str, dict[str, Any]] = {}
        quiet_at = time.time()
        swarm.boundary("quiet", quiet_at)
        m0, s0 = scrape(server), swarm.cpu_seconds()
        time.sleep(args.quiet_s)
        m1, s1 = scrape(server), swarm.cpu_seconds()
        storm_at = time.time()
        swarm.boundary("storm", storm_at)
        deadline = time.monotonic() + args.storm_max_s
        threads = run_storm(api, speakers=[d[0] for d in devices], upload=upload, year_from=now - YEAR_S,
                            year_to=now + 86400, deadline=deadline, tasks=args.tasks)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + 5)
        storm_s = time.monotonic() - m1["wall"]
        unfinished = sum(thread.is_alive() for thread in threads)
        time.sleep(args.tail_s)
        m2, s2 = scrape(server), swarm.cpu_seconds()
        end_at = time.time()
        gaps, commands_acked = swarm.stop(end_at)
        probe.stopping.set()
        probe.join(35)
        storm_calls = list(api.calls)
        for label, (ma, mb, sa, sb, w0, w1) in {"quiet": (m0, m1, s0, s1, quiet_at, storm_at),
                                                 "storm": (m1, m2, s1, s2, storm_at, end_at)}.items():
            g = gaps.get(label, {"max_gap": {}, "received": 0, "hearing": 0, "lost": 0, "drops": 0, "stalls": [],
                                 "max_lag": 0.0})
            wall = mb["wall"] - ma["wall"]
            per_speaker = [v * 1000 for v in g["max_gap"].values()]
            lateness = histogram_quantile(0.99, ma["lateness"], mb["lateness"]) if mb["lateness"] else None
            calls = storm_calls if label == "storm" else []
            probes = [c for c in probe.calls if w0 <= c.start < w1]
            windows[label] = {
                "seconds": wall, "timed": len(per_speaker), "hearing": g["hearing"],
                "gap_p50": percentiles(per_speaker, 50)[0], "gap_max": max(per_speaker, default=float("nan")),
                "over": sum(1 for v in per_speaker if v > args.gap_ms),
                "missed": mb["missed"] - ma["missed"],
                "lateness_p99_ms": None if lateness is None else lateness * 1000,
                "api": percentiles([c.seconds * 1000 for c in calls], 50, 99), "api_n": len(calls),
                "api_errors": sum(1 for c in calls if not (isinstance(c.status, int) and c.status < 400)),
                "probe": percentiles([c.seconds * 1000 for c in probes], 50, 99), "probe_n": len(probes),
                "probe_max": max((c.seconds * 1000 for c in probes), default=float("nan")),
                "server_cpu": (mb["cpu"] - ma["cpu"]) / wall, "swarm_cpu": (sb - sa) / wall,
                "steal": mb["steal"] - ma["steal"],
                "drops": g["drops"], "lost": g["lost"], "max_lag_ms": g["max_lag"] * 1000,
                "events": stall_events(g["stalls"], calls)}
        return {"n": n, "storm_at": storm_at, "acked": acked, "online": online, "windows": windows,
                "calls": storm_calls,
                "storm_s": storm_s, "unfinished": unfinished, "seeded_s": seeded_s,
                "commands_acked": commands_acked}
    finally:
        if probe is not None:
            probe.stopping.set()
        if swarm is not None:
            swarm.close()
        if server is not None:
            server.stop()
        if args.keep_log and (tmp / "server.log").exists():
            shutil.copy(tmp / "server.log", args.keep_log)
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the table

def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def label_of(root: Path) -> str:
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + (" + changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return str(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speakers", type=int, nargs="+", default=[1000], help="N per row (1000 5000)")
    parser.add_argument("--session-rows", type=int, default=1_000_000)
    parser.add_argument("--broadcast-rows", type=int, default=50_000)
    parser.add_argument("--timed", type=int, default=1000,
                        help="loudspeakers whose every packet is timed, spread evenly (the rest only subscribe)")
    parser.add_argument("--receivers", type=int, default=1, help="receiver processes for the loudspeakers")
    parser.add_argument("--gap-ms", type=float, default=80.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--quiet-s", type=float, default=10.0)
    parser.add_argument("--storm-max-s", type=float, default=120.0)
    parser.add_argument("--tail-s", type=float, default=2.0, help="measured after the last storm request")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS),
                        help="the storm's operator tasks (one alone tells which request causes a gap)")
    parser.add_argument("--server-root", default=str(ROOT), help="checkout whose server runs (default this one)")
    parser.add_argument("--server-python", default=sys.executable, help="python with that checkout installed")
    parser.add_argument("--label", default=None, help="the server column (default: its git commit)")
    parser.add_argument("--keep-log", default=None, help="copy the server's stderr here")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is missing (the alert's TTS): scripts/system-deps.sh espeak-ng")
    raise_fd_limit(max(args.speakers) + 512)
    if any(n > args.timed for n in args.speakers):
        check_filter()
    label = args.label or label_of(Path(args.server_root))
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}; server: {label} "
          f"({args.server_root}); {args.session_rows:,} session rows, {args.broadcast_rows:,} broadcast rows; "
          f"{CHANNELS} channels, 20 ms frames; {args.receivers} receiver process(es); storm: {' '.join(args.tasks)}",
          flush=True)
    rows, details = [], []
    for n in args.speakers:
        r = run_one(n, args)
        for window in ("quiet", "storm"):
            w = r["windows"][window]
            lat = "n/a" if w["lateness_p99_ms"] is None else f"{w['lateness_p99_ms']:.1f}"
            api = (f"{fmt(w['api'][0])} / {fmt(w['api'][1])} ({w['api_n']}"
                   + (f", {w['api_errors']} failed" if w["api_errors"] else "") + ")") if w["api_n"] else "–"
            rows.append(f"| {label} | {r['n']} ({w['timed']} timed, {r['online']} online) | {window} "
                        f"{w['seconds']:.0f} s | {fmt(w['gap_p50'])} / {fmt(w['gap_max'])} | {w['over']} "
                        f"| {fmt(w['missed'], 0)} | {lat} | {api} | {fmt(w['probe'][0])} / {fmt(w['probe'][1])} "
                        f"/ {fmt(w['probe_max'])} | {w['server_cpu']:.2f} | {w['swarm_cpu']:.2f} "
                        f"| {w['drops']} / {w['lost']} / {w['max_lag_ms']:.0f} | {w['steal']:.2f} |")
        details.append(r)
    print()
    print("| server | loudspeakers | window | largest gap ms: median of per-loudspeaker max / max "
          f"| loudspeakers with a gap > {args.gap_ms:g} ms | ticks missed | tick lateness p99 ms "
          "| storm API p50 / p99 ms (requests) | probe /me p50 / p99 / max ms | server CPU s/s | swarm CPU s/s "
          "| receiver drops / lost / max read lag ms | steal s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    for r in details:
        storm = r["windows"]["storm"]
        print(f"\nN={r['n']}: seeding {r['seeded_s']:.1f} s; storm {r['storm_s']:.1f} s"
              + (f", {r['unfinished']} task(s) cut at the bound" if r["unfinished"] else "")
              + f"; alert commands acknowledged by the swarm: {r['commands_acked']}")
        print("| storm request | n | p50 ms | max ms | statuses |")
        print("|---|---|---|---|---|")
        kinds: dict[str, list[Call]] = {}
        for c in r["calls"]:
            kinds.setdefault(c.kind, []).append(c)
        for kind, calls in sorted(kinds.items(), key=lambda kv: -max(c.seconds for c in kv[1])):
            statuses = sorted({str(c.status) for c in calls})
            print(f"| {kind} | {len(calls)} | {np.percentile([c.seconds for c in calls], 50) * 1000:.0f} "
                  f"| {max(c.seconds for c in calls) * 1000:.0f} | {', '.join(statuses)} |")
        events = storm["events"]
        if events:
            t_storm = r["storm_at"]
            print(f"\nworst stall events in the storm ({len(events)} in all; time from the storm's start):")
            for e in events[:5]:
                print(f"- {e['worst'] * 1000:.0f} ms from {e['start'] - t_storm:+.2f} s, {len(e['speakers'])} "
                      f"loudspeakers; in flight: {', '.join(e['in_flight']) or 'nothing'}")


if __name__ == "__main__":
    main()
