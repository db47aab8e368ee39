"""The streaming BS.1770 meter against pyloudnorm's whole-signal one, and the memory an
upload's processing holds (issue 9: an hour-long upload peaked at about 4 GB)."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile

from broadcaster.codecs.loudness import LoudnessMeter
from broadcaster.control.media import process_upload


@pytest.mark.parametrize("samples, chunk", [(19200, 19200), (24000, 1000), (48000 * 3 + 123, 7777),
                                            (48000 * 20 + 4799, 1 << 20)])
def test_fed_in_any_chunks_it_reads_what_pyloudnorm_reads(samples: int, chunk: int) -> None:
    rng = np.random.default_rng(samples)
    x = (rng.standard_normal(samples) * np.linspace(0.01, 0.3, samples)).astype(np.float32)
    x[: samples // 3] *= 0.001  # a quiet start, under the relative gate
    meter = LoudnessMeter(48000)
    for i in range(0, samples, chunk):
        meter.feed(x[i:i + chunk])
    assert meter.integrated() == pytest.approx(pyloudnorm.Meter(48000).integrated_loudness(x), abs=1e-5)


def test_silence_is_minus_infinity() -> None:
    meter = LoudnessMeter(48000)
    meter.feed(np.zeros(48000, np.float32))
    assert meter.integrated() == float("-inf")


def test_processing_an_upload_holds_about_one_copy_of_the_decoded_audio(tmp_path: Path) -> None:
    seconds = 300
    t = np.arange(8000 * seconds) / 8000
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000, format="WAV",
                    subtype="PCM_16")
    data = buffer.getvalue()
    decoded = seconds * 48000 * 4  # bytes of the programme at 48 kHz float32
    tracemalloc.start()
    try:
        result = process_upload(data, filename="long.wav", out_path=tmp_path / "long.flac", max_bytes=len(data),
                                max_duration_s=3600.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.duration_s == pytest.approx(seconds, abs=0.01)
    assert peak < 1.6 * decoded, f"peak {peak / 2**20:.0f} MiB for {decoded / 2**20:.0f} MiB of audio"
