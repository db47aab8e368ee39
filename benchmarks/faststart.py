"""Fast start: how soon a new listener hears audio, in Chromium and VLC.

Chromium (headless, through selenium and chromedriver: `make bench` installs both) opens a page
of the server's own origin and plays a channel's stream in an <audio> element; the time is from
setting its src to the first `timeupdate` with audio played (currentTime > 0). It is measured
for the first listener of a channel nobody was listening to (with http.keep_burst on, the
default, and off: the channel then wakes up for that listener) and for a second listener.
Icecast 2 (Debian's icecast2) fed by ffmpeg with the same stream is the reference.

VLC 3 (cvlc) joins the stream mid-way and writes what it decodes to a WAV file for 6 s: it
plays if the file holds sound. This is tried for several page durations (http.page_ms).

    .venv/bin/python benchmarks/faststart.py                  # Chromium, then VLC
    .venv/bin/python benchmarks/faststart.py --tries 3 --pages 1000 200
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    ServerProcess,
    icecast_peer,  # noqa: E402
    machine,
    write_config,
)

PLAY_JS = """
const [url, done] = [arguments[0], arguments[arguments.length - 1]];
const audio = new Audio();
const start = performance.now();
const timer = setTimeout(() => done(-1), 20000);
audio.addEventListener('timeupdate', () => {
  if (audio.currentTime > 0) { clearTimeout(timer); done(performance.now() - start); audio.pause(); audio.src = ''; }
});
audio.addEventListener('error', () => { clearTimeout(timer); done(-2); });
audio.src = url;
audio.play().catch(() => done(-3));
"""


def chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
                 "--disable-background-networking", "--no-first-run"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
    driver.set_script_timeout(30)
    return driver


def first_audio_ms(driver: Any, origin: str, url: str) -> float:
    driver.get(origin)
    return float(driver.execute_async_script(PLAY_JS, url))


def broadcaster_times(tries: int, keep_burst: bool, page_ms: int = 1000,
                      burst_ms: int = 10000) -> tuple[list[float], list[float]]:
    """(first listener of an unheard channel, a second listener) in ms, one server per try."""
    first, second = [], []
    driver = chromium()
    try:
        for _ in range(tries):
            with tempfile.TemporaryDirectory() as tmp:
                config = write_config(Path(tmp), speakers_per_channel=0,
                                      extra={"http": {"keep_burst": keep_burst, "page_ms": page_ms,
                                                       "burst_ms": burst_ms}})
                server = ServerProcess(config)
                try:
                    origin = f"http://127.0.0.1:{server.http_port}/healthz"
                    stream = f"http://127.0.0.1:{server.http_port}/channels/ch-0.ogg"
                    time.sleep(12.0)  # the channel has played (or idled) longer than a burst before anyone comes
                    first.append(first_audio_ms(driver, origin, stream))
                    second.append(first_audio_ms(driver, origin, stream))
                finally:
                    server.stop()
    finally:
        driver.quit()
    return first, second


def icecast_times(tries: int) -> list[float]:
    times = []
    driver = chromium()
    try:
        with icecast_peer(100, burst_bytes=65536) as (_, port):  # Icecast's default burst, as provinces run it
            time.sleep(2.0)
            for _ in range(tries):
                times.append(first_audio_ms(driver, f"http://127.0.0.1:{port}/status-json.xsl",
                                            f"http://127.0.0.1:{port}/ch-0.ogg"))
    finally:
        driver.quit()
    return times


def vlc_plays(page_ms: int, seconds: float = 6.0) -> tuple[bool, float, float]:
    """Does VLC 3 play from a mid-stream join at this page size? (and the seconds of audio it
    wrote in the ``seconds`` it ran, and their RMS, dBFS)"""
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), speakers_per_channel=0, extra={"http": {"page_ms": page_ms}})
        server = ServerProcess(config)
        os.chmod(tmp, 0o777)
        out = Path(tmp) / "vlc.wav"
        # VLC refuses to run as root: as nobody then, writing into this directory.
        user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.getuid() == 0 else []
        try:
            time.sleep(12.0)  # mid-stream: the channel has been playing for a while
            subprocess.run([*user, "env", f"HOME={tmp}", "cvlc", "--intf", "dummy", "--no-video", "--aout", "afile",
                            "--audiofile-file", str(out), "--run-time", str(int(seconds)), "--play-and-exit",
                            f"http://127.0.0.1:{server.http_port}/channels/ch-0.ogg", "vlc://quit"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 20)
        except subprocess.TimeoutExpired:
            pass
        finally:
            server.stop()
        if not out.exists() or out.stat().st_size < 1000:
            return False, 0.0, float("-inf")
        try:
            audio, rate = soundfile.read(str(out), dtype="float32")
        except RuntimeError:
            return False, 0.0, float("-inf")
        rms = float(np.sqrt(np.mean(np.square(audio)))) if audio.size else 0.0
        level = 20 * np.log10(rms) if rms > 0 else float("-inf")
        duration = len(audio) / rate
        return level > -40 and duration > seconds / 2, duration, level


def describe(times: list[float]) -> str:
    failed = sum(t < 0 for t in times)
    good = sorted(t for t in times if t >= 0)
    if not good:
        return f"never ({failed} of {len(times)} failed)"
    text = f"{statistics.median(good):.0f} ms (min {good[0]:.0f}, max {good[-1]:.0f})"
    return text + (f", {failed} failed" if failed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=5)
    parser.add_argument("--pages", type=int, nargs="+", default=[1000, 500, 200, 100], help="page_ms tried in VLC")
    parser.add_argument("--skip-chromium", action="store_true")
    args = parser.parse_args()
    tries = max(1, min(args.tries, 20))
    print(f"machine: {machine()}; {tries} tries each", flush=True)
    if not args.skip_chromium:
        print("| Chromium, first audio | first listener of an unheard channel | a second listener |")
        print("|---|---|---|")
        for keep_burst, burst_ms in ((True, 10000), (False, 10000), (True, 2000)):
            first, second = broadcaster_times(tries, keep_burst, burst_ms=burst_ms)
            print(f"| broadcaster, http.keep_burst {str(keep_burst).lower()}, burst_ms {burst_ms} "
                  f"| {describe(first)} | {describe(second)} |", flush=True)
        print(f"| Icecast 2.4 (64 KB burst), ffmpeg source | | {describe(icecast_times(tries))} |", flush=True)
    print()
    print("| page_ms | VLC 3 joining mid-stream | audio written in 6 s | level heard |")
    print("|---|---|---|---|")
    for page_ms in args.pages:
        plays, duration, level = vlc_plays(page_ms)
        print(f"| {page_ms} | {'plays' if plays else 'silent or fails'} | {duration:.1f} s | {level:.1f} dBFS |",
              flush=True)


if __name__ == "__main__":
    main()
