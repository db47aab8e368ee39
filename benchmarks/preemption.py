"""Preemption benchmark: how long after an alert is accepted does its first frame reach the loudspeakers?

5,000 simulated loudspeakers across 50 channels (one commune each) on loopback;
a scheduled programme plays on every channel; then one API call alerts half
of the communes. Each loudspeaker notes when the first packet of the alert
arrives (the RTP marker bit flags a higher class taking over) and the
figures are taken from the moment the API call returned. The other half must
never see it. All traffic stays on 127.0.0.1; every loop is bounded.

    .venv/bin/python benchmarks/preemption.py
    .venv/bin/python benchmarks/preemption.py --channels 10 --per-channel 50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, ServerProcess, machine, raise_fd_limit, speaker_key, write_config  # noqa: E402
from broadcaster.speaker.swarm import SpeakerSwarm  # noqa: E402


def request(port: int, token: str, method: str, path: str, body: bytes, content_type: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=60) as response:
        return dict(json.loads(response.read()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--per-channel", type=int, default=100)
    parser.add_argument("--frame-ms", type=int, default=20, choices=[20, 40, 60])
    parser.add_argument("--processes", type=int, default=0, help="server.core_processes (0: auto)")
    parser.add_argument("--core-nice", type=int, default=0,
                        help="server.core_nice (default 0: the simulated loudspeakers share the cores)")
    args = parser.parse_args()
    n = args.channels * args.per_channel
    raise_fd_limit(n + 256)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        # core_nice 0: the simulated loudspeakers share these two cores with the server (a province's
        # do not); a core ahead of them for the CPU starves their reads, and the drops would be
        # counted as loudspeakers that never heard the alert.
        config = write_config(directory, speakers_per_channel=args.per_channel, channels=args.channels,
                              frame_ms=args.frame_ms, extra={"server": {
                                  "core_nice": args.core_nice, "core_processes": args.processes or "auto"}})
        token = subprocess.run([sys.executable, "-m", "broadcaster", "user", "add", "admin", "--role", "admin",
                                "--token", "-c", str(config)], capture_output=True, text=True, check=True,
                               cwd=ROOT).stdout.split()[-1]
        server = ServerProcess(config)
        swarm = SpeakerSwarm([(f"spk-{c}-{i}", speaker_key(i).encode()) for c in range(args.channels)
                              for i in range(args.per_channel)],
                             [f"ch-{c}" for c in range(args.channels) for _ in range(args.per_channel)],
                             ("127.0.0.1", server.udp_port))
        try:
            t = np.arange(120 * 48000) / 48000
            programme = directory / "programme.flac"
            soundfile.write(str(programme), (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 48000)
            media = request(server.http_port, token, "POST", "/api/v1/media?zone=province&title=programme",
                            programme.read_bytes(), "audio/flac")
            start = (datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")) + timedelta(seconds=2)).replace(tzinfo=None)
            request(server.http_port, token, "POST", "/api/v1/programmes", json.dumps({
                "title": "Chương trình", "zones": ["province"], "media": [media["id"]],
                "start": start.isoformat(timespec="seconds")}).encode(), "application/json")
            acked = swarm.subscribe_until_acked()
            online = server.wait_online(n, timeout_s=10)
            swarm.run(3.0, keepalive_s=5.0)  # the programme is on air everywhere by now
            targeted = [f"commune-{c}" for c in range(0, args.channels, 2)]
            returned: dict[str, float] = {}

            def alert() -> None:
                reply = request(server.http_port, token, "POST", "/api/v1/alerts", json.dumps({
                    "title": "Bão", "zones": targeted, "text": "Bão số chín.", "repeat": 1}).encode(),
                    "application/json")
                returned["at"] = time.monotonic()
                returned["id"] = reply["id"]

            swarm.marker_after = time.monotonic()
            caller = threading.Thread(target=alert)
            caller.start()
            swarm.run(3.0, keepalive_s=5.0)
            caller.join(30)
            alert_info = request(server.http_port, token, "GET", f"/api/v1/alerts/{returned['id']}", b"", "x")
            called = swarm.marker_after
        finally:
            swarm.close()
            server.stop()
    target_channels = {f"ch-{c}" for c in range(0, args.channels, 2)}
    hit, since_sent, stray, missing = [], [], 0, 0
    for messages, first in zip(swarm.messages, swarm.first_marker, strict=True):
        if messages.channel in target_channels:
            if first is None:
                missing += 1
            else:
                hit.append((first - returned["at"]) * 1000)
                since_sent.append((first - called) * 1000)
        elif first is not None:
            stray += 1
    server_side = sorted(alert_info["first_frame_ms"].values())
    lat, sent = np.array(hit), np.array(since_sent)
    print(f"machine: {machine()}")
    print(f"{n} loudspeakers ({acked} acked, {online} online), {args.channels} channels, frame {args.frame_ms} ms; "
          f"alert on {len(target_channels)} channels; API call took {(returned['at'] - called) * 1000:.1f} ms")
    print("| loudspeakers / channels | targeted, heard | from API return: p50 / p99 / max ms | from API request sent: "
          "p50 / p99 / max ms | untargeted that saw it | server accept→first frame ms (p50 / max over channels) |")
    print("|---|---|---|---|---|---|")
    print(f"| {n} / {args.channels} | {len(hit) + missing}, {len(hit)} | {np.percentile(lat, 50):.1f} / "
          f"{np.percentile(lat, 99):.1f} / {lat.max():.1f} | {np.percentile(sent, 50):.1f} / "
          f"{np.percentile(sent, 99):.1f} / {sent.max():.1f} | {stray} "
          f"| {np.percentile(server_side, 50):.1f} / {max(server_side):.1f} |")


if __name__ == "__main__":
    main()
