"""Text-to-speech engines (control/tts.py) with real processes: a command engine is a small Python
script written here (text on stdin, WAV on stdout), and its failures; espeak-ng as it is installed;
which engine reads which language; the tts: section of the configuration."""

from __future__ import annotations

import io
import shutil
import struct
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from broadcaster.codecs.pcm import SAMPLE_RATE, dominant_frequency
from broadcaster.config import ConfigError, TtsConfig, parse_config
from broadcaster.control.tts import CommandTTS, EspeakTTS, NoVoice, SpeechError, Voices, split_wavs

TONE = """
import math, struct, sys, wave
text = sys.stdin.buffer.read().decode("utf-8")
rate = int(sys.argv[1]) if len(sys.argv) > 1 else 22050
seconds = 0.2 * len(text.split())
frames = b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * 500 * n / rate)))
                  for n in range(int(seconds * rate)))
with open(sys.argv[2], "w", encoding="utf-8") if len(sys.argv) > 2 else open("/dev/null", "w") as seen:
    seen.write(text)
out = sys.stdout.buffer
out.write(b"RIFF" + struct.pack("<I", 36 + len(frames)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate,
          rate * 2, 2, 16) + b"data" + struct.pack("<I", len(frames)) + frames)
"""


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return [sys.executable, str(path)]


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def test_a_command_engine_reads_the_text_on_stdin_and_its_wav_is_resampled_to_48k_mono(tmp_path: Path) -> None:
    seen = tmp_path / "seen.txt"
    engine = CommandTTS([*script(tmp_path, "tone", TONE), "22050", str(seen)], name="tone")
    audio = engine.synthesize("Bão số chín đang vào đất liền", "vi")
    assert seen.read_text(encoding="utf-8") == "Bão số chín đang vào đất liền", "UTF-8 text, intact, on stdin"
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.size == pytest.approx(7 * 0.2 * SAMPLE_RATE, abs=10)
    assert dominant_frequency(audio) == pytest.approx(500, abs=2)


def test_placeholders_become_the_language_and_the_voice(tmp_path: Path) -> None:
    engine = CommandTTS(["tool", "--lang={language}", "--voice", "{voice}", "{{literal}}"], voice="vi_VN-vais1000")
    assert engine.argv("vi") == ["tool", "--lang=vi", "--voice", "vi_VN-vais1000", "{literal}"]
    assert CommandTTS(["tool", "{voice}"]).argv("km") == ["tool", "km"]


@pytest.mark.parametrize(("body", "expected"), [
    ("import sys\nsys.stdin.read()\nprint('model file not found: /opt/vi.onnx', file=sys.stderr)\nsys.exit(1)",
     "'broken' exited with status 1: model file not found: /opt/vi.onnx"),
    ("import sys\nsys.stdin.read()\nsys.stdout.write('this is not audio at all, just words')",
     "'broken' wrote 36 bytes that are not WAV audio (not a WAV file"),
    ("import sys\nsys.stdin.read()\nprint('loaded voice', file=sys.stderr)",
     "'broken' wrote nothing on stdout (it must write a WAV file there): loaded voice"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "'broken' was killed by signal 9"),
])
def test_an_engine_that_fails_is_a_speech_error_naming_it_and_its_last_words(tmp_path: Path, body: str,
                                                                              expected: str) -> None:
    engine = CommandTTS(script(tmp_path, "broken", body), name="broken", timeout_s=20)
    with pytest.raises(SpeechError) as caught:
        engine.synthesize("Xin chào", "vi")
    assert expected in str(caught.value)


def test_an_engine_past_its_timeout_is_stopped_with_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child-alive"
    # A shell-script-like engine: a child that would write a marker if it outlived the kill.
    body = f"""
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3); open({str(marker)!r}, 'w').write('x')"])
    print("thinking...", file=sys.stderr, flush=True)
    time.sleep(60)
    """
    engine = CommandTTS(script(tmp_path, "slow", body), name="slow", timeout_s=1.0)
    with pytest.raises(SpeechError) as caught:
        engine.synthesize("Xin chào", "vi")
    assert "'slow' gave no result within 1 s (its timeout_s) and was stopped: thinking..." in str(caught.value)
    time.sleep(3.5)
    assert not marker.exists(), "the engine's whole process group was killed"


def test_an_engine_that_writes_without_end_is_cut_off(tmp_path: Path) -> None:
    body = """
    import sys
    sys.stdout.buffer.write(b"RIFF\\xff\\xff\\xff\\xffWAVEfmt ")
    while True:
        sys.stdout.buffer.write(b"\\0" * 65536)
    """
    engine = CommandTTS(script(tmp_path, "flood", body), name="flood", timeout_s=30, max_output_bytes=1 << 20)
    with pytest.raises(SpeechError, match="'flood' wrote more than 1 MiB and was stopped"):
        engine.synthesize("Xin chào", "vi")


def test_an_engine_that_never_reads_its_input_does_not_hang_on_a_long_text(tmp_path: Path) -> None:
    body = "import time\ntime.sleep(60)\n"
    engine = CommandTTS(script(tmp_path, "deaf", body), name="deaf", timeout_s=1.0, max_text_chars=300_000)
    with pytest.raises(SpeechError, match="no result within 1 s"):
        engine.synthesize("chữ " * 70_000, "vi")  # 280 kB: more than a pipe holds


