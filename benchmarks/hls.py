"""What re-encoding for HLS and MP3 costs control, and whether its thread delays the reactor.

Not a server run (unlike the other benchmarks): the pieces control runs, in this process.

1. CPU per second of audio of one channel's Segmenter (Opus decode, AAC encode, MPEG-TS)
   and Mp3Pipeline (Opus decode, MP3 encode), fed one-second Ogg pages as the core sends
   them; the reference is the bare PyAV encoder on the same PCM, in the same run.
2. A stand-in for the reactor (a loop that sleeps 1 ms and records how late it wakes) while
   the transcode thread works through N channels' pages, against the same loop alone: the
   GIL the thread holds shows as lateness here.

    .venv/bin/python benchmarks/hls.py --channels 1 10 40 --seconds 10
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from broadcaster.codecs.encoders import AacEncoder, Mp3Encoder
from broadcaster.codecs.ogg import OggOpusWriter
from broadcaster.codecs.opus import OpusEncoder
from broadcaster.control.hls import Segmenter
from broadcaster.control.mp3 import Mp3Pipeline

RATE = 48000


def pages(seconds: int) -> tuple[np.ndarray, list[bytes]]:
    t = np.arange(seconds * RATE) / RATE
    pcm = (0.35 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 3100 * t)).astype(np.float32)
    encoder = OpusEncoder()
    writer = OggOpusWriter(serial=1, pre_skip=encoder.lookahead, page_samples=RATE)
    out = []
    for start in range(0, pcm.size, 960):
        page = writer.add_packet(encoder.encode(pcm[start:start + 960]), 960)
        if page:
            out.append(page)
    return pcm, out


def per_second_ms(work: object, inputs: list, seconds: int) -> float:
    started = time.process_time()
    for item in inputs:
        work(item)  # type: ignore[operator]
    return (time.process_time() - started) * 1000 / seconds


def reactor_lateness(duration_s: float, busy: threading.Event | None = None) -> tuple[float, float]:
    """p99 and max lateness (ms) of a 1 ms sleep loop, while ``busy`` is set (or for duration_s)."""
    late = []
    end = time.monotonic() + duration_s
    while time.monotonic() < end and (busy is None or busy.is_set()):
        wanted = time.monotonic() + 0.001
        time.sleep(0.001)
        late.append(max(0.0, time.monotonic() - wanted) * 1000)
    late.sort()
    return late[int(len(late) * 0.99)] if late else 0.0, late[-1] if late else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 10, 40])
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    pcm, ogg = pages(args.seconds)
    seconds = len(ogg)
    chunks = [pcm[i:i + RATE] for i in range(0, seconds * RATE, RATE)]
    print("| work | ms CPU per second of audio |\n|---|---|")
    print(f"| bare PyAV AAC encode | {per_second_ms(AacEncoder(64000).encode, chunks, seconds):.1f} |")
    print(f"| Segmenter (Opus decode + AAC + MPEG-TS) | {per_second_ms(Segmenter(4, 64000).feed, ogg, seconds):.1f} |")
    print(f"| bare PyAV MP3 encode | {per_second_ms(Mp3Encoder(64000).encode, chunks, seconds):.1f} |")
    print(f"| Mp3Pipeline (Opus decode + MP3) | {per_second_ms(Mp3Pipeline(64000).feed, ogg, seconds):.1f} |")
    print()
    print("| channels on the thread | thread s per audio s | reactor p99 ms (alone) | reactor max ms (alone) |")
    print("|---|---|---|---|")
    for count in args.channels:
        work = [Segmenter(4, 64000).feed for _ in range(count)]
        busy = threading.Event()
        busy.set()
        spent: list[float] = []

        def transcode(work: list = work, busy: threading.Event = busy, spent: list[float] = spent) -> None:
            started = time.thread_time()
            for page in ogg:  # as fast as it goes: the worst case for the reactor
                for feed in work:
                    feed(page)
            spent.append(time.thread_time() - started)
            busy.clear()

        alone = reactor_lateness(2.0)
        thread = threading.Thread(target=transcode)
        thread.start()
        loaded = reactor_lateness(600.0, busy)
        thread.join()
        print(f"| {count} | {spent[0] / seconds:.3f} | {loaded[0]:.2f} ({alone[0]:.2f}) | "
              f"{loaded[1]:.2f} ({alone[1]:.2f}) |")


if __name__ == "__main__":
    main()
