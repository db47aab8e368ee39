"""Fan-out benchmark: N simulated loudspeakers on loopback subscribed to one channel.

For each (frame_ms, N) it starts the real server, subscribes N loudspeakers
(SpeakerSwarm, the reference client's protocol code), waits until all are
online, then for a bounded time measures the server's CPU seconds per second,
CPU microseconds per loudspeaker-second, packets per second, and loss and
late packets on the loudspeaker side. All traffic stays on 127.0.0.1.

    .venv/bin/python benchmarks/fanout.py                  # the full table
    .venv/bin/python benchmarks/fanout.py --counts 100 --frames 20 --seconds 5

--drop (root) measures the server alone. On loopback the kernel delivers each datagram into
the receiving socket inside the sender's system call, so the receivers' work is charged to
the server. With --drop the benchmark runs in a network namespace of its own (unshare --net)
and tc on its lo sinks the RTP packets (UDP from the server's port whose first payload byte
has RTP version 2) on egress, before delivery, except to a sample of 20 loudspeakers that
still count what arrives. A bare sendmmsg loop (core/fanout.py's
MmsgFanout alone, sending a packet of the same size to the same addresses every frame, in
this process) runs under the same filter in the same namespace as the reference, and the
row gives server CPU per packet sent over the loop's.

    sudo .venv/bin/python benchmarks/fanout.py --drop --counts 1000 5000 10000 --frames 20
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ServerProcess, machine, raise_fd_limit, speaker_key, write_config  # noqa: E402
from broadcaster.speaker.swarm import SpeakerSwarm  # noqa: E402

KEEPALIVE_S = 5.0  # as a real device with the default configuration


def measured(server: ServerProcess, swarm: SpeakerSwarm, n: int, warmup_s: float, seconds: float,
             online_timeout_s: float = 10.0) -> tuple[int, float, tuple[float, float], int, dict[str, int]]:
    """Subscribe the swarm, warm up, then measure for ``seconds``: (online, elapsed, server (user,
    system) CPU seconds, ticks missed, the swarm's totals)."""
    swarm.subscribe_until_acked()
    online = server.wait_online(n, timeout_s=online_timeout_s)
    swarm.run(warmup_s, keepalive_s=KEEPALIVE_S)
    swarm.reset_counts()
    missed0 = server.get_json("/healthz")["ticks_missed"]
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    swarm.run(seconds, keepalive_s=KEEPALIVE_S)
    cpu1, t1 = server.cpu_seconds(), time.monotonic()
    missed = server.get_json("/healthz")["ticks_missed"] - missed0
    return online, t1 - t0, (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]), missed, swarm.totals()


def run_one(n: int, frame_ms: int, seconds: float, fanout: str, warmup_s: float = 2.0) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(write_config(Path(tmp), speakers_per_channel=n, frame_ms=frame_ms, fanout=fanout,
                                            keepalive_s=KEEPALIVE_S))
        swarm = SpeakerSwarm([(f"spk-0-{i}", speaker_key(i).encode()) for i in range(n)], "ch-0",
                             ("127.0.0.1", server.udp_port))
        try:
            online, elapsed, cpu, missed, totals = measured(server, swarm, n, warmup_s, seconds)
        finally:
            swarm.close()
            server.stop()
    user_per_s = cpu[0] / elapsed
    cpu_per_s = user_per_s + cpu[1] / elapsed
    return {"n": n, "frame_ms": frame_ms, "online": online, "seconds": elapsed,
            "cpu_per_s": cpu_per_s, "user_per_s": user_per_s, "us_per_speaker_s": cpu_per_s / n * 1e6,
            "pps": totals["received"] / elapsed, "expected": totals["expected"],
            "lost": totals["lost"], "late": totals["late"], "hearing": totals["hearing"],
            "wanted_pps": n * 1000 / frame_ms, "missed": missed}


SAMPLE = 20  # loudspeakers whose packets are not dropped (--drop): they check delivery


def tc(*args: str) -> None:
    subprocess.run(["tc", *args], check=True, capture_output=True)


def drop_rtp_from(ports: list[int], keep: list[int]) -> None:
    """On lo, sink UDP from these source ports that carries RTP v2, except to the ``keep`` ports.

    This kernel has no tc drop action (act_gact) nor a prio qdisc, so the sink is an htb class
    of 8 bit/s with a one-packet queue: what is classified into it is dropped at enqueue, before
    loopback delivery (a few packets a run pass its token bucket; only the sample is counted)."""
    tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "10")
    tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit")
    tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:20", "htb", "rate", "8bit", "ceil", "8bit")
    tc("qdisc", "add", "dev", "lo", "parent", "1:20", "handle", "20:", "pfifo", "limit", "1")
    for port in keep:
        tc("filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
           "match", "ip", "protocol", "17", "0xff", "match", "ip", "dport", str(port), "0xffff", "flowid", "1:10")
    for port in ports:  # offset 28: the first byte after a 20-byte IP header and the 8-byte UDP header
        tc("filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "2", "u32",
           "match", "ip", "protocol", "17", "0xff", "match", "ip", "sport", str(port), "0xffff",
           "match", "u8", "0x80", "0xc0", "at", "28", "flowid", "1:20")


def sunk_packets() -> int:
    """Packets that went into the sink class so far (dropped, and the few it passed)."""
    out = subprocess.run(["tc", "-s", "qdisc", "show", "dev", "lo"], capture_output=True, text=True).stdout
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("qdisc pfifo 20:") and i + 1 < len(lines):
            stats = lines[i + 1]
            passed = int(stats.split(" pkt", 1)[0].rsplit(" ", 1)[1])
            dropped = int(stats.split("dropped", 1)[1].split(",", 1)[0].strip())
            return passed + dropped
    return 0


