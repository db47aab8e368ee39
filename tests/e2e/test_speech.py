"""Speech on the real server: espeak-ng and a command engine from the configuration file, previews
checked by ffprobe/ffmpeg, and a server that stops while an engine is still thinking."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from broadcaster.codecs.loudness import LoudnessMeter
from broadcaster.codecs.pcm import dominant_frequency
from tests.conftest import Api, prepare, start_server, wait_until

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None,
                                reason="needs espeak-ng and ffmpeg")

TONE = """
import math, struct, sys
sys.stdin.buffer.read()
rate = 16000
frames = b"".join(struct.pack("<h", int(9000 * math.sin(2 * math.pi * 500 * n / rate))) for n in range(2 * rate))
sys.stdout.buffer.write(b"RIFF" + struct.pack("<I", 36 + len(frames)) + b"WAVEfmt " + struct.pack(
    "<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(frames)) + frames)
"""
SLOW = """
import sys, time
sys.stdin.read()
open(sys.argv[1], "w").write("started")
time.sleep(90)
"""


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    (tmp_path / "tone.py").write_text(textwrap.dedent(TONE), encoding="utf-8")
    (tmp_path / "slow.py").write_text(textwrap.dedent(SLOW), encoding="utf-8")
    engines = {"km": {"command": [sys.executable, str(tmp_path / "tone.py")], "name": "khmer-tone"},
               "lo": {"command": [sys.executable, str(tmp_path / "slow.py"), str(tmp_path / "slow-started")],
                      "name": "slow", "timeout_s": 90}}
    config, tokens = prepare(tmp_path, extra={"tts": {"engines": engines}})
    server = start_server(config)
    yield Api(server, config, tokens)
    server.stop()


def preview(api: Api, text: str, language: str, who: str = "op-a") -> tuple[int, str, bytes]:
    request = urllib.request.Request(api.server.url("/api/v1/speech/preview"), method="POST",
                                     data=f'{{"text": "{text}", "language": "{language}"}}'.encode())
    request.add_header("Authorization", f"Bearer {api.tokens[who]}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def decoded(tmp_path: Path, ogg: bytes) -> tuple[dict[str, Any], np.ndarray]:
    path = tmp_path / "preview.ogg"
    path.write_bytes(ogg)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,sample_rate,channels",
                            "-of", "default=nw=1", str(path)], capture_output=True, text=True, timeout=30, check=True)
    fields = dict(line.split("=", 1) for line in probe.stdout.split())
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", "48000", "-"],
                         capture_output=True, timeout=30, check=True).stdout
    return fields, np.frombuffer(pcm, dtype=np.float32)


def test_previews_from_espeak_and_a_configured_engine_play_in_ffmpeg(api: Api, tmp_path: Path) -> None:
    status, languages = api("GET", "/api/v1/speech/languages", who="viewer-a")
    assert status == 200
    assert {x["language"]: x["engine"] for x in languages["languages"]} == {
        "en": "espeak-ng", "km": "khmer-tone", "lo": "slow", "vi": "espeak-ng"}

    status, kind, ogg = preview(api, "Bão số chín đang tiến vào đất liền.", "vi")
    assert status == 200 and kind == "audio/ogg", ogg[:200]
    fields, pcm = decoded(tmp_path, ogg)
    assert fields == {"codec_name": "opus", "sample_rate": "48000", "channels": "1"}
    assert pcm.size > 48000
    meter = LoudnessMeter(48000)
    meter.feed(pcm)
    assert meter.integrated() == pytest.approx(-16.0, abs=1.0), "the broadcast loudness (after Opus)"

    status, kind, ogg = preview(api, "សួស្តី", "km")
    assert status == 200 and kind == "audio/ogg"
    _, pcm = decoded(tmp_path, ogg)
    assert pcm.size == pytest.approx(2 * 48000, abs=1000)
    assert dominant_frequency(pcm[4800:-4800]) == pytest.approx(500, abs=3)

    status, _, body = preview(api, "Bonjour", "fr")
    assert status == 400 and b"configure tts.engines.fr" in body
    status, _, body = preview(api, "Xin chào", "vi", who="viewer-a")
    assert status == 403


def test_the_server_stops_without_waiting_for_an_engine(api: Api, tmp_path: Path) -> None:
    answers: list[int] = []
    asking = threading.Thread(target=lambda: answers.append(preview(api, "ສະບາຍດີ", "lo")[0]), daemon=True)
    asking.start()
    assert wait_until(lambda: (tmp_path / "slow-started").exists(), 30), "the engine was started"
    api.server.process.terminate()
    # The engine would think for 90 s; the server kills it and exits long before.
    assert api.server.process.wait(timeout=60) == 0
    asking.join(30)
