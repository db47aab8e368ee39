"""Media library uploads: check, decode, loudness-normalise and store one audio file.

An operator uploads a programme (an announcement, a jingle, a recorded
broadcast) in whatever format their phone or editor produced. Before it can be
scheduled it is turned into the one shape the rest of the server plays
without further work: 48 kHz mono, at a common loudness, stored as 24-bit FLAC
(lossless, so normalising never stacks a second lossy generation on top of an
MP3 or Opus upload, and 24 bits keep the quiet tail of a gain change).

Loudness follows ITU-R BS.1770-4 / EBU R128 integrated loudness (measured as a
stream, codecs/loudness.py, with pyloudnorm's filters), because listeners
judge "too loud / too quiet" by loudness, not by peak: normalising every
item to one target means a village does not hear the weather report at half
the level of the jingle before it. Gain is a single static factor, never
compression, so the programme keeps its dynamics. Everything here works a
block at a time on the decoded blocks, the only full-length copy held: an
hour-long upload peaks at about one hour of 48 kHz float32 (690 MB).

This module is pure: bytes in, a file and its metadata out. It knows nothing
of HTTP or the database, so the web handler decides how to report a
:class:`MediaError` and where the stored file is recorded.
"""

from __future__ import annotations

import errno
import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from broadcaster.codecs.audiofile import AudioFileError
from broadcaster.codecs.loudness import LoudnessMeter
from broadcaster.codecs.pcm import SAMPLE_RATE, Audio, db_to_gain, gain_to_db, to_mono
from broadcaster.control.space import free_bytes

#: Upload formats, as an operator would name them. Ogg means Vorbis or Opus
#: inside; MP3 also covers MPEG-1/2 Layer I and II, which the same decoder reads.
ACCEPTED = ("WAV", "FLAC", "OGG", "MP3")

#: libsndfile's name for a container -> the accepted format it belongs to.
#: WAVEX (WAVE_FORMAT_EXTENSIBLE, written by many tools for 24-bit or
#: multichannel WAV) and RF64 (WAV past 4 GiB, from broadcast recorders) are
#: WAV to an operator. Anything else libsndfile happens to read (AIFF, CAF,
#: MAT5, VOC, ...) is refused, so the accepted list stays what we document
#: and test rather than whatever the bundled libsndfile build supports.
_FORMAT_FAMILY = {"WAV": "WAV", "WAVEX": "WAV", "RF64": "WAV", "FLAC": "FLAC", "OGG": "OGG", "MP3": "MP3"}

#: Shortest programme accepted. BS.1770 gates on 400 ms blocks; below about
#: half a second there is at most one block and the "integrated" loudness of a
#: click is meaningless, so such uploads are refused rather than mis-normalised.
MIN_DURATION_S = 0.5

#: Stored sample format. 24-bit FLAC: lossless, about half the size of WAV.
STORED_FORMAT = "FLAC"
STORED_SUBTYPE = "PCM_24"

#: One step of the stored 24-bit format, as a float sample.
_LSB_24 = 2.0**-23

#: Frames decoded per read: multichannel audio is folded to mono a block at a
#: time, so a long stereo upload never sits in memory at full width.
_READ_BLOCK_FRAMES = 1 << 20
MIN_RATE_HZ, MAX_RATE_HZ = 8000, 192000  # what a programme file really uses
MAX_CHANNELS = 8

#: The highest sample peak an item is normalised to: headroom for the Opus encoder's overshoot.
PEAK_CEILING_DBFS = -1.0

_ACCEPTED_TEXT = "WAV, FLAC, Ogg (Vorbis or Opus) or MP3"
FULL_BELOW_BYTES = 1024 * 1024  # a write that failed with less than this free ran out of space


