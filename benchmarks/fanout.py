"""Fan-out benchmark: N simulated loudspeakers on loopback subscribed to one channel.

For each (frame_ms, N) it starts the real server, subscribes N loudspeakers
(SpeakerSwarm, the reference client's protocol code), waits until all are
online, then for a bounded time measures the server's CPU seconds per second,
CPU microseconds per loudspeaker-second, packets per second, and loss and
late packets on the loudspeaker side. All traffic stays on 127.0.0.1.

    .venv/bin/python benchmarks/fanout.py                  # the full table
    .venv/bin/python benchmarks/fanout.py --counts 100 --frames 20 --seconds 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ServerProcess, machine, raise_fd_limit, speaker_key, write_config  # noqa: E402
from broadcaster.speaker.swarm import SpeakerSwarm  # noqa: E402

KEEPALIVE_S = 5.0  # as a real device with the default configuration


def run_one(n: int, frame_ms: int, seconds: float, fanout: str, warmup_s: float = 2.0) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(write_config(Path(tmp), speakers_per_channel=n, frame_ms=frame_ms, fanout=fanout,
                                            keepalive_s=KEEPALIVE_S))
        swarm = SpeakerSwarm([(f"spk-0-{i}", speaker_key(i).encode()) for i in range(n)], "ch-0",
                             ("127.0.0.1", server.udp_port))
        try:
            swarm.subscribe_until_acked()
            online = server.wait_online(n, timeout_s=5)
            swarm.run(warmup_s, keepalive_s=KEEPALIVE_S)
            swarm.reset_counts()
            missed0 = server.get_json("/healthz")["ticks_missed"]
            cpu0, t0 = server.cpu_seconds(), time.monotonic()
            swarm.run(seconds, keepalive_s=KEEPALIVE_S)
            cpu1, t1 = server.cpu_seconds(), time.monotonic()
            missed = server.get_json("/healthz")["ticks_missed"] - missed0
            totals = swarm.totals()
        finally:
            swarm.close()
            server.stop()
    elapsed = t1 - t0
    user_per_s = (cpu1[0] - cpu0[0]) / elapsed
    cpu_per_s = user_per_s + (cpu1[1] - cpu0[1]) / elapsed
    return {"n": n, "frame_ms": frame_ms, "online": online, "seconds": elapsed,
            "cpu_per_s": cpu_per_s, "user_per_s": user_per_s, "us_per_speaker_s": cpu_per_s / n * 1e6,
            "pps": totals["received"] / elapsed, "expected": totals["expected"],
            "lost": totals["lost"], "late": totals["late"], "hearing": totals["hearing"],
            "wanted_pps": n * 1000 / frame_ms, "missed": missed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--frames", type=int, nargs="+", default=[20, 60], choices=[20, 40, 60])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per row (bounded)")
    parser.add_argument("--fanout", choices=["auto", "loop"], default="auto",
                        help="server.udp_fanout: auto = sendmmsg, loop = one sendto per loudspeaker")
    args = parser.parse_args()
    raise_fd_limit(max(args.counts) + 256)
    print(f"machine: {machine()}; fan-out: {args.fanout}; {args.seconds:g} s per row", flush=True)
    print("| frame | loudspeakers | online | server CPU s/s (user) | µs CPU per loudspeaker-s "
          "| packets/s received (of wanted) | ticks missed | lost | late |")
    print("|---|---|---|---|---|---|---|---|---|")
    for frame_ms in args.frames:
        for n in args.counts:
            r = run_one(n, frame_ms, min(args.seconds, 60.0), args.fanout)
            loss = r["lost"] / r["expected"] * 100 if r["expected"] else 0.0
            print(f"| {frame_ms} ms | {n} | {r['online']} | {r['cpu_per_s']:.3f} ({r['user_per_s']:.3f}) "
                  f"| {r['us_per_speaker_s']:.1f} "
                  f"| {r['pps']:.0f} ({r['pps'] / r['wanted_pps'] * 100:.0f} %) | {r['missed']} "
                  f"| {r['lost']} ({loss:.2f} %) | {r['late']} |", flush=True)


if __name__ == "__main__":
    main()
