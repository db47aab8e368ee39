"""HTTP listener benchmark: the server's CPU per listener-second, side by side with Icecast.

For each listener count N it runs, one after the other in the same sitting:

- broadcaster: one channel looping a 440 Hz tone (32 kb/s Opus, 1 s Ogg pages), N listeners
  on GET /channels/ch-0.ogg (HTTP/1.1, so chunked: what players send);
- Icecast 2 (Debian's icecast2, `make system-bench`) as a peer: one mount fed by ffmpeg with the
  same tone, codec, bitrate and page duration, N listeners on it.

The listeners are plain sockets in this process (an epoll loop that reads and counts bytes).
Each server is measured for --seconds with one listener (what the stream costs before
listeners do: our channel encoding, Icecast taking its source), then with N; reported: CPU
s/s of the server's processes (for Icecast, icecast2 alone: ffmpeg is the studio, like a
console), µs per listener-second of the N - 1 added listeners, and the bytes each listener
got against what the stream carries (32 kb/s; ffmpeg's stream to Icecast carries more).
All traffic is on 127.0.0.1; every run is bounded.

    .venv/bin/python benchmarks/listeners.py                 # 1,000 and 3,000 listeners
    .venv/bin/python benchmarks/listeners.py --counts 500 --seconds 5
    .venv/bin/python benchmarks/listeners.py --python ../old/.venv/bin/python --root ../old   # and another checkout
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ServerProcess, icecast_peer, machine, process_cpu_seconds, raise_fd_limit, write_config  # noqa: E402

BITRATE = 32000


class Listeners:
    """N HTTP clients reading an endless response, counting the bytes each receives."""

    def __init__(self, port: int, path: str, n: int, version: str = "1.1") -> None:
        self.poller = select.epoll()
        self.sockets: dict[int, socket.socket] = {}
        self.received: dict[int, int] = {}
        request = f"GET {path} HTTP/{version}\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n\r\n".encode()
        for _ in range(n):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request)
            sock.setblocking(False)
            self.sockets[sock.fileno()] = sock
            self.received[sock.fileno()] = 0
            self.poller.register(sock.fileno(), select.EPOLLIN)

    def run(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            for fd, _ in self.poller.poll(min(left, 0.2)):
                try:
                    data = self.sockets[fd].recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    self.received[fd] += len(data)
                else:
                    self.poller.unregister(fd)

    def reset(self) -> None:
        for fd in self.received:
            self.received[fd] = 0

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.poller.close()


def measure(pids: list[int], listeners: Listeners | None, seconds: float) -> float:
    """CPU seconds per second of these processes over ``seconds`` (listeners read meanwhile)."""
    before = sum(sum(process_cpu_seconds(pid)) for pid in pids)
    start = time.monotonic()
    if listeners is not None:
        listeners.run(seconds)
    else:
        time.sleep(seconds)
    elapsed = time.monotonic() - start
    return (sum(sum(process_cpu_seconds(pid)) for pid in pids) - before) / elapsed


def server_pids(root: int) -> list[int]:
    pids = [root]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) in pids:
                    pids.append(int(entry.name))
            except (OSError, ValueError):
                continue
    return pids


def run_broadcaster(n: int, seconds: float, python: str | None = None, root: Path | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), speakers_per_channel=0, extra={
            "http": {"page_ms": 1000, "burst_ms": 0, "max_listeners": n + 100,
                     "max_connections_per_address": n + 100},
            "audio": {"bitrate": BITRATE}})
        server = ServerProcess(config, python=python, root=root)
        try:
            pids = server_pids(server.process.pid)
            first = Listeners(server.http_port, "/channels/ch-0.ogg", 1)  # the channel encodes from here on
            first.run(2.0)
            idle = measure(pids, first, seconds)
            listeners = Listeners(server.http_port, "/channels/ch-0.ogg", n - 1)
            try:
                listeners.run(2.0)
                listeners.reset()
                busy = measure(pids, listeners, seconds)
                got = sorted(listeners.received.values())
            finally:
                listeners.close()
                first.close()
        finally:
            server.stop()
    return result(n, seconds, idle, busy, got)


def run_icecast(n: int, seconds: float) -> dict[str, float]:
    with icecast_peer(n + 100, bitrate=BITRATE) as (server, port):
        first = Listeners(port, "/ch-0.ogg", 1)
        first.run(2.0)
        idle = measure([server.pid], first, seconds)
        listeners = Listeners(port, "/ch-0.ogg", n - 1)
        try:
            listeners.run(2.0)
            listeners.reset()
            busy = measure([server.pid], listeners, seconds)
            got = sorted(listeners.received.values())
        finally:
            listeners.close()
            first.close()
    return result(n, seconds, idle, busy, got)


def result(n: int, seconds: float, idle: float, busy: float, got: list[int]) -> dict[str, float]:
    wanted = BITRATE / 8 * seconds
    return {"idle": idle, "busy": busy, "us_per_listener_s": (busy - idle) / max(1, n - 1) * 1e6,
            "median_share": got[len(got) // 2] / wanted, "lowest_share": got[0] / wanted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per run (bounded)")
    parser.add_argument("--python", help="also measure another checkout's server: its venv's python")
    parser.add_argument("--root", help="that checkout's directory")
    args = parser.parse_args()
    seconds = min(args.seconds, 60.0)
    raise_fd_limit(2 * max(args.counts) + 512)
    print(f"machine: {machine()}; 1 s pages, {BITRATE // 1000} kb/s; {seconds:g} s per measurement", flush=True)
    print("| listeners | server | CPU s/s, 1 listener | CPU s/s with listeners | µs per listener-second "
          "| bytes received, median / lowest (of the stream's) | ratio to Icecast |")
    print("|---|---|---|---|---|---|---|")
    for n in args.counts:
        ice = run_icecast(n, seconds)
        rows = [("Icecast 2.4", ice), ("broadcaster", run_broadcaster(n, seconds))]
        if args.root:
            rows.append((f"broadcaster at {args.root}", run_broadcaster(n, seconds, args.python, Path(args.root))))
        for name, r in rows:
            ratio = r["us_per_listener_s"] / ice["us_per_listener_s"] if ice["us_per_listener_s"] > 0 else float("nan")
            print(f"| {n} | {name} | {r['idle']:.3f} | {r['busy']:.3f} | {r['us_per_listener_s']:.1f} "
                  f"| {r['median_share'] * 100:.0f} % / {r['lowest_share'] * 100:.0f} % | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
