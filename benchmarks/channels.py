"""Channel benchmark: how many channels the server mixes, encodes and sends, with one core
process and with several (server.core_processes), against bare libopus in the same run.

For each process count and channel count N it starts the real server with N channels (each
looping a 440 Hz tone, one loudspeaker each), subscribes the N loudspeakers (SpeakerSwarm, on
loopback), warms up, then measures: server CPU seconds per second (control and every core
process), µs of server CPU per channel-frame, ticks missed, and the share of packets the
loudspeakers received. µs per channel-frame divides the server's CPU by the frames it made (the
packets received: one loudspeaker a channel). The reference is the same tone's 20 ms frames
encoded by N libopus encoders in turn in a tight loop in this process (opus_encode_float
straight into a buffer: what a channel-frame can cost at best), measured before and after
every row; the ratio is row / reference.

    .venv/bin/python benchmarks/channels.py                             # the full table
    .venv/bin/python benchmarks/channels.py --processes 1 2 --counts 100 200 --seconds 5
    .venv/bin/python benchmarks/channels.py --counts 100 --python ../old/.venv/bin/python --root ../old
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ServerProcess, machine, raise_fd_limit, speaker_key, write_config  # noqa: E402
from benchmarks.fanout import KEEPALIVE_S, measured  # noqa: E402
from broadcaster.codecs.opus import OpusEncoder, OpusSettings  # noqa: E402
from broadcaster.config import AudioConfig  # noqa: E402
from broadcaster.speaker.swarm import SpeakerSwarm  # noqa: E402


def bare_libopus_us(channels: int, seconds: float = 2.0) -> float:
    """µs of CPU per 20 ms frame of the benchmark's tone, encoded by as many encoders as there
    are channels in turn (as the server does: many encoders' state does not fit the CPU's caches
    as one does), each set up as a channel's is."""
    audio = AudioConfig()
    encoders = [OpusEncoder(OpusSettings(frame_samples=audio.frame_samples, bitrate=audio.bitrate,
                                         complexity=audio.complexity)) for _ in range(channels)]
    t = np.arange(4 * 48000) / 48000
    tone = (0.25 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    frames = [tone[i:i + audio.frame_samples] for i in range(0, tone.size, audio.frame_samples)]
    done = 0
    start = time.process_time()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for frame in frames[:10]:
            for encoder in encoders:
                encoder.encode(frame)
        done += 10 * len(encoders)
        frames = frames[10:] + frames[:10]
    return (time.process_time() - start) / done * 1e6


def run_one(processes: int, n: int, seconds: float, warmup_s: float = 3.0, python: str | None = None,
            root: Path | None = None) -> dict[str, float]:
    """python/root: another checkout's server (one from before server.core_processes: processes 1)."""
    with tempfile.TemporaryDirectory() as tmp:
        server_section: dict[str, object] = {"host": "127.0.0.1"}
        if root is None:
            server_section["core_processes"] = processes
        config = write_config(Path(tmp), speakers_per_channel=1, channels=n, keepalive_s=KEEPALIVE_S,
                              extra={"server": server_section})
        server = ServerProcess(config, python=python, root=root)
        swarm = SpeakerSwarm([(f"spk-{c}-0", speaker_key(0).encode()) for c in range(n)],
                             [f"ch-{c}" for c in range(n)], ("127.0.0.1", server.udp_port))
        try:
            online, elapsed, cpu, missed, totals = measured(server, swarm, n, warmup_s, seconds)
        finally:
            swarm.close()
            server.stop()
    cpu_per_s = (cpu[0] + cpu[1]) / elapsed
    made = max(1, totals["received"])  # one loudspeaker a channel: a packet received is a channel-frame made
    return {"online": online, "cpu_per_s": cpu_per_s, "us_per_channel_frame": cpu_per_s * elapsed / made * 1e6,
            "received": totals["received"] / (n * 50 * elapsed), "lost": totals["lost"], "missed": missed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="server.core_processes")
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 200, 300, 400, 500])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per row (bounded)")
    parser.add_argument("--python", help="the python of another checkout's venv (its server is measured)")
    parser.add_argument("--root", help="that checkout's directory (one core process)")
    args = parser.parse_args()
    root = Path(args.root) if args.root else None
    if root is not None:
        args.processes = [1]
    raise_fd_limit(max(args.counts) + 256)
    print(f"machine: {machine()}; 20 ms frames; {args.seconds:g} s per row", flush=True)
    print("| core processes | channels | online | server CPU s/s | µs CPU per channel-frame "
          "| bare libopus µs per frame (same run) | ratio | received | lost | ticks missed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    capacity: dict[int, int] = {}
    for processes in args.processes:
        for n in args.counts:
            reference = bare_libopus_us(n)
            r = run_one(processes, n, min(args.seconds, 60.0), python=args.python, root=root)
            reference = (reference + bare_libopus_us(n)) / 2
            print(f"| {processes} | {n} | {r['online']} | {r['cpu_per_s']:.3f} | {r['us_per_channel_frame']:.1f} "
                  f"| {reference:.1f} | {r['us_per_channel_frame'] / reference:.2f} "
                  f"| {r['received'] * 100:.1f} % | {r['lost']} | {r['missed']} |", flush=True)
            if r["missed"] == 0 and r["received"] >= 0.999:
                capacity[processes] = max(capacity.get(processes, 0), n)
    for processes, n in capacity.items():
        print(f"{processes} core process(es): up to {n} channels at 0 ticks missed, every packet delivered")
    if 1 in capacity and len(capacity) > 1:
        for processes, n in capacity.items():
            if processes != 1:
                print(f"  {processes} processes / 1: {n / capacity[1]:.2f}x the channels")


if __name__ == "__main__":
    main()
