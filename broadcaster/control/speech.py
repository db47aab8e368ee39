"""Speech for text, as control asks for it: render, store as media, preview.

``app.speech`` is what bulletins (on approval), the API (a preview before
approval) and alerts use. A render is the engine of the text's language
(control/tts.py ``Voices``), then one static gain to the media library's
loudness (control/media.py ``loudness_gain``: -16 LUFS, the peak ceiling), so a
read bulletin is heard at the level of the uploaded jingle before it. Output
with nothing above the BS.1770 gate is refused: silence must never be what a
bulletin turns into.

Synthetic speech differs from a programme in one way: its crest factor.
espeak-ng's plosives peak about 18 dB over its loudness, so the upload rule
(a gain, never above the -1 dBFS ceiling) would leave it near -19 LUFS, 3 LU
under the jingle. Speech is therefore allowed up to ``MAX_LIMITING_DB`` of
look-ahead peak limiting (``limit_peaks``: the gain ramps down over 10 ms
before a peak and back up after it, never a sample above the ceiling) on
those few transients; what would need more stays quieter instead, as an
upload does. A programme is never limited: it has dynamics to keep.

Renders run in a small pool of their own (``tts.workers`` threads; the engines
themselves are processes), at most ``tts.max_waiting`` more queued, then
``Busy`` at once (the API answers 503 with Retry-After): a burst of previews
costs a bounded queue, never the reactor, and never delays an alert, whose
speech is made in the alert-messages threads (control/alerts.py) with the
same ``speak``.
"""

from __future__ import annotations

import io
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import soundfile
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from broadcaster import metrics
from broadcaster.codecs.ogg import OggOpusWriter
from broadcaster.codecs.opus import OpusEncoder, OpusSettings
from broadcaster.codecs.pcm import SAMPLE_RATE, Audio, db_to_gain
from broadcaster.control.space import require
from broadcaster.control.tts import NoVoice, SpeechError, TextToSpeech, Voices, stop_engines
from broadcaster.control.workers import Busy
from broadcaster.storage.logs import Actor
from broadcaster.storage.media import NewMedia

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer

T = TypeVar("T")

MAX_LIMITING_DB = 6.0  # at most this much peak reduction for speech; beyond, it is stored quieter
LOOKAHEAD = 480  # samples (10 ms) the limiter's gain ramps over, before and after a peak
_BLOCK = 1 << 19  # samples limited at once (about 11 s), so a long text costs a few blocks of memory
MIN_SECONDS = 1.0  # shorter speech ("Có.") is padded with silence: BS.1770 needs 400 ms blocks to measure
PREVIEW_BITRATE = 32000
RETRY_AFTER_S = 10


class TextTooLong(SpeechError):
    """More text than ``tts.max_text_chars``."""


