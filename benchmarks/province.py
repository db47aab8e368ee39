"""A province's day, compressed: Vĩnh Long after the 2025 merger on one server.

124 communes, a channel each (a looping background programme), 20 loudspeakers a commune
(2,480, the receiver process of stalls.py), 300 HTTP listeners spread over
the channels, and through the real API, in --seconds (default 180) instead of a day:

- the 05:00 programme on every channel (a 20 s programme scheduled on the province),
- one live studio on ch-0 (ffmpeg, Ogg/Opus, 200 ms pages, re-connecting every minute),
- an emergency alert on 30 communes mid-way (speech made by espeak-ng),
- the 17:00 programme on every channel,
- an operator's API calls throughout (GET /api/v1/loudspeakers, /api/v1/alerts, /channels).

Reported: the server's CPU (control and every core process, s/s of the 2 cores), ticks missed,
the alert's accepted-to-first-frame time over its 30 channels (the server's own figure, p50 /
p99 / max), the API's latency (p50 / p99 / max), and what the loudspeakers lost (packets, gaps
over 80 ms) among the two loudspeakers a commune whose every packet is timed (the others
subscribe and keep alive, and the kernel drops their audio at the socket: one Python process
cannot read 124,000 packets a second). All traffic is on 127.0.0.1; the run is bounded.

    .venv/bin/python benchmarks/province.py
    .venv/bin/python benchmarks/province.py --communes 30 --per-commune 10 --listeners 50 --seconds 90
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ServerProcess, machine, raise_fd_limit  # noqa: E402
from benchmarks.soak import ALERT_TEXT, TIMEZONE, Api, Listeners, Speakers, Studio, prepare, upload_media  # noqa: E402

ALERT_COMMUNES = 30
TIMED_PER_COMMUNE = 2  # loudspeakers a commune whose every packet is timed (the rest drop audio in the kernel)


class Operator(threading.Thread):
    """An operator's console polling the API: one call every 0.5 s, each timed."""

    PATHS = ("/api/v1/loudspeakers?limit=100", "/api/v1/alerts", "/channels")

    def __init__(self, api: Api) -> None:
        super().__init__(daemon=True, name="operator")
        self.api = api
        self.stopping = threading.Event()
        self.times: list[float] = []
        self.failed = 0

    def run(self) -> None:
        k = 0
        while not self.stopping.wait(0.5):
            start = time.monotonic()
            status, _ = self.api.call("GET", self.PATHS[k % len(self.PATHS)], timeout_s=30)
            self.times.append(time.monotonic() - start)
            self.failed += not (isinstance(status, int) and status < 400)
            k += 1


def schedule(api: Api, media_id: str, title: str, in_s: float) -> Any:
    start = (datetime.now(TIMEZONE) + timedelta(seconds=in_s)).replace(tzinfo=None)
    return api.call("POST", "/api/v1/programmes", json.dumps({
        "title": title, "zones": ["province"], "media": [media_id],
        "start": start.isoformat(timespec="seconds")}).encode())[0]


