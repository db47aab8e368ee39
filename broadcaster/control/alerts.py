"""Emergency alerts and announcements: what plays, on which channels, and the
record of who heard it.

An alert starts at the next frame after it is accepted: its attention signal
is ready at once, and the message (an uploaded file, or text read aloud by a
TTS engine in a worker thread) joins when it is ready, so nothing waits for
the database or for TTS. The alert's source holds the channel (silence while
the message is still being synthesised) until its last repeat or a cancel.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from broadcaster import metrics
from broadcaster.codecs.audiofile import load_audio
from broadcaster.codecs.pcm import SAMPLE_RATE, Audio
from broadcaster.core.mixer import MixerInput, Priority

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer
    from broadcaster.core.channel import Channel

log = logging.getLogger(__name__)


class TextToSpeech(Protocol):
    name: str

    def synthesize(self, text: str, language: str = "vi") -> Audio:
        """Blocking: call from a worker thread. Returns 48 kHz mono audio."""


class EspeakTTS:
    """espeak-ng with its Vietnamese voice: small, offline, always installable.
    A better engine plugs in behind the same interface."""

    name = "espeak-ng"

    def __init__(self, executable: str | None = None, rate_wpm: int = 140) -> None:
        found = executable or shutil.which("espeak-ng")
        if found is None:
            raise RuntimeError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
        self.executable = found
        self.rate_wpm = rate_wpm

    def synthesize(self, text: str, language: str = "vi") -> Audio:
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "speech.wav"
            subprocess.run([self.executable, "-v", language, "-s", str(self.rate_wpm), "-w", str(wav), "--", text],
                           check=True, capture_output=True, timeout=120)
            return load_audio(wav)


def two_tone(seconds: float = 2.4, level: float = 0.4) -> Audio:
    """The attention signal: alternating 960/640 Hz, 0.3 s each, with short fades."""
    half = int(0.3 * SAMPLE_RATE)
    t = np.arange(half) / SAMPLE_RATE
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
    pieces = [level * fade * np.sin(2 * np.pi * f * t) for f in (960.0, 640.0)]
    cycle = np.concatenate(pieces)
    repeats = max(1, int(round(seconds / 0.6)))
    return np.concatenate([np.tile(cycle, repeats), np.zeros(int(0.5 * SAMPLE_RATE))]).astype(np.float32)


class AlertSource:
    """attention → message, repeated, with a gap between repeats. While the
    message is not ready yet the source plays silence, holding the channel."""

    def __init__(self, attention: Audio, *, repeat: int, gap_s: float, frame_samples: int = 960,
                 name: str = "alert") -> None:
        self.name = name
        self.frame_samples = frame_samples
        self.attention = attention
        self.message: Audio | None = None
        self.failed = False
        self.repeat = repeat
        self.gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
        self.frames_read = 0
        self.plays_done = 0
        self._queue: list[Audio] = [attention]
        self._current = np.zeros(0, dtype=np.float32)

    def set_message(self, audio: Audio | None) -> None:
        """The message is ready (None: it could not be made; the attention signal stands alone)."""
        self.message = audio
        self.failed = audio is None

    @property
    def finished(self) -> bool:
        return self.plays_done >= self.repeat and not self._current.size and not self._queue

    def _next_segment(self) -> Audio | None:
        """attention, message, gap, attention, message, ... (repeat messages)."""
        if self._queue:
            return self._queue.pop(0)
        if self.failed:
            self.plays_done = self.repeat  # nothing to say beyond the attention signal
            return None
        if self.message is None or self.plays_done >= self.repeat:
            return None  # still synthesising (hold the channel), or done
        self.plays_done += 1
        if self.plays_done < self.repeat:
            self._queue = [self.gap, self.attention]
        return self.message

    def read(self) -> Audio | None:
        if self.finished:
            return None
        out = np.zeros(self.frame_samples, dtype=np.float32)
        filled = 0
        while filled < self.frame_samples:
            if not self._current.size:
                segment = self._next_segment()
                if segment is None:
                    break
                self._current = segment
            n = min(self.frame_samples - filled, self._current.size)
            out[filled:filled + n] = self._current[:n]
            self._current = self._current[n:]
            filled += n
        self.frames_read += 1
        return out

    def skip(self) -> None:
        self.read()


@dataclass
class Alert:
    id: str
    title: str
    zones: list[str]
    channels: list[str]
    priority: Priority
    policy: str
    repeat: int
    created_by: str
    accepted_at: float                   # reactor time when the API accepted it
    volume: int = 100
    text: str = ""
    media_id: str | None = None
    cap_identifier: str | None = None
    sources: dict[str, AlertSource] = field(default_factory=dict)
    inputs: dict[str, MixerInput] = field(default_factory=dict)
    first_frame_s: dict[str, float] = field(default_factory=dict)  # channel -> seconds from accept to first frame
    acknowledged: set[str] = field(default_factory=set)
    commanded: set[str] = field(default_factory=set)
    restored: set[str] = field(default_factory=set)  # acknowledged the command that ended the alert
    ended_at: float | None = None
    log_ids: list[int] = field(default_factory=list)
    ended: str | None = None


class AlertDesk:
    def __init__(self, app: BroadcastServer, tts: TextToSpeech | None) -> None:
        self.app = app
        self.tts = tts
        self.active: dict[str, Alert] = {}
        self.recent: dict[str, Alert] = {}  # ended alerts, newest last, a bounded few for the API
        self.attention = two_tone()

    def start(self, *, title: str, zones: list[str], channels: list[str], priority: Priority, policy: str,
              repeat: int, gap_s: float, created_by: str, volume: int, text: str = "",
              message: Audio | None = None, media_id: str | None = None, language: str = "vi",
              cap_identifier: str | None = None, audit: tuple[str, str | None, str] = ("system", None, ""),
              media_path: str | None = None) -> Alert:
        alert = Alert(id="a-" + uuid.uuid4().hex[:10], title=title, zones=zones, channels=channels,
                      priority=priority, policy=policy, repeat=repeat, created_by=created_by,
                      accepted_at=self.app.reactor.seconds(), volume=volume, text=text, media_id=media_id,
                      cap_identifier=cap_identifier)
        targets = [self.app.channels[c] for c in channels]
        for channel in targets:
            source = AlertSource(self.attention, repeat=repeat, gap_s=gap_s, frame_samples=channel.frame_samples,
                                 name=title)
            if message is not None:
                source.set_message(message)
            alert.sources[channel.id] = source
            # An announcement under an emergency waits (pauses) and is heard after it.
            alert.inputs[channel.id] = channel.mixer.add(source, priority=priority, policy=policy, fade_in=False,
                                                         on_preempt="pause", on_end=partial(self._channel_done, alert))
            channel.after_send.append(self._first_frame_probe(alert, channel))
        self.active[alert.id] = alert
        metrics.alerts_total.labels(priority.name.lower()).inc()
        if message is None and media_path:
            self._load(alert, media_path)
        elif message is None and text:
            self._synthesize(alert, text, language)
        elif message is None:
            self._set_message(alert, None)
        # Commands to thousands of loudspeakers and the log writes wait until the
        # first frame has gone: nothing may stand between acceptance and audio.
        frame_s = self.app.clock.frame_s
        self.app.reactor.callLater(frame_s * 1.5, self._after_first_frame, alert, targets, audit)
        return alert

    def _after_first_frame(self, alert: Alert, targets: list[Channel], audit: tuple[str, str | None, str]) -> None:
        try:
            alert.log_ids = self.app.log_play(targets, "alert", alert.title, alert.created_by,
                                              detail=f"alert={alert.id} priority={int(alert.priority)}")
            actor, remote, detail = audit
            with self.app.storage.transaction() as db:
                self.app.storage.audit(db, actor, "alert.start", alert.id, alert.zones[0], remote, detail)
            for channel in targets:
                self._note_preemptions(channel, alert)
        except Exception:
            log.exception("alert %s: writing its records failed", alert.id)
        finally:
            if alert.ended is None:
                self.app.command_speakers(alert, on=True)
            else:  # it was cancelled within the first frames
                self._close_records(alert, alert.ended)

    def _synthesize(self, alert: Alert, text: str, language: str) -> None:
        if self.tts is None:
            log.error("alert %s: no TTS engine; only the attention signal plays", alert.id)
            self._set_message(alert, None)
            return
        started = time.perf_counter()

        def timed(audio: Audio) -> Audio:
            metrics.tts_seconds.observe(time.perf_counter() - started)
            return audio

        self._in_worker(alert, "TTS", self.tts.synthesize, text, language).addCallback(timed)

    def _load(self, alert: Alert, path: str) -> None:
        self._in_worker(alert, "reading its media", load_audio, path)

    def _in_worker(self, alert: Alert, what: str, work: Callable[..., Audio], *args: Any) -> Deferred[Audio]:
        """Make the message off the reactor; the attention signal plays meanwhile."""
        deferred = deferToThreadPool(self.app.reactor, self.app.reactor.getThreadPool(), work, *args)

        def ready(audio: Audio) -> Audio:
            self._set_message(alert, audio)
            return audio

        def failed(failure: Any) -> None:
            log.error("alert %s: %s failed: %s", alert.id, what, failure.getErrorMessage())
            self._set_message(alert, None)

        return deferred.addCallbacks(ready, failed)

    def _set_message(self, alert: Alert, audio: Audio | None) -> None:
        for source in alert.sources.values():
            source.set_message(audio)

    def _first_frame_probe(self, alert: Alert, channel: Channel) -> Any:
        source = alert.sources[channel.id]

        def probe() -> bool:
            if source.frames_read == 0:
                return source.finished or alert.ended is not None  # cancelled before it played: stop probing
            latency = self.app.reactor.seconds() - alert.accepted_at
            alert.first_frame_s[channel.id] = latency
            metrics.alert_latency_seconds.observe(latency)
            return True  # done: remove the probe

        return probe

    def _note_preemptions(self, channel: Channel, alert: Alert) -> None:
        for play in self.app.programmes.playing:
            if any(c is channel for c, _ in play.inputs):
                self.app.note_play(play.log_ids, f"preempted by alert {alert.id} at {self.app.wall():.0f}")

    def cancel(self, alert_id: str, by: str) -> Alert | None:
        alert = self.active.get(alert_id)
        if alert is None:
            return None
        self._finish(alert, "cancelled")
        for channel_id, item in alert.inputs.items():
            channel = self.app.channels.get(channel_id)
            if channel is not None:
                channel.mixer.remove(item)  # a short fade, not a click
        return alert

    def _channel_done(self, alert: Alert, item: MixerInput, how: str) -> None:
        if all(s.finished for s in alert.sources.values()) and alert.ended is None:
            self._finish(alert, "completed")

    def _finish(self, alert: Alert, outcome: str) -> None:
        if alert.ended is not None:
            return
        alert.ended = outcome
        alert.ended_at = self.app.reactor.seconds()
        self.active.pop(alert.id, None)
        self.recent[alert.id] = alert
        while len(self.recent) > 100:
            self.recent.pop(next(iter(self.recent)))
        if alert.log_ids:
            self._close_records(alert, outcome)

    def _close_records(self, alert: Alert, outcome: str) -> None:
        if alert.commanded:
            # Back to normal only where no other alert is still on air.
            still = {c for other in self.active.values() for c in other.channels}
            self.app.command_speakers(alert, on=False, channels=[c for c in alert.channels if c not in still])
        heard = sorted(alert.acknowledged)
        self.app.note_play(alert.log_ids, f"acknowledged by {len(heard)}/{len(alert.commanded)} loudspeakers: "
                                          f"{','.join(heard)}")
        self.app.end_play(alert.log_ids, outcome)

    def describe(self, alert: Alert) -> dict[str, Any]:
        return {"id": alert.id, "title": alert.title, "zones": alert.zones, "channels": alert.channels,
                "priority": alert.priority.name.lower(), "policy": alert.policy, "repeat": alert.repeat,
                "volume": alert.volume, "created_by": alert.created_by, "status": alert.ended or "on_air",
                "cap_identifier": alert.cap_identifier,
                "first_frame_ms": {c: round(s * 1000, 1) for c, s in alert.first_frame_s.items()},
                "loudspeakers_commanded": sorted(alert.commanded), "loudspeakers_acknowledged": sorted(
                    alert.acknowledged)}
