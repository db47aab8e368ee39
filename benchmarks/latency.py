"""Live latency benchmark: a studio click to the loudspeaker playing it, end to end.

It starts the real server (one channel, one loudspeaker), a studio console written here (an
Icecast PUT of Ogg/Opus, one page every --page-ms of captured audio, sent when the page's last
sample has been "captured", as a console on a microphone does) and the reference loudspeaker
(broadcaster.speaker.client with its 120 ms jitter buffer, on the reactor). The studio's audio
is silence with a click every 3 s; each click's capture time is known to the sample, and
the loudspeaker notes when the frame holding it leaves its jitter buffer for playout. The
delay of each click is playout minus capture.

--burst-s sends that much audio at once when the console connects (a console that buffered
while connecting, or a network stall catching up): it used to stay as delay for the whole
session. All traffic is on 127.0.0.1; the run is bounded by --seconds.

    .venv/bin/python benchmarks/latency.py --page-ms 200 --seconds 40
    .venv/bin/python benchmarks/latency.py --page-ms 200 --burst-s 2 --seconds 60
    .venv/bin/python benchmarks/latency.py --root ../old --python ../old/.venv/bin/python   # another checkout
"""

from __future__ import annotations

import argparse
import base64
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ServerProcess, machine, speaker_key, write_config  # noqa: E402
from broadcaster.codecs.ogg import OggOpusWriter  # noqa: E402
from broadcaster.codecs.opus import OpusEncoder, OpusSettings  # noqa: E402

RATE = 48000
CLICK_EVERY_S = 3.0  # longer than any delay the server allows (live.max_delay_ms 2.5 s), so pairs are certain
PASSWORD = "latency-bench-1"


def click_positions(seconds: float) -> list[int]:
    return [int((0.5 + k * CLICK_EVERY_S) * RATE) for k in range(int((seconds - 1.0) / CLICK_EVERY_S))]


def studio_signal(seconds: float) -> np.ndarray:
    """Silence with 10 ms clicks (a 2 kHz burst) at click_positions."""
    signal = np.zeros(int(seconds * RATE), dtype=np.float32)
    burst = (0.5 * np.sin(2 * np.pi * 2000 * np.arange(480) / RATE)).astype(np.float32)
    burst[0] = 0.5  # the onset is its first sample, whatever the detector's threshold
    for at in click_positions(seconds):
        signal[at:at + burst.size] = burst
    return signal


class Studio(threading.Thread):
    """An Icecast source client: pages of captured audio, each sent once it is complete."""

    def __init__(self, port: int, user: str, page_ms: int, burst_s: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.user, self.page_ms, self.burst_s, self.seconds = port, user, page_ms, burst_s, seconds
        self.capture_start = 0.0  # monotonic time of sample 0's capture
        self.error: str | None = None

    def run(self) -> None:
        try:
            self._run()
        except OSError as exc:
            self.error = str(exc)

    def _run(self) -> None:
        signal = studio_signal(self.seconds)
        encoder = OpusEncoder(OpusSettings(frame_samples=960, bitrate=64000))
        page_samples = RATE * self.page_ms // 1000
        writer = OggOpusWriter(serial=1234, pre_skip=encoder.lookahead, page_samples=page_samples)
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        auth = base64.b64encode(f"{self.user}:{PASSWORD}".encode()).decode()
        sock.sendall(f"PUT /ingest/ch-0 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
                     f"Content-Type: audio/ogg\r\nIce-Public: 0\r\n\r\n".encode())
        reply = sock.recv(4096)
        if not reply.startswith(b"HTTP/1.") or b" 200 " not in reply.split(b"\r\n", 1)[0]:
            raise OSError(f"the server refused the source: {reply[:200]!r}")
        sock.sendall(writer.header_pages)
        connected = time.monotonic()
        burst = int(self.burst_s * RATE) // page_samples * page_samples
        self.capture_start = connected - burst / RATE  # the burst was captured before the connection
        for start in range(0, signal.size - page_samples + 1, page_samples):
            due = self.capture_start + (start + page_samples) / RATE
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            page = b""
            for i in range(start, start + page_samples, 960):
                made = writer.add_packet(encoder.encode(signal[i:i + 960]), 960)
                if made is not None:
                    page += made
            sock.sendall(page)
        sock.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from twisted.internet import reactor

    from broadcaster.speaker.client import SpeakerClient, SubscriptionMessages, parse_server

    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), speakers_per_channel=1, channels=1, keepalive_s=2.0)
        config = _without_loops(config)
        python = args.python or sys.executable
        root = Path(args.root) if args.root else None
        subprocess.run([python, "-m", "broadcaster", "user", "add", "op-0", "--role", "admin", "--password",
                        "-c", str(config)], input=PASSWORD + "\n", text=True, check=True, capture_output=True,
                       cwd=root or Path(__file__).resolve().parents[1])
        server = ServerProcess(config, python=args.python, root=root)
        played: list[tuple[float, np.ndarray]] = []
        client = SpeakerClient(SubscriptionMessages("spk-0-0", speaker_key(0).encode(), "ch-0"),
                               parse_server(f"127.0.0.1:{server.udp_port}"), reactor,
                               sink=lambda frame: played.append((time.monotonic(), frame)))
        reactor.listenUDP(0, client)  # type: ignore[attr-defined]
        studio = Studio(server.http_port, "op-0", args.page_ms, args.burst_s, args.seconds)
        reactor.callLater(2.0, studio.start)  # type: ignore[attr-defined]
        reactor.callLater(args.seconds + 3.0, reactor.stop)  # type: ignore[attr-defined]
        try:
            reactor.run()  # type: ignore[attr-defined]
        finally:
            client.stop()
            server.stop()
    if studio.error:
        raise SystemExit(f"studio: {studio.error}")
    heard = onsets(played)
    sent = [studio.capture_start + at / RATE for at in click_positions(args.seconds)]
    delays = match(sent, heard)
    return {"delays": delays, "clicks": len(sent), "heard": len(heard)}


