"""Media uploads: real files from ffmpeg in, a 48 kHz mono FLAC at the target loudness out.

Loudness is re-measured here with pyloudnorm from the stored file, so the
tests check the file on disk and not the metadata the module reports about it.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyloudnorm
import pytest
import soundfile

from broadcaster.control.media import ACCEPTED, MediaError, ProcessedMedia, process_upload

FFMPEG = shutil.which("ffmpeg") or ("/usr/bin/ffmpeg" if Path("/usr/bin/ffmpeg").exists() else None)
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")

MAX_BYTES = 20 * 1024 * 1024
TARGET = -16.0

# Expected loudness by hand, independent of pyloudnorm (which the module itself uses): BS.1770's K-weighting
# is normalised to 0 dB at 997 Hz, so a mono 1 kHz sine of peak P dBFS reads P - 3.01 LUFS (its mean square
# is half the peak squared). After normalisation to T LUFS the sine's peak is therefore at T + 3.01 dBFS.
SINE_CREST_DB = 3.01
# ffmpeg's sine source has a peak of 1/8 of full scale (-18.06 dBFS); -30 dB more makes a quiet upload whose
# 1 kHz tone reads -51.07 LUFS and needs +35 dB of gain. Upmixed to stereo by ffmpeg (-ac 2) each channel is
# 3 dB lower (its centre mix level), and so is the mono fold-down: -54.08 LUFS.
QUIET_TONE = ["-f", "lavfi", "-i", "sine=frequency=1000:duration=3", "-af", "volume=-30dB"]
QUIET_LUFS = -18.06 - 30.0 - SINE_CREST_DB


def ffmpeg(tmp_path: Path, name: str, *args: str) -> bytes:
    """Run ffmpeg writing ``tmp_path/name`` and return the file's bytes."""
    assert FFMPEG is not None
    out = tmp_path / name
    subprocess.run([FFMPEG, "-y", "-v", "error", *args, str(out)], check=True, timeout=60)
    return out.read_bytes()


