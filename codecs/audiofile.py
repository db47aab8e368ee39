"""Audio files in: decode with soundfile, fold to mono, resample to 48 kHz once."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile

from broadcaster.codecs.pcm import Audio, resample, to_mono

MIN_RATE_HZ, MAX_RATE_HZ = 8000, 192000  # what a programme or a voice file really uses


class AudioFileError(ValueError):
    """The file is missing, unreadable or not audio that libsndfile decodes."""


def load_audio(path: str | Path) -> Audio:
    """The whole file as 48 kHz mono float32 (programmes are minutes, not hours)."""
    return _load(str(path), str(path))


def load_audio_bytes(data: bytes, name: str) -> Audio:
    """The same from an audio file held in memory (a TTS engine's WAV); ``name`` is for messages."""
    return _load(io.BytesIO(data), name)


def _load(source: str | BinaryIO, path: str) -> Audio:
    try:
        data, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioFileError(f"{path}: cannot decode audio: {exc}") from exc
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: the file holds no audio samples")
    if not MIN_RATE_HZ <= int(rate) <= MAX_RATE_HZ:
        raise AudioFileError(f"{path}: a sample rate of {rate} Hz is not audio we play "
                             f"({MIN_RATE_HZ}–{MAX_RATE_HZ} Hz)")
    audio = np.ascontiguousarray(resample(to_mono(data), int(rate)))
    if audio.size == 0:
        raise AudioFileError(f"{path}: the file holds less than one sample at 48 kHz")
    return audio