def _without_loops(config: Path) -> Path:
    import yaml

    document = yaml.safe_load(config.read_text())
    for channel in document["channels"]:
        channel.pop("loop", None)  # silence, so the clicks are all the loudspeaker hears
    config.write_text(yaml.safe_dump(document))
    return config


def onsets(played: list[tuple[float, np.ndarray]]) -> list[float]:
    """Playout time of each click's first sample: its frame's playout time plus its offset in it."""
    found: list[float] = []
    quiet = True
    for at, frame in played:
        loud = np.flatnonzero(np.abs(frame) > 0.1)
        if loud.size and quiet:
            found.append(at + loud[0] / RATE)
        quiet = loud.size == 0
    return found


def match(sent: list[float], heard: list[float]) -> list[tuple[float, float]]:
    """(capture time from the first click, delay) for each click heard, paired in order with the
    last click sent before it (clicks are 3 s apart, more than the live buffer can hold)."""
    pairs = []
    for played in heard:
        before = [s for s in sent if s <= played]
        if before:
            captured = before[-1]
            pairs.append((captured - sent[0], played - captured))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--page-ms", type=int, default=200, help="the studio's Ogg page duration")
    parser.add_argument("--burst-s", type=float, default=0.0, help="audio sent at once when connecting")
    parser.add_argument("--seconds", type=float, default=40.0, help="studio audio sent (bounded to 300)")
    parser.add_argument("--python", help="the python of another checkout's venv (its server is measured)")
    parser.add_argument("--root", help="that checkout's directory")
    args = parser.parse_args()
    args.seconds = min(args.seconds, 300.0)
    result = run(args)
    delays = result["delays"]
    print(f"machine: {machine()}; pages of {args.page_ms} ms, burst {args.burst_s:g} s, "
          f"{args.seconds:g} s; {result['heard']} of {result['clicks']} clicks heard")
    print("| part of the session | clicks | delay p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|")
    for name, low, high in (("first 10 s", 0.0, 10.0), ("10 s to the end", 10.0, 1e9),
                            ("last 10 s", args.seconds - 11.0, 1e9)):
        part = sorted(d for t, d in delays if low <= t < high)
        if part:
            p95 = part[min(len(part) - 1, int(0.95 * len(part)))]
            print(f"| {name} | {len(part)} | {statistics.median(part) * 1000:.0f} | {p95 * 1000:.0f} "
                  f"| {part[-1] * 1000:.0f} |")


if __name__ == "__main__":
    main()
