"""Relay benchmark: a scheduled half hour of an HLS upstream on loudspeakers, the upstream killed
and restored in the middle.

The upstream is ffmpeg's hls muxer (AAC in MPEG-TS, 4 s segments by default, a 660 Hz tone)
served on loopback; the channel's idle programme is a 440 Hz tone. A programme relays the
upstream for ``--minutes``; half-way the upstream (encoder and HTTP server) is killed for
``--outage-s`` and started again, as a restarted station would be (its media sequence back at
0). Simulated loudspeakers count every RTP packet; a decoding loudspeaker records the minute
around the kill and the minute around the return, so the figures say what was heard: how long
the relay's buffer carried on, how long it was silent before the idle programme took over, how
long after the restore the relay was back. The reference, measured in the same run: ffmpeg
reading the same playlist (``ffmpeg -i URL -f null``) for the same half hour, whose CPU time
the relay worker's (until the kill) is given as a ratio to. All traffic stays on 127.0.0.1.

    .venv/bin/python benchmarks/relay.py                 # 30 minutes, a 60 s outage
    .venv/bin/python benchmarks/relay.py --minutes 3 --outage-s 20
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
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    ROOT,
    HlsUpstream,
    ServerProcess,
    admin_token,
    machine,
    process_cpu_seconds,
    speaker_key,
    write_config,
)
from benchmarks.soak import descendants  # noqa: E402
from broadcaster.codecs.pcm import dominant_frequency  # noqa: E402
from broadcaster.speaker.swarm import SpeakerSwarm  # noqa: E402

RELAY_HZ, IDLE_HZ = 660.0, 440.0


def call(port: int, token: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = response.read()
        return json.loads(payload) if payload else None


def record(server: ServerProcess, seconds: float, out: Path) -> None:
    """A real loudspeaker (the speaker CLI: subscribe, jitter buffer, Opus decode) recording to a file."""
    subprocess.run([sys.executable, "-m", "broadcaster", "speaker", "--device", "spk-0-0", "--key", speaker_key(0),
                    "--channel", "ch-0", "--server", f"127.0.0.1:{server.udp_port}", "--duration", str(seconds),
                    "--out", str(out)], capture_output=True, timeout=seconds + 60, cwd=ROOT, check=True)


def timeline(wav: Path, step_s: float = 0.25) -> list[tuple[float, str]]:
    """(seconds from the recording's start, what is heard) at each change: relay, idle or silence."""
    audio, rate = soundfile.read(str(wav), dtype="float32")
    window, step = int(0.5 * rate), int(step_s * rate)
    changes: list[tuple[float, str]] = []
    for at in range(0, len(audio) - window, step):
        part = audio[at:at + window]
        if float(np.sqrt(np.mean(part ** 2))) < 0.01:
            what = "silence"
        else:
            f = dominant_frequency(part)
            what = "relay" if abs(f - RELAY_HZ) < 8 else "idle" if abs(f - IDLE_HZ) < 8 else "mixed"
        if what != "mixed" and (not changes or changes[-1][1] != what):
            changes.append((at / rate, what))
    return changes


def first(changes: list[tuple[float, str]], what: str, after: float = 0.0) -> float | None:
    return next((t for t, w in changes if w == what and t >= after), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument("--segment-s", type=int, default=4)
    parser.add_argument("--speakers", type=int, default=50)
    args = parser.parse_args()
    duration = args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        upstream = HlsUpstream(directory / "hls", RELAY_HZ, segment_s=args.segment_s)
        upstream.start()
        config = write_config(directory, speakers_per_channel=args.speakers, extra={"relay": {"allow_private": True}})
        token = admin_token(config)
        server = ServerProcess(config, stderr_path=directory / "server.log")
        swarm = SpeakerSwarm([(f"spk-0-{i}", speaker_key(i).encode()) for i in range(1, args.speakers)], "ch-0",
                             ("127.0.0.1", server.udp_port))
        reference: subprocess.Popen[bytes] | None = None
        try:
            relay = call(server.http_port, token, "POST", "/api/v1/relays",
                         {"name": "VOV1", "url": upstream.url, "zone": "province"})
            start = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")) + timedelta(seconds=15)
            call(server.http_port, token, "POST", "/api/v1/programmes", {
                "title": "Tiếp sóng VOV1", "zones": ["province"], "relay": relay["id"], "duration_s": duration,
                "start": start.replace(tzinfo=None).isoformat(timespec="seconds")})
            starts_at = time.time() + (start.timestamp() - time.time())
            swarm.subscribe_until_acked()
            listening = threading.Thread(target=swarm.run, args=(duration + 40,), kwargs={"keepalive_s": 5.0})
            listening.start()
            time.sleep(max(0.0, starts_at - time.time()))
            reference = subprocess.Popen(["ffmpeg", "-v", "quiet", "-nostdin", "-i", upstream.url, "-ac", "1",
                                          "-ar", "48000", "-f", "null", "-"], stdout=subprocess.DEVNULL)
            time.sleep(duration / 2 - 20)
            workers = [p for p in descendants(server.process.pid)
                       if b"broadcaster.relay.worker" in Path(f"/proc/{p}/cmdline").read_bytes()]
            around_kill = directory / "kill.wav"
            recorder = threading.Thread(target=record, args=(server, 20 + args.outage_s + 5, around_kill))
            recorder.start()
            time.sleep(20)
            worker_cpu = sum(process_cpu_seconds(workers[0])) if workers else float("nan")
            reference_cpu = sum(process_cpu_seconds(reference.pid))  # ffmpeg ends when its upstream does
            killed_at = time.monotonic()
            upstream.stop()
            time.sleep(args.outage_s)
            upstream.start()
            recorder.join()
            return_offset = time.monotonic() - killed_at  # when the second recording starts, from the kill
            around_return = directory / "return.wav"
            record(server, 30, around_return)
            time.sleep(max(0.0, starts_at + duration + 5 - time.time()))
            listening.join(60)
            log = [e for e in call(server.http_port, token, "GET", "/api/v1/broadcasts?limit=20")["items"]
                   if e["kind"] == "scheduled"]
        finally:
            if reference is not None:
                reference.kill()
            swarm.close()
            server.stop()
            upstream.stop()
        kill_changes = timeline(around_kill)
        return_changes = timeline(around_return)
    kill_t = 20.0
    silent_from = first(kill_changes, "silence", kill_t)
    idle_from = first(kill_changes, "idle", kill_t)
    relay_back = first(kill_changes, "relay", (idle_from or kill_t) + 0.5)
    if relay_back is None:
        back = first(return_changes, "relay")
        relay_back = None if back is None else kill_t + return_offset + back
    lost = sum(max(0, h - f + 1 - r) for f, h, r in zip(swarm.first, swarm.highest, swarm.received, strict=True)
               if f >= 0)
    received = sum(swarm.received)
    print(f"machine: {machine()}")
    print(f"relay of HLS ({args.segment_s} s segments) for {args.minutes:g} min, upstream killed for "
          f"{args.outage_s:g} s half-way; {args.speakers - 1} simulated loudspeakers + 1 decoding")
    print(f"heard around the kill (s from the kill): {[(round(t - kill_t, 2), w) for t, w in kill_changes]}")
    print(f"heard around the return (s from its recording's start): {[(round(t, 2), w) for t, w in return_changes]}")
    print("| relay carried on after the kill (its buffer) | silence before the idle programme | relay back after "
          "the restore | RTP packets received / lost | worker CPU / ffmpeg CPU, same playlist, same time |")
    print("|---|---|---|---|---|")
    carried = None if silent_from is None and idle_from is None else (min(x for x in (silent_from, idle_from)
                                                                           if x is not None) - kill_t)
    silence = None if idle_from is None or silent_from is None or silent_from > idle_from else idle_from - silent_from
    back_after = None if relay_back is None else relay_back - kill_t - args.outage_s
    print(f"| {fmt(carried)} s | {fmt(silence)} s | {fmt(back_after)} s | {received} / {lost} "
          f"| {worker_cpu:.1f} s / {reference_cpu:.1f} s = {worker_cpu / max(reference_cpu, 1e-9):.2f}× |")
    for entry in log[:1]:
        print(f"broadcast log: {entry['item']!r} outcome={entry['outcome']} "
              f"{(entry['ended_at'] or 0) - entry['started_at']:.0f} s; detail: {entry['detail']}")


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    main()