def test_a_missing_program_or_too_much_text_is_a_speech_error(tmp_path: Path) -> None:
    with pytest.raises(SpeechError, match="cannot be started"):
        CommandTTS([str(tmp_path / "no-such-engine")]).synthesize("Xin chào", "vi")
    with pytest.raises(SpeechError, match="the text is 11 characters; 'x' reads at most 10"):
        CommandTTS(["true"], name="x", max_text_chars=10).synthesize("a" * 11, "vi")
    with pytest.raises(SpeechError, match="no text"):
        CommandTTS(["true"]).synthesize("  \n", "vi")


# --- WAV as engines write it to a pipe -----------------------------------------------------------


def test_wav_sizes_left_unfilled_and_wavs_back_to_back_are_read_whole() -> None:
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(4410) / 44100)).astype(np.float32)
    one = wav_bytes(tone, 44100)
    for unfilled in (0, 0xFFFFFFFF, 0x7FFFF000):  # espeak-ng --stdout leaves 0x7ffff000
        broken = bytearray(one)
        broken[4:8] = struct.pack("<I", unfilled)
        broken[40:44] = struct.pack("<I", unfilled)
        (fixed,) = split_wavs(bytes(broken))
        assert soundfile.info(io.BytesIO(fixed)).frames == 4410
    assert len(split_wavs(one + one + b"\n")) == 2, "Piper writes one WAV per line of input"
    first_block_only = bytearray(one[:44 + 2000] + one[44 + 2000:])
    first_block_only[40:44] = struct.pack("<I", 2000)  # a writer that filled in its first block's size only
    (fixed,) = split_wavs(bytes(first_block_only))
    assert soundfile.info(io.BytesIO(fixed)).frames == 4410
    with pytest.raises(ValueError, match="not a WAV file"):
        split_wavs(b"ID3\x03\x00" + b"\0" * 100)


# --- espeak-ng, as installed ---------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_reads_vietnamese_and_an_unknown_voice_is_a_clear_error() -> None:
    audio = EspeakTTS().synthesize("Bão số chín đang vào đất liền.", "vi")
    assert audio.size > SAMPLE_RATE // 2 and float(np.max(np.abs(audio))) > 0.05
    with pytest.raises(SpeechError, match="'espeak-ng' exited with status 1: .*voice does not exist"):
        EspeakTTS().synthesize("hello", "zz")


# --- which engine reads which language --------------------------------------------------------------


class Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def synthesize(self, text: str, language: str = "vi") -> np.ndarray:
        return np.zeros(1, np.float32)


def config(tts: dict[str, Any]) -> TtsConfig:
    return parse_config({"tts": tts}, file="test.yaml", base_dir=Path(".")).tts


def test_a_command_engine_takes_precedence_over_espeak_and_a_language_without_one_says_so() -> None:
    tts = config({"engines": {"vi": {"command": ["piper", "--model", "/opt/vi.onnx", "--output_file", "-"]},
                              "km": {"command": ["/usr/local/bin/khmer-tts"], "name": "khmer"}}})
    voices = Voices.from_config(tts, espeak=Named("espeak-ng"))
    assert voices.languages() == {"en": "espeak-ng", "km": "khmer", "vi": "piper"}
    engine = voices.engine_for("vi-VN")
    assert isinstance(engine, CommandTTS) and engine.name == "piper", "vi-VN falls back to vi"
    assert voices.code_for("VI_vn") == "vi" and voices.code_for("km") == "km" and voices.code_for("fr") is None
    assert voices.engine_for("fr") is None
    with pytest.raises(NoVoice) as caught:
        Voices.from_config(config({}), espeak=Named("espeak-ng")).require("km")
    assert str(caught.value) == ("no text-to-speech engine for language 'km'; configure tts.engines.km "
                                 "(docs/tts.md)")
    assert Voices.from_config(config({"espeak_languages": []}), espeak=Named("espeak-ng")).languages() == {}
    assert Voices.from_config(config({}), espeak=None).languages() == {}


@pytest.mark.parametrize(("tts", "key"), [
    ({"engines": {"vi": {"command": []}}}, "tts.engines.vi.command"),
    ({"engines": {"vi": {"command": "piper --model x"}}}, "tts.engines.vi.command"),
    ({"engines": {"vi": {"command": ["piper", 3]}}}, "tts.engines.vi.command"),
    ({"engines": {"vi": {"command": ["piper", "{model}"]}}}, "tts.engines.vi.command[1]"),
    ({"engines": {"vi": {"command": ["piper", "{"]}}}, "tts.engines.vi.command[1]"),
    ({"engines": {"vi": {"command": ["piper"], "timeout_s": 0}}}, "tts.engines.vi.timeout_s"),
    ({"engines": {"vi": {"command": ["piper"], "speed": 1}}}, "tts.engines.vi.speed"),
    ({"engines": {"Việt": {"command": ["piper"]}}}, "tts.engines.Việt"),
    ({"engines": {"vi": {"command": ["a"]}, "VI": {"command": ["b"]}}}, "tts.engines.VI"),
    ({"espeak_languages": ["vi", "../etc"]}, "tts.espeak_languages[1]"),
    ({"max_text_chars": 0}, "tts.max_text_chars"),
])
def test_bad_tts_configuration_names_the_file_and_key(tts: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tts)
    assert caught.value.file == "test.yaml" and caught.value.key == key, caught.value