def encode(samples: npt.NDArray[np.float32], rate: int = 48000, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def sine(seconds: float, peak_dbfs: float, frequency_hz: float = 1000.0, rate: int = 48000) -> npt.NDArray[np.float32]:
    t = np.arange(int(seconds * rate)) / rate
    return (10 ** (peak_dbfs / 20) * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)


def click_train(seconds: float = 3.0, rate: int = 48000) -> npt.NDArray[np.float32]:
    """Short full-height clicks every 100 ms: very peaky, so the peak ceiling binds long before the target."""
    samples = np.zeros(int(seconds * rate), dtype=np.float32)
    for start in range(0, samples.size - 48, rate // 10):
        samples[start:start + 48] = np.hanning(48) * 0.9
    return samples


def measure(path: Path) -> tuple[npt.NDArray[np.float64], float, float]:
    """(samples, integrated loudness LUFS, sample peak dBFS) of a stored file."""
    samples, rate = soundfile.read(str(path), dtype="float64")
    assert rate == 48000
    loudness = float(pyloudnorm.Meter(rate).integrated_loudness(samples))
    peak = float(20 * np.log10(np.max(np.abs(samples))))
    return samples, loudness, peak


def assert_stored(result: ProcessedMedia, out: Path, data: bytes) -> tuple[npt.NDArray[np.float64], float, float]:
    """The common contract of every accepted upload; returns measure(out)."""
    assert result.path == out
    assert out.exists()
    assert not out.with_suffix(".tmp").exists()
    info = soundfile.info(str(out))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_24", 48000, 1)
    samples, loudness, peak = measure(out)
    assert result.loudness_lufs == pytest.approx(loudness, abs=0.01)
    assert result.peak_dbfs == pytest.approx(peak, abs=0.01)
    assert result.peak_dbfs <= -1.0 and peak <= -1.0
    assert result.duration_s == pytest.approx(samples.size / 48000)
    assert result.sha256 == hashlib.sha256(data).hexdigest()  # of the upload as sent ...
    assert result.sha256 != hashlib.sha256(out.read_bytes()).hexdigest()  # ... not of the stored file
    assert result.size_bytes == len(data)
    return samples, loudness, peak


# --- accepted formats ----------------------------------------------------------------------------

STEREO_FORMATS = ("wav", "24bit.wav")
LOSSLESS_FORMATS = ("wav", "24bit.wav", "flac")
FORMATS: dict[str, list[str]] = {
    "mp3": ["-c:a", "libmp3lame"],
    # No ID3 tag and no Xing/LAME frame: libsndfile must find the MPEG sync by itself, and
    # without the LAME gapless info the encoder delay (~30 ms) stays in the decoded audio.
    "bare.mp3": ["-c:a", "libmp3lame", "-id3v2_version", "0", "-write_xing", "0"],
    "mp2": ["-c:a", "mp2"],
    "wav": ["-ac", "2", "-ar", "44100", "-c:a", "pcm_s16le"],
    # ffmpeg writes 24-bit as WAVE_FORMAT_EXTENSIBLE, which libsndfile reports as WAVEX.
    "24bit.wav": ["-ac", "2", "-ar", "44100", "-c:a", "pcm_s24le"],
    "flac": ["-ar", "44100", "-c:a", "flac"],
    "ogg": ["-ar", "44100", "-c:a", "libvorbis"],
    "opus": ["-c:a", "libopus"],
}


@needs_ffmpeg
@pytest.mark.parametrize("name", list(FORMATS))
def test_accepted_format_is_stored_normalised(tmp_path: Path, name: str) -> None:
    data = ffmpeg(tmp_path, f"in.{name}", *QUIET_TONE, *FORMATS[name])
    out = tmp_path / "library" / "item.flac"
    out.parent.mkdir()

    result = process_upload(data, filename=f"in.{name}", out_path=out, max_bytes=MAX_BYTES)

    samples, loudness, peak = assert_stored(result, out, data)
    assert loudness == pytest.approx(TARGET, abs=0.5)
    assert result.duration_s == pytest.approx(3.0, abs=0.1)
    # The quiet upload was measured at its hand-computed loudness (a lossy codec's padding and
    # quantisation move it by a few tenths) ...
    expected_lufs = QUIET_LUFS - (3.01 if name in STEREO_FORMATS else 0.0)
    assert result.original_lufs == pytest.approx(expected_lufs, abs=0.6)
    # ... and the stored tone's peak sits where a sine at the target loudness has it: -12.99 dBFS.
    assert peak == pytest.approx(TARGET + SINE_CREST_DB, abs=0.15 if name in LOSSLESS_FORMATS else 0.7)
    assert list(out.parent.iterdir()) == [out]


@pytest.mark.parametrize(("fmt", "subtype"), [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"),
                                              ("OGG", "OPUS"), ("MP3", "MPEG_LAYER_III")])
def test_every_documented_format_is_really_accepted(tmp_path: Path, fmt: str, subtype: str) -> None:
    """The documented list is what the code accepts: a file of each, written by libsndfile (not ffmpeg), stores."""
    assert fmt in ACCEPTED and len(ACCEPTED) == 4
    data = encode(sine(2.0, -20.0), fmt=fmt, subtype=subtype)
    out = tmp_path / "item.flac"
    result = process_upload(data, filename=f"in.{fmt.lower()}", out_path=out, max_bytes=MAX_BYTES)
    assert_stored(result, out, data)
    assert result.original_lufs == pytest.approx(-20.0 - SINE_CREST_DB, abs=0.6)
    assert result.duration_s == pytest.approx(2.0, abs=0.06)  # MP3 may add a frame of padding


def test_loud_upload_is_turned_down(tmp_path: Path) -> None:
    data = encode(sine(2.0, -0.5))  # a 1 kHz sine peaking at -0.5 dBFS: -3.51 LUFS
    out = tmp_path / "loud.flac"
    result = process_upload(data, filename="loud.wav", out_path=out, max_bytes=MAX_BYTES)
    stored, loudness, peak = assert_stored(result, out, data)
    assert result.original_lufs == pytest.approx(-0.5 - SINE_CREST_DB, abs=0.1)
    assert loudness == pytest.approx(TARGET, abs=0.5)
    assert peak == pytest.approx(TARGET + SINE_CREST_DB, abs=0.1)  # 12.5 dB down, by hand
    uploaded, _ = soundfile.read(io.BytesIO(data), dtype="float64")
    np.testing.assert_allclose(stored, uploaded * 10 ** ((peak + 0.5) / 20), atol=1e-6)  # one gain, no more


@pytest.mark.parametrize(("samples", "target"), [
    pytest.param(click_train(), TARGET, id="click-train"),
    # A -3 dBFS sine reads about -6 LUFS: reaching 0 LUFS would need a +3 dBFS peak.
    pytest.param(sine(3.0, -3.0), 0.0, id="sine-to-0-LUFS"),
])
def test_peak_ceiling_wins_over_the_target(tmp_path: Path, samples: npt.NDArray[np.float32], target: float) -> None:
    data = encode(samples)
    out = tmp_path / "peaky.flac"

    result = process_upload(data, filename="peaky.wav", out_path=out, max_bytes=MAX_BYTES, target_lufs=target)

    stored, loudness, peak = assert_stored(result, out, data)
    assert peak <= -1.0
    assert peak == pytest.approx(-1.0, abs=0.01)  # the gain was reduced just enough, not more
    assert loudness < target - 0.5
    if target == 0.0:  # the sine, peak at the -1 dBFS ceiling: -4.01 LUFS, by hand
        assert loudness == pytest.approx(-1.0 - SINE_CREST_DB, abs=0.1)
    # A gain, not a clipper: the stored waveform is the (16-bit) input scaled, to 24-bit precision.
    uploaded, _ = soundfile.read(io.BytesIO(data), dtype="float64")
    scale = float(np.max(np.abs(stored)) / np.max(np.abs(uploaded)))
    np.testing.assert_allclose(stored, uploaded * scale, atol=2e-7)


def test_custom_ceiling_is_respected(tmp_path: Path) -> None:
    data = encode(click_train())
    out = tmp_path / "peaky.flac"
    result = process_upload(data, filename="peaky.wav", out_path=out, max_bytes=MAX_BYTES, max_peak_dbfs=-6.0)
    _, _, peak = measure(out)
    assert peak <= -6.0 and result.peak_dbfs <= -6.0


def test_success_replaces_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "item.flac"
    out.write_bytes(b"previous version")
    data = encode(sine(1.0, -20.0))
    process_upload(data, filename="new.wav", out_path=out, max_bytes=MAX_BYTES)
    assert soundfile.info(str(out)).frames == 48000
    assert not out.with_suffix(".tmp").exists()


# --- refusals ------------------------------------------------------------------------------------

def truncated_wav_header() -> bytes:
    return encode(sine(2.0, -20.0))[:30]  # cut inside the 'fmt ' chunk


def header_only_wav() -> bytes:
    return encode(np.zeros(0, dtype=np.float32))


def out_of_phase_stereo() -> bytes:
    tone = sine(2.0, -6.0)
    return encode(np.stack([tone, -tone], axis=1))


def nan_float_wav() -> bytes:
    samples = sine(2.0, -6.0)
    samples[1000] = np.nan
    return encode(samples, subtype="FLOAT")


REFUSALS: dict[str, tuple[Callable[[], bytes], str, dict[str, float]]] = {
    "empty": (lambda: b"", "empty", {}),
    "random-bytes": (lambda: random.Random(7).randbytes(8192), "undecodable", {}),
    "text-file": (lambda: "Thông báo: họp thôn lúc 8 giờ sáng.\n".encode() * 40, "undecodable", {}),
    "truncated-wav-header": (truncated_wav_header, "undecodable", {}),
    "mpeg-sync-then-garbage": (lambda: b"\xff\xfb\x90\x00" + random.Random(3).randbytes(4096), "undecodable", {}),
    "aiff-not-accepted": (lambda: encode(sine(2.0, -20.0), fmt="AIFF"), "undecodable", {}),
    "nan-samples": (nan_float_wav, "undecodable", {}),
    "no-samples": (header_only_wav, "empty", {}),
    "too-short": (lambda: encode(sine(0.2, -20.0)), "too_short", {}),
    "too-long": (lambda: encode(sine(2.0, -20.0)), "too_long", {"max_duration_s": 1.0}),
    "digital-silence": (lambda: encode(np.zeros((96000, 2), dtype=np.float32)), "silent", {}),
    "below-absolute-gate": (lambda: encode(sine(2.0, -90.0)), "silent", {}),
    "out-of-phase-stereo": (out_of_phase_stereo, "silent", {}),
    "too-large": (lambda: encode(sine(2.0, -20.0)), "too_large", {"max_bytes": 1000}),
    "too-large-garbage": (lambda: b"x" * 2000, "too_large", {"max_bytes": 1999}),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_leaves_no_file(tmp_path: Path, case: str) -> None:
    make, code, options = REFUSALS[case]
    out = tmp_path / "item.flac"
    max_bytes = int(options.get("max_bytes", MAX_BYTES))
    max_duration_s = options.get("max_duration_s", 3 * 3600.0)

    with pytest.raises(MediaError) as caught:
        process_upload(make(), filename="upload.bin", out_path=out, max_bytes=max_bytes, max_duration_s=max_duration_s)

    assert caught.value.code == code
    assert "upload.bin" in caught.value.message
    assert str(caught.value) == caught.value.message
    assert isinstance(caught.value, ValueError)
    assert not out.exists()
    assert not out.with_suffix(".tmp").exists()
    assert list(tmp_path.iterdir()) == []


@needs_ffmpeg
def test_refused_mp3_names_the_problem(tmp_path: Path) -> None:
    data = ffmpeg(tmp_path, "in.mp3", *QUIET_TONE, "-c:a", "libmp3lame")[:100]
    out = tmp_path / "item.flac"
    with pytest.raises(MediaError) as caught:
        process_upload(data, filename="in.mp3", out_path=out, max_bytes=MAX_BYTES)
    assert caught.value.code == "undecodable"
    assert "pipe" not in caught.value.message  # libsndfile's misleading text is replaced
    assert not out.exists() and not out.with_suffix(".tmp").exists()


def test_refusal_keeps_the_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "item.flac"
    out.write_bytes(b"previous version")
    with pytest.raises(MediaError):
        process_upload(encode(np.zeros(48000, dtype=np.float32)), filename="z.wav", out_path=out, max_bytes=MAX_BYTES)
    assert out.read_bytes() == b"previous version"
    assert not out.with_suffix(".tmp").exists()


def test_too_large_is_refused_before_decoding(tmp_path: Path) -> None:
    """Garbage over the limit says too_large, not undecodable: the size check comes first."""
    with pytest.raises(MediaError) as caught:
        process_upload(b"\0" * 101, filename="big.wav", out_path=tmp_path / "x.flac", max_bytes=100)
    assert caught.value.code == "too_large"


def test_storage_failure_is_not_a_media_error(tmp_path: Path) -> None:
    out = tmp_path / "missing-folder" / "item.flac"
    with pytest.raises(OSError):
        process_upload(encode(sine(1.0, -20.0)), filename="ok.wav", out_path=out, max_bytes=MAX_BYTES)
    assert not out.exists() and not out.with_suffix(".tmp").exists()


def test_filename_cannot_forge_log_lines(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as caught:
        process_upload(b"", filename="a.wav\nERROR forged", out_path=tmp_path / "x.flac", max_bytes=10)
    assert "\n" not in caught.value.message


def test_out_path_must_not_be_the_temporary_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.tmp"):
        process_upload(encode(sine(1.0, -20.0)), filename="ok.wav", out_path=tmp_path / "x.tmp", max_bytes=MAX_BYTES)


def tiny_rate_wav(rate: int = 1, frames: int = 3600) -> bytes:
    """A few kilobytes that declare an hour at 1 Hz: resampled 48,000-fold it would be gigabytes."""
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(rate)
        w.writeframes(bytes(random.Random(1).randrange(256) for _ in range(frames)))
    return out.getvalue()


@pytest.mark.parametrize("rate", [1, 100, 7999, 400_000])
def test_absurd_sample_rates_are_refused_from_the_header(tmp_path: Path, rate: int) -> None:
    data = tiny_rate_wav(rate, frames=max(3600, rate * 2))
    with pytest.raises(MediaError) as info:
        process_upload(data, filename="bomb.wav", out_path=tmp_path / "x.flac", max_bytes=10**7)
    assert info.value.code == "undecodable" and f"{rate} Hz" in info.value.message
    assert not (tmp_path / "x.flac").exists()


def test_too_many_channels_are_refused_from_the_header(tmp_path: Path) -> None:
    data = encode(np.zeros((4800, 16), dtype=np.float32), subtype="PCM_16")
    with pytest.raises(MediaError) as info:
        process_upload(data, filename="many.wav", out_path=tmp_path / "x.flac", max_bytes=10**7)
    assert info.value.code == "undecodable" and "16 channels" in info.value.message


def test_resampled_as_a_stream_the_length_is_exact(tmp_path: Path) -> None:
    """44.1 kHz in, 48 kHz out, block by block: exactly as many samples as the duration asks."""
    seconds = 7.3
    data = encode(sine(seconds, -12.0, 440.0, rate=44100), rate=44100, subtype="PCM_16")
    result = process_upload(data, filename="cd.wav", out_path=tmp_path / "cd.flac", max_bytes=10**8)
    stored, rate = soundfile.read(str(tmp_path / "cd.flac"))
    assert rate == 48000 and abs(stored.size - round(seconds * 48000)) <= 2
    assert abs(result.duration_s - seconds) < 1e-3