def bare_loop(sock: socket.socket, addresses: list[tuple[str, int]], size: int, frame_ms: int,
              seconds: float) -> float:
    """CPU µs per packet of MmsgFanout alone: one send call per frame to every address."""
    from broadcaster.core.fanout import MmsgFanout

    fanout = MmsgFanout(sock)
    fanout.set_targets(addresses)
    packet = bytes([0x80, 111]) + bytes(size - 2)
    sent = 0
    start_cpu = time.thread_time()
    next_frame = time.monotonic()
    end = next_frame + seconds
    while next_frame < end:
        ok, _failed = fanout.send(packet)
        sent += ok
        next_frame += frame_ms / 1000
        time.sleep(max(0.0, next_frame - time.monotonic()))
    return (time.thread_time() - start_cpu) / max(1, sent) * 1e6


def run_dropped(n: int, frame_ms: int, seconds: float, processes: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server_section = {"host": "127.0.0.1", "core_processes": processes or "auto"}
        server = ServerProcess(write_config(Path(tmp), speakers_per_channel=n, frame_ms=frame_ms,
                                            keepalive_s=KEEPALIVE_S, extra={"server": server_section}))
        swarm = SpeakerSwarm([(f"spk-0-{i}", speaker_key(i).encode()) for i in range(n)], "ch-0",
                             ("127.0.0.1", server.udp_port))
        reference = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        reference.bind(("127.0.0.1", 0))
        reference.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        addresses = [s.getsockname() for s in swarm.sockets]
        drop_rtp_from([server.udp_port, reference.getsockname()[1]], [a[1] for a in addresses[:SAMPLE]])
        try:
            swarm.subscribe_until_acked()
            online = server.wait_online(n, timeout_s=10)
            swarm.run(2.0, keepalive_s=KEEPALIVE_S)
            swarm.reset_counts()
            missed0 = server.get_json("/healthz")["ticks_missed"]
            sunk0 = sunk_packets()
            cpu0, t0 = server.cpu_seconds(), time.monotonic()
            swarm.run(seconds, keepalive_s=KEEPALIVE_S)
            cpu1, t1 = server.cpu_seconds(), time.monotonic()
            missed = server.get_json("/healthz")["ticks_missed"] - missed0
            sunk = sunk_packets() - sunk0
            sample = sample_totals(swarm)
        finally:
            swarm.close()
            server.stop()
        size = 12 + 80  # an RTP header and a 32 kb/s Opus frame of 20 ms, about
        try:
            bare_us = bare_loop(reference, addresses, size, frame_ms, min(seconds, 10.0))
        finally:
            reference.close()
            tc("qdisc", "del", "dev", "lo", "root")
    elapsed = t1 - t0
    cpu_per_s = (cpu1[0] - cpu0[0] + cpu1[1] - cpu0[1]) / elapsed
    sent = sunk + sample["received"]
    return {"n": n, "frame_ms": frame_ms, "online": online, "cpu_per_s": cpu_per_s,
            "us_per_packet": cpu_per_s * elapsed / max(1, sent) * 1e6, "bare_us": bare_us,
            "sent_share": sent / (n * 1000 / frame_ms * elapsed), "missed": missed,
            "sample_received": sample["received"], "sample_lost": sample["lost"],
            "sample_wanted": SAMPLE * 1000 / frame_ms * elapsed}


def sample_totals(swarm: SpeakerSwarm) -> dict[str, int]:
    first, highest = swarm.first[:SAMPLE], swarm.highest[:SAMPLE]
    expected = sum(h - f + 1 for f, h in zip(first, highest, strict=True) if h >= 0)
    received = sum(swarm.received[:SAMPLE])
    return {"received": received, "lost": max(0, expected - received)}


def main_dropped(args: argparse.Namespace) -> None:
    if os.environ.get("BENCH_NETNS") != "1":
        if os.geteuid() != 0:
            raise SystemExit("--drop makes a network namespace and tc filters: run it as root")
        command = ["unshare", "--net", "env", "BENCH_NETNS=1", sys.executable, *sys.argv]
        raise SystemExit(subprocess.run(command).returncode)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    raise_fd_limit(max(args.counts) + 256)
    print(f"machine: {machine()}; in a network namespace, RTP dropped on lo's egress but to {SAMPLE} "
          f"loudspeakers; core processes: {args.processes}; {args.seconds:g} s per row", flush=True)
    print("| frame | loudspeakers | online | server CPU s/s | µs CPU per packet | bare sendmmsg loop µs per packet "
          "| ratio | packets sent (of wanted) | sample received (lost) | ticks missed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for frame_ms in args.frames:
        for n in args.counts:
            r = run_dropped(n, frame_ms, min(args.seconds, 60.0), args.processes)
            print(f"| {frame_ms} ms | {n} | {r['online']} | {r['cpu_per_s']:.3f} | {r['us_per_packet']:.2f} "
                  f"| {r['bare_us']:.2f} | {r['us_per_packet'] / r['bare_us']:.2f} | {r['sent_share'] * 100:.0f} % "
                  f"| {r['sample_received']} of {r['sample_wanted']:.0f} ({r['sample_lost']}) | {r['missed']} |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--frames", type=int, nargs="+", default=[20, 60], choices=[20, 40, 60])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per row (bounded)")
    parser.add_argument("--fanout", choices=["auto", "loop"], default="auto",
                        help="server.udp_fanout: auto = sendmmsg, loop = one sendto per loudspeaker")
    parser.add_argument("--drop", action="store_true",
                        help="measure the server alone: RTP dropped on egress in a network namespace (root)")
    parser.add_argument("--processes", type=int, default=0, help="server.core_processes with --drop (0: auto)")
    args = parser.parse_args()
    if args.drop:
        main_dropped(args)
        return
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
