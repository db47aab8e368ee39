"""Why the core is a process: frame timing under a busy control side, core in a
thread of the control process versus the core in its own process.

The same core loop (broadcaster.core.process.CoreLoop) runs N channels, each
with a tone and one HTTP listener (so every channel mixes and encodes every
frame), either in a thread of this process or as `python -m
broadcaster.core.process`. Meanwhile this process's main thread does what
control does when an operator pulls a report: pure-Python work holding the
GIL (building and summing rows). The core's own histogram of tick lateness
and its missed-tick count are read from the core at the end. No network
traffic at all: the UDP socket is bound to 127.0.0.1 and nobody subscribes.

    .venv/bin/python benchmarks/isolation.py
    .venv/bin/python benchmarks/isolation.py --channels 40 --seconds 10
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, parse_metrics  # noqa: E402
from broadcaster.config import AudioConfig, HttpConfig, SpeakerPolicy  # noqa: E402
from broadcaster.core import commands as c  # noqa: E402
from broadcaster.core.commands import CoreSettings  # noqa: E402
from broadcaster.core.link import FrameReader, encode  # noqa: E402
from broadcaster.core.process import CoreLoop  # noqa: E402
from broadcaster.core.sources.tone import ToneSpec  # noqa: E402


def busy_python(stop: threading.Event) -> int:
    """Control at its worst: Python that holds the GIL (a report built row by row)."""
    rounds = 0
    while not stop.is_set():
        rows = [{"zone": f"z{i % 124}", "started_at": float(i), "ended_at": float(i + 30)} for i in range(20000)]
        totals: dict[str, float] = {}
        for row in rows:
            totals[row["zone"]] = totals.get(row["zone"], 0.0) + row["ended_at"] - row["started_at"]
        rounds += 1
    return rounds


def run(mode: str, channels: int, seconds: float, load: bool) -> dict[str, Any]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    child: subprocess.Popen[bytes] | None = None
    thread = None
    if mode == "process":
        child = subprocess.Popen([sys.executable, "-m", "broadcaster.core.process", str(theirs.fileno()),
                                  str(udp.fileno())], pass_fds=(theirs.fileno(), udp.fileno()))
        theirs.close()
    else:
        loop = CoreLoop(theirs, udp)
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()
    settings = CoreSettings(AudioConfig(), HttpConfig(), SpeakerPolicy())
    messages: list[Any] = [settings]
    for i in range(channels):
        messages += [c.AddChannel(c.ChannelSpec(id=f"ch-{i}", name=f"ch {i}", zone="z")),
                     c.AddInput(f"t-{i}", (f"ch-{i}",), ToneSpec(440.0 + i), priority=20),
                     c.SetListeners(f"ch-{i}", 1)]
    ours.sendall(b"".join(encode(m) for m in messages))
    reader = FrameReader()
    stop_reading = threading.Event()
    answers: list[Any] = []

    def drain() -> None:  # control reads the link (pages, status), as the real one does
        ours.settimeout(0.2)
        while not stop_reading.is_set():
            try:
                data = ours.recv(1 << 20)
            except TimeoutError:
                continue
            if not data:
                return
            answers.extend(e for e in reader.feed(data) if isinstance(e, c.Answer))

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    time.sleep(2.0)  # warm up: channels built, encoders running
    ours.sendall(encode(c.Query(1, "metrics")))
    time.sleep(0.5)
    before = parse_metrics(answers[-1].value.decode()) if answers else {}
    stop = threading.Event()
    rounds = 0
    started = time.monotonic()
    if load:
        timer = threading.Timer(seconds, stop.set)
        timer.start()
        rounds = busy_python(stop)
    else:
        time.sleep(seconds)
    elapsed = time.monotonic() - started
    ours.sendall(encode(c.Query(2, "metrics")))
    deadline = time.monotonic() + 5
    while len(answers) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    after = parse_metrics(answers[-1].value.decode())
    stop_reading.set()
    drainer.join(5)
    ours.close()
    if child is not None:
        child.wait(10)
    if thread is not None:
        thread.join(10)
    udp.close()
    return {"mode": mode, "load": load, "elapsed": elapsed, "rounds": rounds, **lateness(before, after)}


def lateness(before: dict[Any, float], after: dict[Any, float]) -> dict[str, float]:
    """Ticks, ticks missed and the p50/p99 bucket bounds of the core's lateness histogram, between two reads."""
    name = "broadcaster_tick_lateness_seconds"
    count = after.get((name + "_count", ()), 0.0) - before.get((name + "_count", ()), 0.0)
    cumulative = sorted((float(dict(labels)["le"]), value - before.get((sample, labels), 0.0))
                        for (sample, labels), value in after.items() if sample == name + "_bucket")

    def quantile(q: float) -> float:
        return next((le for le, n in cumulative if count and n >= q * count), float("inf"))

    missed = after.get(("broadcaster_ticks_missed_total", ()), 0.0) - before.get(
        ("broadcaster_ticks_missed_total", ()), 0.0)
    return {"ticks": count, "missed": missed, "p50_le_ms": quantile(0.5) * 1000, "p99_le_ms": quantile(0.99) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"{machine()}; {args.channels} channels encoding every 20 ms frame, {args.seconds:.0f} s per row\n")
    print("| core runs in | control busy with Python | ticks | ticks missed | lateness p50 ≤ | lateness p99 ≤ |"
          " busy rounds done |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("thread", "process"):
        for load in (False, True):
            r = run(mode, args.channels, args.seconds, load)
            print(f"| {mode} | {'yes' if load else 'no'} | {r['ticks']:.0f} | {r['missed']:.0f} | "
                  f"{r['p50_le_ms']:g} ms | {r['p99_le_ms']:g} ms | {r['rounds'] if load else '-'} |", flush=True)


if __name__ == "__main__":
    main()
