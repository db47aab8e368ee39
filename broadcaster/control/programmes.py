"""Scheduled programmes on air: the glue between the pure Schedule, storage
and the channels' mixers.

Audio is decoded off the reactor thread: occurrences due in the next
``PRELOAD_S`` are loaded ahead into a cache, so at their start time the
channel only adds a source. A programme still loading when it is due starts
as soon as it is ready, at the offset the clock has reached by then.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from twisted.internet.threads import deferToThreadPool

from broadcaster import metrics
from broadcaster.codecs.audiofile import AudioFileError, load_audio
from broadcaster.codecs.pcm import SAMPLE_RATE, Audio
from broadcaster.control.schedule import Occurrence, Programme, Schedule
from broadcaster.core.mixer import MixerInput, Priority
from broadcaster.core.sources import BufferSource

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer

log = logging.getLogger(__name__)
PRELOAD_S = 60.0
PRIORITY_NAMES = {"normal": Priority.SCHEDULED, "thong-thuong": Priority.SCHEDULED,
                  "scheduled": Priority.SCHEDULED, "background": Priority.BACKGROUND}


def programme_from_row(row: dict[str, Any], channels: tuple[str, ...]) -> Programme:
    return Programme(id=row["id"], title=row["title"], channels=channels,
                     start=datetime.fromisoformat(row["start_local"]), duration_s=row["duration_s"],
                     recurrence=row["recurrence"], weekdays=tuple(json.loads(row["weekdays"])),
                     until=date.fromisoformat(row["until"]) if row["until"] else None,
                     priority=row["priority"], on_restart=row["on_restart"])


class Play:
    def __init__(self, occurrence: Occurrence, inputs: list[tuple[Any, MixerInput]], log_ids: list[int]) -> None:
        self.occurrence = occurrence
        self.inputs = inputs
        self.log_ids = log_ids


class ProgrammeRunner:
    def __init__(self, app: BroadcastServer, schedule: Schedule) -> None:
        self.app = app
        self.schedule = schedule
        self.cache: dict[tuple[str, float], Audio] = {}
        self.loading: set[tuple[str, float]] = set()
        self.waiting: dict[tuple[str, float], Occurrence] = {}  # due but still loading
        self.playing: list[Play] = []

    def media_paths(self, programme_id: str) -> list[str]:
        rows = self.app.storage.query("SELECT media FROM programmes WHERE id = ?", (programme_id,))
        ids = json.loads(rows[0]["media"]) if rows else []
        paths = {r["id"]: r["path"] for r in self.app.storage.query(
            f"SELECT id, path FROM media WHERE id IN ({','.join('?' * len(ids))})", ids)} if ids else {}
        return [paths[i] for i in ids if i in paths]

    def poll(self) -> None:
        """Twice a second: preload, start what is due, cut what overran its slot.
        Never raises: a failure here must not stop the schedule for good."""
        try:
            self._poll(self.app.wall())
        except Exception:
            log.exception("the scheduler's poll failed; it runs again shortly")

    def _poll(self, now: float) -> None:
        upcoming = self.schedule.occurrences(now, now + PRELOAD_S)
        for occurrence in upcoming:
            if occurrence.start > now:  # what is already running was started (or skipped) by due()
                self._preload(occurrence)
        for occurrence in self.schedule.due(now):
            if occurrence.key in self.cache:
                self._start(occurrence, now)
            else:
                self.waiting[occurrence.key] = occurrence
                self._preload(occurrence)
        wanted = {o.key for o in upcoming} | set(self.waiting)
        for key in [k for k in self.cache if k not in wanted]:
            del self.cache[key]  # deleted, moved, or skipped at a restart: free the decoded audio


    def _preload(self, occurrence: Occurrence) -> None:
        key = occurrence.key
        if key in self.cache or key in self.loading:
            return
        self.loading.add(key)
        paths = self.media_paths(occurrence.programme.id)
        work = deferToThreadPool(self.app.reactor, self.app.reactor.getThreadPool(), _load_playlist, paths)

        def loaded(audio: Audio) -> None:
            self.loading.discard(key)
            self.cache[key] = audio
            waiting = self.waiting.pop(key, None)
            if waiting is not None:
                self._start(waiting, self.app.wall())

        def failed(failure: Any) -> None:
            self.loading.discard(key)
            waiting = self.waiting.pop(key, None)
            log.error("programme %s: cannot load its media: %s", occurrence.programme.id, failure.getErrorMessage())
            metrics.programmes_total.labels("failed").inc()
            if waiting is not None:
                ids = self.app.log_play(self._channels(waiting), "scheduled", waiting.programme.title,
                                        "schedule", detail=f"programme={waiting.programme.id}")
                self.app.end_play(ids, "failed")

        work.addCallbacks(loaded, failed)

    def _channels(self, occurrence: Occurrence) -> list[Any]:
        return [self.app.channels[c] for c in occurrence.programme.channels if c in self.app.channels]

    def _start(self, occurrence: Occurrence, now: float) -> None:
        audio = self.cache.pop(occurrence.key)
        offset = max(0.0, now - occurrence.start) if occurrence.programme.on_restart != "restart" else 0.0
        if offset < self.schedule.grace_s:
            metrics.scheduler_lag_seconds.observe(offset)
        remaining = min(occurrence.end - now, audio.size / SAMPLE_RATE - offset)
        if remaining <= 0:
            return
        rows = self.app.storage.query("SELECT on_preempt FROM programmes WHERE id = ?", (occurrence.programme.id,))
        on_preempt = rows[0]["on_preempt"] if rows else "pause"
        inputs: list[tuple[Any, MixerInput]] = []
        channels = self._channels(occurrence)
        if not channels:
            return
        # A programme paused under an alert runs late; when the next one starts on
        # its channel it gives way (cut), rather than both playing at once.
        for play in list(self.playing):
            for channel, item in list(play.inputs):
                if channel in channels:
                    channel.mixer.remove(item)
        ids = self.app.log_play(channels, "scheduled", occurrence.programme.title, "schedule",
                                detail=f"programme={occurrence.programme.id}" + (f" offset={offset:.1f}s"
                                                                                  if offset >= 1 else ""))
        play = Play(occurrence, inputs, ids)
        for channel, log_id in zip(channels, ids, strict=True):
            source = BufferSource(audio, frame_samples=channel.frame_samples, name=occurrence.programme.title,
                                  start_s=offset, length_s=offset + remaining)
            item = channel.mixer.add(source, priority=Priority(occurrence.programme.priority), on_preempt=on_preempt,
                                     on_end=partial(self._ended, play, log_id))
            inputs.append((channel, item))
        self.playing.append(play)
        metrics.programmes_total.labels("started").inc()
        log.info("programme %s (%s) on %s%s", occurrence.programme.id, occurrence.programme.title,
                 ", ".join(c.id for c in channels), f" from {offset:.1f} s" if offset >= 1 else "")

    def _ended(self, play: Play, log_id: int, item: MixerInput, how: str) -> None:
        """One channel's play of a programme ended: record how, per channel."""
        outcome = {"finished": "completed", "skipped": "preempted", "removed": "cut"}.get(how, "stopped")
        self.app.end_play([log_id], outcome)
        metrics.programmes_total.labels(outcome).inc()
        play.inputs[:] = [(c, i) for c, i in play.inputs if i is not item]
        if not play.inputs and play in self.playing:
            self.playing.remove(play)

    def stop(self) -> None:
        for play in self.playing:
            self.app.end_play(play.log_ids, "stopped")
        self.playing.clear()


def _load_playlist(paths: list[str]) -> Audio:
    if not paths:
        raise AudioFileError("the programme has no media (deleted?)")
    return np.concatenate([load_audio(p) for p in paths]).astype(np.float32)