class Speech:
    def __init__(self, app: BroadcastServer, voices: Voices, pool: Any = None) -> None:
        """``pool``: where renders run (tests give one that runs work at once)."""
        self.app = app
        self.voices = voices
        self._pool = pool
        self.in_flight = 0
        self._stopping = False

    # --- what bulletins and the API call --------------------------------------------------------

    def render(self, text: str, language: str) -> Deferred[Audio]:
        """The text read by its language's engine, at the library's loudness (48 kHz mono).
        Fails with NoVoice, TextTooLong, SpeechError (the engine failed, or made silence) or Busy."""
        try:
            engine = self._engine(text, language)
        except SpeechError as exc:
            return fail(exc)
        return self._run(self.speak, engine, text, language)

    def store(self, audio: Audio, *, zone: str, title: str, actor: Actor | str) -> Deferred[dict[str, Any]]:
        """``audio`` (a render) as a media library item of ``zone``: a FLAC file in storage.media_dir
        and its row, with loudness measured from the stored file, so it plays like any upload.
        Fires with the row (its path included; size_bytes is the stored file's). ValueError for an
        unknown zone or no title; DiskFull (507) when the disk has no room left for it; Busy when the
        speech pool is full."""
        if zone not in self.app.zones:
            return fail(ValueError(f"no zone {zone!r}"))
        if not title.strip():
            return fail(ValueError("a stored speech item needs a title"))
        who = actor if isinstance(actor, Actor) else Actor(actor)
        settings = self.app.config.storage
        media_dir = Path(settings.media_dir)
        try:
            require(media_dir, audio.size * 3, settings.min_free_bytes, "speech not stored")  # 24-bit FLAC at most
        except Exception as exc:
            return fail(exc)
        media_id = uuid.uuid4().hex
        path = media_dir / f"{media_id}.flac"
        target = settings.loudness_target_lufs

        def stored(result: Any) -> Deferred[dict[str, Any]]:
            item = NewMedia(id=media_id, zone=zone, title=title.strip(), filename="text-to-speech",
                            path=str(path), duration_s=result.duration_s, loudness_lufs=result.loudness_lufs,
                            original_lufs=result.original_lufs, sha256=result.sha256, size_bytes=path.stat().st_size)
            added = self.app.storage.media.add(who, item)

            def not_added(failure: Any) -> Any:
                path.unlink(missing_ok=True)  # nothing stored half-way
                return failure

            return added.addErrback(not_added)

        return self._run(_write_media, audio, path, target).addCallback(stored)

    def preview(self, text: str, language: str) -> Deferred[bytes]:
        """The render as a small Ogg/Opus file (32 kb/s speech) for the browser to play before approval."""
        try:
            engine = self._engine(text, language)
        except SpeechError as exc:
            return fail(exc)
        return self._run(lambda: ogg_opus(self.speak(engine, text, language)))

    # --- the work -------------------------------------------------------------------------------

    def speak(self, engine: TextToSpeech, text: str, language: str) -> Audio:
        """Blocking (a worker thread): synthesise, refuse silence, normalise; counted by engine."""
        if self._stopping:  # queued before the server began to stop: no new engine is started
            raise SpeechError("the server is stopping")
        started = time.perf_counter()
        outcome = "failed"
        try:
            audio = engine.synthesize(text, self.voices.code_for(language) or language)
            if audio.size < MIN_SECONDS * SAMPLE_RATE:
                audio = np.concatenate([audio, np.zeros(int(MIN_SECONDS * SAMPLE_RATE) - audio.size, np.float32)])
            normalised = normalise_speech(audio, self.app.config.storage.loudness_target_lufs)
            if normalised is None:
                outcome = "silent"
                raise SpeechError(f"text-to-speech engine {engine.name!r} produced only silence for this "
                                  f"{language} text; nothing is stored or played")
            outcome = "ok"
            return normalised
        finally:
            metrics.speech_renders_total.labels(engine.name, outcome).inc()
            metrics.speech_render_seconds.labels(engine.name).observe(time.perf_counter() - started)

    def _engine(self, text: str, language: str) -> TextToSpeech:
        limit = self.app.config.tts.max_text_chars
        try:
            engine = self.voices.require(language)
        except NoVoice:
            metrics.speech_renders_total.labels("none", "no_voice").inc()
            raise
        if len(text) > limit:
            metrics.speech_renders_total.labels(engine.name, "too_long").inc()
            raise TextTooLong(f"the text is {len(text)} characters; speech is made of at most {limit} "
                              "(tts.max_text_chars)")
        if not text.strip():
            raise SpeechError("there is no text to read")
        return engine

    def _run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """fn(*args) in the speech pool; Busy at once when it is full."""
        tts = self.app.config.tts
        if self.in_flight >= tts.workers + tts.max_waiting:
            metrics.speech_renders_total.labels("none", "busy").inc()
            return fail(Busy(tts.workers, tts.max_waiting, RETRY_AFTER_S))
        self.in_flight += 1
        deferred: Deferred[T] = deferToThreadPool(self.app.reactor, self._threads(), fn, *args)

        def settled(result: Any) -> Any:
            self.in_flight -= 1
            return result

        return deferred.addBoth(settled)

    def _threads(self) -> Any:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=self.app.config.tts.workers, name="broadcaster-speech")
            self._pool.start()
            self.app.reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        return self._pool

    def stop(self) -> None:
        """Engines running now are killed, and renders still queued start none, so stopping the
        server never waits minutes for a synthesis (the pool's threads are joined at shutdown)."""
        self._stopping = True
        stop_engines()


def _loudness(audio: Audio) -> float:
    from broadcaster.codecs.loudness import LoudnessMeter  # pyloudnorm and scipy: slow to import

    meter = LoudnessMeter(SAMPLE_RATE)
    meter.feed(audio)
    return meter.integrated()