class MediaError(ValueError):
    """An upload that cannot become a library item; the operator must fix the file.

    ``code`` is a stable machine string for clients and translations:
    ``too_large``, ``empty``, ``undecodable``, ``too_short``, ``too_long`` or
    ``silent``. ``message`` is a sentence for the operator saying what was
    wrong and what is accepted. Server-side failures (a full disk, a
    permission error) are *not* MediaError: they propagate as OSError, since
    re-uploading would not help.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"MediaError({self.code!r}, {self.message!r})"

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        """Uploads are processed in a worker process: the error comes back pickled."""
        return MediaError, (self.code, self.message)


@dataclass(frozen=True)
class ProcessedMedia:
    """What was stored, and the numbers an operator needs to trust it.

    ``original_lufs`` is measured on the upload after folding to mono at
    48 kHz, the same signal the gain is computed from, so
    ``loudness_lufs - original_lufs`` is the gain that was applied. For a
    stereo upload with similar channels a stereo BS.1770 meter reads up to
    3 LU higher than this (it sums the channels' powers instead of
    averaging the samples).

    ``loudness_lufs`` and ``peak_dbfs`` are re-measured from the stored file
    itself. Loudness equals the target unless the peak ceiling limited the
    gain, in which case it is lower (see :func:`process_upload`).
    ``peak_dbfs`` is the sample peak, not the BS.1770 true peak, which can be
    a fraction of a dB higher between samples.
    """

    path: Path
    duration_s: float
    original_lufs: float
    loudness_lufs: float
    peak_dbfs: float
    sha256: str
    size_bytes: int


def process_upload(data: bytes, *, filename: str, out_path: Path, max_bytes: int,
                   target_lufs: float = -16.0, max_peak_dbfs: float = PEAK_CEILING_DBFS,
                   max_duration_s: float = 3 * 3600) -> ProcessedMedia:
    """Validate ``data``, normalise it and store it at ``out_path`` as 48 kHz mono 24-bit FLAC.

    ``filename`` is the name the operator uploaded, used only in messages
    (the format is recognised from the bytes, never from the extension).

    Loudness: a single gain brings the integrated loudness to ``target_lufs``,
    unless that would push the sample peak above ``max_peak_dbfs``; then the
    gain is reduced until the peak sits at the ceiling, and the stored item
    is *quieter than the target* (``loudness_lufs < target_lufs``). Nothing
    is clipped or limited, because a brick-wall clip on a loud upload
    is audible distortion on every loudspeaker, while a programme a few LU
    quieter is merely quieter. The ceiling leaves headroom for the Opus
    encoder's overshoot downstream.

    The file is written to ``out_path.with_suffix(".tmp")``, flushed to disk,
    read back and measured, and only then renamed over ``out_path``. A
    refusal or a crash therefore never leaves a partial file at ``out_path``
    (an existing file there is kept until the new one is complete), and the
    temporary file is removed on every error.

    Raises :class:`MediaError` for an upload that cannot be used, and
    ``ValueError`` for nonsensical arguments.
    """
    if max_peak_dbfs > 0.0:
        # Above full scale libsndfile would silently clip while writing 24-bit PCM.
        raise ValueError(f"max_peak_dbfs must be at most 0 dBFS, got {max_peak_dbfs}")
    tmp_path = out_path.with_suffix(".tmp")
    if tmp_path == out_path:
        raise ValueError(f"out_path {out_path} must not end in .tmp: that name is the temporary file")

    filename = _display_name(filename)
    size = len(data)
    if size > max_bytes:
        raise MediaError("too_large", f"{filename} is {_human_bytes(size)}; uploads are limited to "
                                      f"{_human_bytes(max_bytes)}. Shorten it or export it at a lower bit rate.")
    if size == 0:
        raise MediaError("empty", f"{filename} is empty (0 bytes); upload an audio file in {_ACCEPTED_TEXT}.")
    digest = hashlib.sha256(data).hexdigest()

    blocks, duration_s = _decode(data, filename, max_duration_s)
    if duration_s < MIN_DURATION_S:
        raise MediaError("too_short", f"{filename} is only {duration_s:.2f} s long; programmes must be at least "
                                      f"{MIN_DURATION_S} s so their loudness can be measured.")
    # Measured block by block: the decoded blocks are the only full-length copy of the programme.
    meter = LoudnessMeter(SAMPLE_RATE)
    peak = 0.0
    for block in blocks:
        meter.feed(block)
        peak = max(peak, float(np.max(np.abs(block)))) if block.size else peak
    original_lufs = meter.integrated()
    if not math.isfinite(original_lufs):
        raise MediaError("silent", f"{filename} is silent: no part of it is louder than -70 LUFS, so there is "
                                   "nothing to broadcast. (A stereo file whose channels are in opposite phase "
                                   "also ends up silent once folded to mono.)")

    gain = loudness_gain(original_lufs, peak, target_lufs=target_lufs, max_peak_dbfs=max_peak_dbfs)

    try:
        _write_flac(tmp_path, blocks, np.float32(gain))  # empties ``blocks`` as it goes
        stored_samples, loudness_lufs, stored_peak = _read_back(tmp_path)
        stored_duration_s = stored_samples / SAMPLE_RATE
        peak_dbfs = gain_to_db(stored_peak)
        os.replace(tmp_path, out_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_directory(out_path.parent)
    return ProcessedMedia(path=out_path, duration_s=stored_duration_s, original_lufs=original_lufs,
                          loudness_lufs=loudness_lufs, peak_dbfs=peak_dbfs, sha256=digest, size_bytes=size)


def loudness_gain(original_lufs: float, peak: float, *, target_lufs: float,
                  max_peak_dbfs: float = PEAK_CEILING_DBFS) -> float:
    """The one static gain that brings audio measured at ``original_lufs`` (finite) with sample peak
    ``peak`` (> 0) to ``target_lufs``, or less where the peak would pass ``max_peak_dbfs``
    (see process_upload). Uploads and synthesised speech (control/speech.py) share it, so both are
    heard at one loudness."""
    # The largest gain whose peak still fits. A few 24-bit steps of margin absorb
    # float32 rounding of the product and the rounding to 24 bits in the writer,
    # so the stored peak really is at or below the ceiling (the cost is ~4e-6 dB).
    ceiling = db_to_gain(max_peak_dbfs) - 4 * _LSB_24
    return min(db_to_gain(target_lufs - original_lufs), ceiling / peak)


def _decode(data: bytes, filename: str, max_duration_s: float) -> tuple[list[Audio], float]:
    """Decode in memory to 48 kHz mono float32 blocks; refuse unknown formats and over-long programmes.

    Decoding from a BytesIO (libsndfile's virtual I/O) means the upload never
    touches the disk before it is known to be audio. The length is checked
    from the header before the samples are decoded, so a three-hour limit is
    not enforced by first allocating three hours of audio; it is checked again
    while decoding because MP3 lengths in the header are estimates. The
    blocks are never joined: joining would hold the programme twice.
    """
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            family = _FORMAT_FAMILY.get(sound.format)
            if family is None:
                raise MediaError("undecodable", f"{filename} is {sound.format_info} audio, which is not accepted; "
                                                f"upload {_ACCEPTED_TEXT}.")
            rate = int(sound.samplerate)
            if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
                # A 1 Hz file of a few kilobytes would be resampled 48,000-fold into gigabytes.
                raise MediaError("undecodable", f"{filename} declares a sample rate of {rate} Hz; programmes "
                                                f"are {MIN_RATE_HZ}–{MAX_RATE_HZ} Hz {_ACCEPTED_TEXT}.")
            if not 1 <= sound.channels <= MAX_CHANNELS:
                raise MediaError("undecodable", f"{filename} declares {sound.channels} channels; programmes "
                                                f"have 1 to {MAX_CHANNELS}.")
            _check_length(filename, sound.frames / rate, max_duration_s)
            # Resampled as a stream, block by block: the peak memory is the 48 kHz result
            # and one block, never the whole file at its own rate and channel count as well.
            resampler = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
            blocks: list[Audio] = []
            source_frames = 0
            while True:
                block = sound.read(_READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                source_frames += block.shape[0]
                _check_length(filename, source_frames / rate, max_duration_s)  # headers of MP3 only estimate
                mono = to_mono(block)
                blocks.append(_finite(mono if resampler is None else resampler.resample_chunk(mono), filename))
            if resampler is not None:
                blocks.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        # LibsndfileError is a RuntimeError subclass; plain RuntimeError covers older soundfile.
        raise MediaError("undecodable", f"{filename} could not be decoded as audio ({_reason(exc)}); "
                                        f"upload {_ACCEPTED_TEXT}.") from exc
    if not source_frames:
        raise MediaError("empty", f"{filename} is a {family} file with no audio samples in it; "
                                  "upload a file that contains the programme.")
    # Each block is its own writable array, so the gain can be applied in place.
    blocks = [np.array(b, dtype=np.float32, copy=not b.flags.writeable or not b.flags.c_contiguous)
              for b in blocks if b.size]
    return blocks, sum(b.size for b in blocks) / SAMPLE_RATE


def _finite(block: Audio, filename: str) -> Audio:
    if not np.all(np.isfinite(block)):
        # Float WAV can carry NaN/inf; one of them would turn the whole loudness into NaN.
        raise MediaError("undecodable", f"{filename} contains invalid (NaN or infinite) samples; "
                                        f"export it again as {_ACCEPTED_TEXT}.")
    return block


def _check_length(filename: str, duration_s: float, max_duration_s: float) -> None:
    if duration_s > max_duration_s:
        raise MediaError("too_long", f"{filename} is {_human_duration(duration_s)} long; programmes are limited to "
                                     f"{_human_duration(max_duration_s)}. Split it into shorter parts.")


def _write_flac(path: Path, blocks: list[Audio], gain: np.float32) -> None:
    """Write and flush to disk before the rename: otherwise a power cut (common on
    commune power) can leave the new name pointing at an empty file.

    Opened with Python's ``open`` rather than by name in libsndfile so that a
    missing folder or a permission problem surfaces as a plain OSError naming
    the path (libsndfile reports those with an empty message).
    """
    try:
        with open(path, "wb") as handle:
            with soundfile.SoundFile(handle, mode="w", samplerate=SAMPLE_RATE, channels=1,
                                     format=STORED_FORMAT, subtype=STORED_SUBTYPE) as sound:
                blocks.reverse()
                while blocks:  # each block leaves memory once written
                    block = blocks.pop()
                    block *= gain
                    sound.write(block)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        raise
    except Exception as exc:
        # soundfile's write callback swallows the OSError of a full disk and fails with
        # something else (an AssertionError): say what it was, so the API answers 507.
        if free_bytes(path.parent) < FULL_BELOW_BYTES:
            raise OSError(errno.ENOSPC, f"no space left writing {path.name}", str(path)) from exc
        raise


def _read_back(path: Path) -> tuple[int, float, float]:
    """Decode what was written (samples, loudness, peak), so the metadata describes the file and
    not our intentions; a block at a time, like everything here.

    Reading it back also proves the stored file decodes before it replaces
    anything; if it does not, that is a server fault (OSError), not the upload's.
    """
    try:
        with soundfile.SoundFile(str(path)) as sound:
            if sound.samplerate != SAMPLE_RATE or sound.channels != 1:
                raise OSError(f"{path}: stored {sound.samplerate} Hz x {sound.channels}, "
                              f"expected {SAMPLE_RATE} Hz mono")
            meter, peak = LoudnessMeter(SAMPLE_RATE), 0.0
            while True:
                block = sound.read(_READ_BLOCK_FRAMES, dtype="float32")
                if block.size == 0:
                    break
                meter.feed(block)
                peak = max(peak, float(np.max(np.abs(block))))
        return meter.samples, meter.integrated(), peak
    except (AudioFileError, soundfile.LibsndfileError) as exc:
        raise OSError(f"{path}: the stored file does not read back: {exc}") from exc


def _fsync_directory(path: Path) -> None:
    """Make the rename itself durable. Best effort: some filesystems refuse to fsync a directory."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    """libsndfile's own words, without soundfile's "Error opening <_io.BytesIO ...>:" prefix."""
    text = exc.error_string if isinstance(exc, soundfile.LibsndfileError) else str(exc)
    if "not a regular file" in text:
        # libsndfile maps a failed MPEG (mpg123) open to SFE_BAD_FILE_READ, whose text
        # talks about pipes; meaningless for bytes in memory, and baffling to an operator.
        return "no valid MPEG audio frames found"
    return text.strip().rstrip(".") or type(exc).__name__


def _display_name(filename: str) -> str:
    """The uploaded name made safe to put in a message and a log line.

    It comes from the client: control characters (a newline forging a log
    entry) are replaced and an absurdly long name is cut.
    """
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in filename) or "the upload"
    return cleaned if len(cleaned) <= 120 else cleaned[:117] + "..."


def _human_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024.0
        if value < 1024.0 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _human_duration(seconds: float) -> str:
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{seconds:.1f} s"
