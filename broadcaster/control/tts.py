"""Text-to-speech engines, and which one reads which language.

An engine is anything with ``synthesize(text, language) -> Audio`` (48 kHz
mono float32), called from a worker thread, never from the reactor. Two
kinds are built in:

- ``EspeakTTS``: espeak-ng, small, offline, in every distribution; robotic,
  but it always works, so it is the default for the languages listed in
  ``tts.espeak_languages`` (vi and en by default).
- ``CommandTTS``: any program that reads the text on stdin (UTF-8) and writes
  a WAV file on stdout: Piper with a Vietnamese voice, a vendor's Khmer
  engine, a shell script around a cloud service. Configured per language
  under ``tts.engines``; it takes precedence over espeak-ng.

An engine is somebody else's program, so it is run as untrusted work: a
timeout, a cap on what it may write, its own process group (killed whole on a
timeout), and every failure (a non-zero exit, no output, garbage, a hang)
becomes a ``SpeechError`` naming the engine and the last line of its stderr,
never a hung thread or a crash.

``Voices`` holds the engines per language. A language with none is a
``NoVoice`` error saying which key to configure: a bulletin in Khmer with no
Khmer engine is refused at approval, rather than played as silence.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from broadcaster.codecs.audiofile import AudioFileError, load_audio_bytes
from broadcaster.codecs.pcm import Audio
from broadcaster.config import LANGUAGE_PATTERN, TtsConfig

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 64 * 1024 * 1024  # about 11 minutes of 48 kHz 16-bit stereo WAV: far past any bulletin
MAX_TEXT_CHARS = 5000
DEFAULT_TIMEOUT_S = 120.0
_STDERR_TAIL = 8192  # bytes of an engine's stderr kept: its last line is what it died of
_READ = 65536
_RUNNING: set[subprocess.Popen[bytes]] = set()  # engines running now, for stop_engines
_RUNNING_LOCK = threading.Lock()


class SpeechError(Exception):
    """Text could not become speech; the message says which engine and why, for the operator."""


class NoVoice(SpeechError):
    """No engine reads this language."""

    def __init__(self, language: str) -> None:
        super().__init__(f"no text-to-speech engine for language {language!r}; configure tts.engines.{language} "
                         "(docs/tts.md)")
        self.language = language


class TextToSpeech(Protocol):
    name: str

    def synthesize(self, text: str, language: str = "vi") -> Audio:
        """Blocking: call from a worker thread. Returns 48 kHz mono audio."""


# --- running an engine --------------------------------------------------------------------------


def run_engine(name: str, argv: list[str], text: str, *, timeout_s: float,
               max_output_bytes: int = MAX_OUTPUT_BYTES) -> bytes:
    """Run ``argv`` with ``text`` on stdin; its stdout, or SpeechError.

    Pipes are served with one selector loop and a deadline, so an engine that
    never reads its input, never closes its output or writes without end is
    cut off at ``timeout_s`` or ``max_output_bytes``; its whole process group
    is killed (a shell script's children too)."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, close_fds=True)
    except OSError as exc:
        raise SpeechError(f"text-to-speech engine {name!r} cannot be started ({argv[0]}): "
                          f"{exc.strerror or exc}") from None
    out, err = bytearray(), bytearray()
    with _RUNNING_LOCK:
        _RUNNING.add(proc)
    try:
        _serve(proc, text.encode("utf-8"), out, err, time.monotonic() + timeout_s, max_output_bytes, name, timeout_s)
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(proc)
        if proc.poll() is None:
            _kill(proc)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    if proc.returncode != 0:
        how = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exited with status {proc.returncode}")
        raise SpeechError(f"text-to-speech engine {name!r} {how}{_last_line(err)}")
    if not out:
        raise SpeechError(f"text-to-speech engine {name!r} wrote nothing on stdout (it must write a WAV file "
                          f"there){_last_line(err)}")
    return bytes(out)


def _serve(proc: subprocess.Popen[bytes], data: bytes, out: bytearray, err: bytearray, deadline: float,
           max_output_bytes: int, name: str, timeout_s: float) -> None:
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    with selectors.DefaultSelector() as selector:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            os.set_blocking(pipe.fileno(), False)
        if data:
            selector.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        selector.register(proc.stdout, selectors.EVENT_READ)
        selector.register(proc.stderr, selectors.EVENT_READ)
        sent = 0
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SpeechError(f"text-to-speech engine {name!r} gave no result within {timeout_s:g} s "
                                  f"(its timeout_s) and was stopped{_last_line(err)}")
            for key, _ in selector.select(remaining):
                if key.fileobj is proc.stdin:
                    try:
                        sent += os.write(proc.stdin.fileno(), data[sent:sent + _READ])
                    except BrokenPipeError:  # it stopped reading: its exit status will say why
                        sent = len(data)
                    except BlockingIOError:
                        continue
                    if sent >= len(data):
                        selector.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                try:
                    chunk = os.read(key.fd, _READ)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(key.fileobj)
                elif key.fileobj is proc.stdout:
                    out += chunk
                    if len(out) > max_output_bytes:
                        raise SpeechError(f"text-to-speech engine {name!r} wrote more than "
                                          f"{max_output_bytes // (1024 * 1024)} MiB and was stopped")
                else:
                    err += chunk
                    del err[:-_STDERR_TAIL]
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # it closed its output but did not exit
            raise SpeechError(f"text-to-speech engine {name!r} did not exit within {timeout_s:g} s "
                              f"(its timeout_s) and was stopped{_last_line(err)}") from None


def stop_engines() -> None:
    """The server is stopping: every engine running now is killed (its thread then fails at once
    with a SpeechError), so no shutdown waits for a two-minute synthesis."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for proc in running:
        if proc.returncode is not None:  # reaped already: its pid may be another's
            continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _last_line(err: bytes | bytearray) -> str:
    """``: <the last line of stderr>`` (printable, at most 300 characters), or nothing."""
    lines = [line.strip() for line in bytes(err).decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return ""
    line = "".join(ch if ch.isprintable() else "?" for ch in lines[-1])
    return ": " + (line if len(line) <= 300 else line[:297] + "...")


# --- what an engine wrote -----------------------------------------------------------------------


def split_wavs(data: bytes) -> list[bytes]:
    """The WAV files in an engine's stdout, each with its sizes made right.

    Engines writing to a pipe cannot seek back to fill in the RIFF sizes:
    espeak-ng leaves 0x7ffff000, others 0 or 0xffffffff; Piper writes one WAV
    per input line, back to back. The data chunk of a size that is missing or
    runs past the end takes the rest of the stream. ValueError if ``data``
    does not begin as a WAV file."""
    files: list[bytes] = []
    pos = 0
    while pos < len(data):
        if data[pos:pos + 4] not in (b"RIFF", b"RF64") or data[pos + 8:pos + 12] != b"WAVE":
            if files:
                break  # trailing bytes after the last file (a newline, a log line): ignored
            head = data[:16]
            raise ValueError(f"not a WAV file: it begins {head!r}")
        fmt, pcm, pos = _one_wav(data, pos + 12)
        if fmt is None:
            raise ValueError("a WAV file without a fmt chunk")
        files.append(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(pcm)) + b"WAVE"
                     + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm)
    return files


def _one_wav(data: bytes, pos: int) -> tuple[bytes | None, bytes, int]:
    """(fmt chunk body, data chunk body, where the next file starts) of the file whose chunks start at pos."""
    fmt: bytes | None = None
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if kind == b"data":
            declared_fits = 0 < size < 0x7FFFF000 and body + size <= len(data)
            end = body + size if declared_fits else len(data)
            if fmt is not None and len(fmt) >= 14:
                align = max(1, struct.unpack("<H", fmt[12:14])[0])
                end = body + (end - body) // align * align
            following = end + (size & 1 if declared_fits else 0)
            if declared_fits and following < len(data) and not _chunk_or_file_at(data, following):
                end = following = len(data)  # a size filled in for the first block only: the rest is audio too
            return fmt, data[body:end], _next_file(data, following)
        if body + size > len(data):
            break
        if kind == b"fmt ":
            fmt = data[body:body + size]
        pos = body + size + (size & 1)
    return fmt, b"", len(data)


def _chunk_or_file_at(data: bytes, pos: int) -> bool:
    kind = data[pos:pos + 4]
    return len(kind) == 4 and all(32 <= b < 127 for b in kind)


def _next_file(data: bytes, pos: int) -> int:
    """Skip chunks after the data chunk (LIST, id3) up to the next RIFF, or the end."""
    while pos + 8 <= len(data) and data[pos:pos + 4] not in (b"RIFF", b"RF64"):
        if not _chunk_or_file_at(data, pos):
            return len(data)
        pos += 8 + struct.unpack("<I", data[pos + 4:pos + 8])[0]
        pos += pos & 1
    return min(pos, len(data))


def decode_wav(name: str, data: bytes) -> Audio:
    """An engine's stdout as 48 kHz mono float32 (resampled once); SpeechError if it is not WAV audio."""
    try:
        files = split_wavs(data)
        parts = [load_audio_bytes(f, f"the WAV of {name!r}") for f in files]
    except (ValueError, AudioFileError) as exc:
        raise SpeechError(f"text-to-speech engine {name!r} wrote {len(data)} bytes that are not WAV audio "
                          f"({exc})") from None
    audio = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if not np.all(np.isfinite(audio)):
        raise SpeechError(f"text-to-speech engine {name!r} wrote invalid (NaN or infinite) samples")
    return np.ascontiguousarray(audio, dtype=np.float32)


def _checked(name: str, text: str, max_text_chars: int) -> str:
    text = text.replace("\x00", " ")
    if not text.strip():
        raise SpeechError("there is no text to read")
    if len(text) > max_text_chars:
        raise SpeechError(f"the text is {len(text)} characters; {name!r} reads at most {max_text_chars} "
                          "(tts.max_text_chars)")
    return text


# --- the engines --------------------------------------------------------------------------------


class CommandTTS:
    """A program configured under ``tts.engines.<language>``: text on stdin, WAV on stdout.

    ``{language}`` and ``{voice}`` in its arguments become the language asked
    for and the configured voice (the language when none is set)."""

    def __init__(self, command: Iterable[str], *, name: str | None = None, voice: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, max_output_bytes: int = MAX_OUTPUT_BYTES,
                 max_text_chars: int = MAX_TEXT_CHARS) -> None:
        self.command = list(command)
        if not self.command:
            raise ValueError("a command engine needs a program to run")
        self.name = name or Path(self.command[0]).name
        self.voice = voice
        self.timeout_s = timeout_s
        self.max_output_bytes = max_output_bytes
        self.max_text_chars = max_text_chars

    def argv(self, language: str) -> list[str]:
        values = {"language": language, "voice": self.voice or language}
        return [arg.format_map(values) for arg in self.command]

    def synthesize(self, text: str, language: str = "vi") -> Audio:
        text = _checked(self.name, text, self.max_text_chars)
        wav = run_engine(self.name, self.argv(language), text, timeout_s=self.timeout_s,
                         max_output_bytes=self.max_output_bytes)
        return decode_wav(self.name, wav)


class EspeakTTS:
    """espeak-ng with its Vietnamese voice: small, offline, always installable.
    A better engine plugs in behind the same interface (CommandTTS)."""

    name = "espeak-ng"

    def __init__(self, executable: str | None = None, rate_wpm: int = 140,
                 max_text_chars: int = MAX_TEXT_CHARS) -> None:
        found = executable or shutil.which("espeak-ng")
        if found is None:
            raise RuntimeError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
        self.executable = found
        self.rate_wpm = rate_wpm
        self.max_text_chars = max_text_chars

    def synthesize(self, text: str, language: str = "vi") -> Audio:
        # -b 1: the text on stdin is UTF-8; --stdout: the WAV on stdout (its sizes left unfilled).
        text = _checked(self.name, text, self.max_text_chars)
        wav = run_engine(self.name, [self.executable, "-b", "1", "-v", language, "-s", str(self.rate_wpm),
                                     "--stdout"], text, timeout_s=DEFAULT_TIMEOUT_S)
        return decode_wav(self.name, wav)


# --- which engine reads which language ------------------------------------------------------------


def normalise_language(language: str) -> str:
    return language.strip().replace("_", "-").lower()


class Voices:
    """The engines per language. ``vi-VN`` falls back to ``vi`` when only that is configured."""

    def __init__(self, engines: Mapping[str, TextToSpeech]) -> None:
        self._engines = {normalise_language(k): v for k, v in engines.items()}

    @classmethod
    def from_config(cls, config: TtsConfig, espeak: TextToSpeech | None | str = "espeak") -> Voices:
        """Command engines from ``tts.engines``; espeak-ng (or the stand-in tests give) for
        ``tts.espeak_languages`` that have none. ``espeak=None``: no espeak-ng."""
        engines: dict[str, TextToSpeech] = {}
        if config.espeak_languages:
            if espeak == "espeak":
                try:
                    espeak = EspeakTTS(rate_wpm=config.espeak_rate_wpm, max_text_chars=config.max_text_chars)
                except RuntimeError as exc:
                    log.warning("no speech for %s unless tts.engines names an engine: %s",
                                ", ".join(config.espeak_languages), exc)
                    espeak = None
            if espeak is not None and not isinstance(espeak, str):
                engines.update({language: espeak for language in config.espeak_languages})
        for engine in config.engines:
            if shutil.which(engine.command[0]) is None:
                log.warning("tts.engines.%s: the program %r is not found (not on PATH, or not executable); "
                            "speech in %s will fail until it is installed", engine.language, engine.command[0],
                            engine.language)
            engines[engine.language] = CommandTTS(engine.command, name=engine.name, voice=engine.voice,
                                                  timeout_s=engine.timeout_s, max_text_chars=config.max_text_chars)
        return cls(engines)

    def engine_for(self, language: str) -> TextToSpeech | None:
        code = self.code_for(language)
        return None if code is None else self._engines[code]

    def code_for(self, language: str) -> str | None:
        """The configured code that serves ``language`` (``vi`` for ``vi-VN``), or None. Engines
        are given this code: the one they were configured for."""
        code = normalise_language(language)
        if code in self._engines:
            return code
        primary = code.split("-", 1)[0]
        return primary if primary in self._engines else None

    def require(self, language: str) -> TextToSpeech:
        """The engine, or NoVoice (also for a code that is no language at all)."""
        engine = self.engine_for(language) if LANGUAGE_PATTERN.fullmatch(normalise_language(language)) else None
        if engine is None:
            raise NoVoice(language)
        return engine

    def languages(self) -> dict[str, str]:
        """Language code -> the name of the engine that reads it, sorted by code."""
        return {code: self._engines[code].name for code in sorted(self._engines)}