def quantiles(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{statistics.median(ordered) * 1000:.0f} / {p99 * 1000:.0f} / {ordered[-1] * 1000:.0f}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.communes * args.per_commune
    tmp = Path(tempfile.mkdtemp(prefix="province-"))
    config, token = prepare(tmp, args.per_commune, args.communes, args.listeners)
    server = ServerProcess(config, stderr_path=tmp / "server.log")
    events: list[str] = []
    speakers = listeners = studio = operator = None
    try:
        speakers = Speakers(n, ("127.0.0.1", server.udp_port), args.seconds + 300, channels=args.communes,
                            timed_per_channel=TIMED_PER_COMMUNE)
        acked = speakers.wait_acked(120.0)
        online = server.wait_online(n, timeout_s=60)
        api = Api(server.http_port, token)
        media_id = upload_media(api, tmp)
        listeners = Listeners(server.http_port, args.listeners, args.seconds + 60, channels=args.communes)
        studio = Studio(server.http_port, tmp / "ffmpeg.log", args.seconds)
        operator = Operator(api)
        listeners.start()
        operator.start()
        time.sleep(5.0)  # everyone on: the day starts
        missed0 = server.get_json("/healthz")["ticks_missed"]
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        speakers.boundary("day", time.time())
        alert: dict[str, Any] = {}
        plan = [(0.05, "05:00 programme"), (0.2, "studio on air"), (0.45, "alert"), (0.6, "17:00 programme")]
        for share, what in plan:
            time.sleep(max(0.0, t0 + share * args.seconds - time.monotonic()))
            if what.endswith("programme"):
                events.append(f"{time.monotonic() - t0:6.1f} s {what}: {schedule(api, media_id, what, 5)}")
            elif what == "studio on air":
                studio.start()
                events.append(f"{time.monotonic() - t0:6.1f} s {what}")
            else:
                status, body = api.call("POST", "/api/v1/alerts", json.dumps({
                    "title": "Cảnh báo lũ", "priority": "khan-cap", "repeat": 1, "text": ALERT_TEXT,
                    "zones": [f"commune-{c}" for c in range(ALERT_COMMUNES)]}).encode())
                alert = body if isinstance(body, dict) else {}
                events.append(f"{time.monotonic() - t0:6.1f} s {what}: {status}")
        time.sleep(max(0.0, t0 + args.seconds - time.monotonic()))
        cpu1, t1 = server.cpu_seconds(), time.monotonic()
        missed = server.get_json("/healthz")["ticks_missed"] - missed0
        speakers.stop(time.time())
        first_frames: list[float] = []
        if alert.get("id"):
            _, info = api.call("GET", f"/api/v1/alerts/{alert['id']}")
            if isinstance(info, dict):
                first_frames = [ms / 1000 for ms in info.get("first_frame_ms", {}).values()]
        speakers.collect(wait_for="day", timeout_s=60.0)  # 2,480 sockets drained after the stop can take a while
        day = speakers.windows.get("day")
        return {"n": n, "acked": acked, "online": online, "cpu": (cpu1[0] - cpu0[0] + cpu1[1] - cpu0[1]) / (t1 - t0),
                "missed": missed, "first_frames": first_frames, "alert_channels": len(alert.get("channels", [])),
                "api": operator.times, "api_failed": operator.failed, "day": day, "events": events,
                "listeners": listeners.streaming, "listener_refusals": dict(listeners.refusals),
                "studio_started": studio.started, "api_errors": api.errors[-5:]}
    finally:
        for thread in (operator, listeners, studio):
            if thread is not None:
                thread.stopping.set()
        if studio is not None:
            studio.kill(hard=True)
        if speakers is not None:
            speakers.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--communes", type=int, default=124)
    parser.add_argument("--per-commune", type=int, default=20)
    parser.add_argument("--listeners", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=180.0, help="the compressed day (bounded to 1800)")
    args = parser.parse_args()
    args.seconds = min(max(args.seconds, 60.0), 1800.0)
    if args.communes < ALERT_COMMUNES:
        raise SystemExit(f"the alert goes to {ALERT_COMMUNES} communes: --communes must be at least that")
    raise_fd_limit(args.communes * args.per_commune + args.listeners + 512)
    r = run(args)
    day = r["day"]
    print(f"machine: {machine()}")
    print(f"{r['n']} loudspeakers on {args.communes} channels ({r['acked']} acked, {r['online']} online), "
          f"{r['listeners']} of {args.listeners} listeners streaming at the end; a {args.seconds:g} s day")
    for event in r["events"]:
        print("  " + event)
    print("| server CPU s/s (2 cores) | ticks missed | alert accepted→first frame ms, p50 / p99 / max "
          "(channels) | API ms, p50 / p99 / max (calls, failed) | packets received | lost | gaps > 80 ms |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {r['cpu']:.2f} | {r['missed']} | {quantiles(r['first_frames'])} ({len(r['first_frames'])} of "
          f"{r['alert_channels']}) | {quantiles(r['api'])} ({len(r['api'])}, {r['api_failed']}) "
          f"| {day.received if day else '?'} | {day.lost if day else '?'} "
          f"| {day.over_gap if day else '?'} loudspeakers, max {day.max_gap_ms if day else 0:.0f} ms |")
    if r["api_errors"] or r["listener_refusals"]:
        print(f"API errors: {r['api_errors']}; listener refusals: {r['listener_refusals']}")


if __name__ == "__main__":
    main()
