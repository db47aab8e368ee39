"""Audio files in: decode with soundfile, fold to mono, resample to 48 kHz once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from broadcaster.codecs.pcm import Audio, resample, to_mono

MIN_RATE_HZ, MAX_RATE_HZ = 8000, 192000  # what a programme or a voice file really uses


class AudioFileError(ValueError):
    """The file is missing, unreadable or not audio that libsndfile decodes."""


def load_audio(path: str | Path) -> Audio:
    """The whole file as 48 kHz mono float32 (programmes are minutes, not hours)."""
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
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