def normalise_speech(audio: Audio, target_lufs: float, ceiling_dbfs: float | None = None) -> Audio | None:
    """Speech at ``target_lufs`` with no sample above the ceiling (control/media.py's), using at most
    MAX_LIMITING_DB of peak limiting; quieter than the target where that would need more. None if
    the audio is silent (nothing above the BS.1770 gate)."""
    from broadcaster.control.media import PEAK_CEILING_DBFS, loudness_gain

    ceiling_db = PEAK_CEILING_DBFS if ceiling_dbfs is None else ceiling_dbfs
    loudness, peak = _loudness(audio), float(np.max(np.abs(audio))) if audio.size else 0.0
    if not np.isfinite(loudness) or peak <= 0.0:
        return None
    ceiling = db_to_gain(ceiling_db)
    aim = target_lufs
    out = audio
    for _ in range(3):  # limiting lowers the loudness a little: aim again, twice at most
        gain = loudness_gain(loudness, peak, target_lufs=aim, max_peak_dbfs=ceiling_db + MAX_LIMITING_DB)
        out = limit_peaks(audio * np.float32(gain), ceiling)
        reached = _loudness(out)
        if abs(reached - target_lufs) < 0.1 or gain * peak >= db_to_gain(ceiling_db + MAX_LIMITING_DB) * 0.999:
            break
        aim += target_lufs - reached
    return out


def limit_peaks(audio: Audio, ceiling: float, lookahead: int = LOOKAHEAD) -> Audio:
    """A look-ahead peak limiter, pure and whole-signal: each sample's gain is the mean, over the
    ``lookahead`` samples around it, of the least gain any sample within ``lookahead`` needs. Every
    gain in that mean is at most what the sample itself needs, so no sample leaves above
    ``ceiling``; and the gain ramps over ``lookahead`` samples on each side, never a step. Worked
    a block at a time (with the margin the filters reach), so memory is a few blocks."""
    from scipy.ndimage import minimum_filter1d

    if audio.size == 0 or float(np.max(np.abs(audio))) <= ceiling:
        return audio.astype(np.float32, copy=False)
    out = np.empty(audio.size, dtype=np.float32)
    limit = np.float32(ceiling * (1 - 1e-6))  # float32 rounding of the products never lands above the ceiling
    half = lookahead // 2
    margin = lookahead + half + 1
    for start in range(0, audio.size, _BLOCK):
        lo, hi = max(0, start - margin), min(audio.size, start + _BLOCK + margin)
        x = audio[lo:hi].astype(np.float32, copy=False)
        need = np.minimum(np.float32(1.0), limit / np.maximum(np.abs(x), np.float32(1e-12)))
        held = minimum_filter1d(need, size=2 * lookahead + 1, mode="nearest")
        running = np.concatenate([[0.0], np.cumsum(held, dtype=np.float64)])
        idx = np.arange(held.size)
        left, right = np.maximum(idx - half, 0), np.minimum(idx + half + 1, held.size)
        gain = ((running[right] - running[left]) / (right - left)).astype(np.float32)
        end = min(audio.size, start + _BLOCK)
        out[start:end] = (x * np.minimum(gain, need))[start - lo:end - lo]
    return out


def _write_media(audio: Audio, path: Path, target_lufs: float) -> Any:
    """In the speech pool: through the media library's own writer (process_upload: 24-bit FLAC,
    flushed, read back and measured, then renamed into place), so a render is stored exactly as
    an upload is."""
    from broadcaster.control.media import MediaError, process_upload

    buffer = io.BytesIO()
    soundfile.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    data = buffer.getvalue()
    try:
        return process_upload(data, filename="text-to-speech", out_path=path, max_bytes=len(data),
                              target_lufs=target_lufs, max_duration_s=24 * 3600)
    except MediaError as exc:  # a render is never silent or too short: this would be a bug, said clearly
        raise SpeechError(f"the speech could not be stored: {exc.message}") from None


def ogg_opus(audio: Audio, bitrate: int = PREVIEW_BITRATE) -> bytes:
    """Audio as a complete Ogg/Opus file (RFC 7845), encoded once with the voip application."""
    encoder = OpusEncoder(OpusSettings(frame_samples=960, bitrate=bitrate, application="voip"))
    writer = OggOpusWriter(serial=secrets.randbits(31), pre_skip=encoder.lookahead, page_samples=SAMPLE_RATE)
    n = encoder.frame_samples
    # The encoder's look-ahead is flushed with silence, and the last frame is filled out.
    padded = np.concatenate([audio.astype(np.float32, copy=False), np.zeros(encoder.lookahead, np.float32)])
    padded = np.concatenate([padded, np.zeros(-padded.size % n, np.float32)])
    out = [writer.header_pages]
    for start in range(0, padded.size, n):
        page = writer.add_packet(encoder.encode(padded[start:start + n]), n)
        if page:
            out.append(page)
    last = writer.flush(eos=True)
    if last:
        out.append(last)
    return b"".join(out)
