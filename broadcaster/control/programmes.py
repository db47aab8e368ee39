"""Scheduled programmes on air: the glue between the pure Schedule, storage
and the core.

Frame-exact starts: an occurrence due in the next ``PRELOAD_S`` is decoded
in a worker, shared with the core, and sent as an AddInput with ``start_at``
on the audio clock; the core starts it in the frame that covers its start
time, silent up to the exact sample, whatever the poll's timing. The poll
(twice a second) only plans ahead. An occurrence first seen after its start
(a restart, a late load) starts at once, from ``now - start`` for
"resume" and from 0 for "restart".

The broadcast-log entries are opened when the core reports the first frame
sent, and closed per channel when the core reports how it ended.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from broadcaster import metrics
from broadcaster.codecs.audiofile import AudioFileError, load_audio
from broadcaster.codecs.pcm import Audio
from broadcaster.codecs.shared import SharedPcm, discard, share
from broadcaster.control.schedule import Occurrence, Programme, Schedule
from broadcaster.control.workers import trim_heap
from broadcaster.core.commands import AddInput, InputEnded, InputStarted, RemoveInput
from broadcaster.core.mixer import PRIORITY_NAMES as ALL_PRIORITIES
from broadcaster.core.mixer import Priority
from broadcaster.core.sources.pcm import PcmSpec

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer
    from broadcaster.control.records import Entry
    from broadcaster.storage import Storage

log = logging.getLogger(__name__)
PRELOAD_S = 60.0
RELAY_LEAD_S = 5.0  # a relay's worker starts this early, so the upstream is buffered at the start time
# The classes a programme may have: the one priority table (core/mixer.py), up to "scheduled".
PRIORITY_NAMES = {name: p for name, p in ALL_PRIORITIES.items() if p <= Priority.SCHEDULED}
OUTCOMES = {"finished": "completed", "skipped": "preempted", "removed": "cut", "refused": "failed"}


def programme_from_row(row: dict[str, Any], channels: tuple[str, ...]) -> Programme:
    return Programme(id=row["id"], title=row["title"], channels=channels,
                     start=datetime.fromisoformat(row["start_local"]), duration_s=row["duration_s"],
                     recurrence=row["recurrence"], weekdays=tuple(json.loads(row["weekdays"])),
                     until=date.fromisoformat(row["until"]) if row["until"] else None,
                     priority=row["priority"], on_restart=row["on_restart"], relay=row.get("relay"))


@dataclass(eq=False)
class Play:
    """One occurrence sent to the core: planned, then on air, then ended per channel."""

    occurrence: Occurrence
    input_id: str
    channels: tuple[str, ...]
    start_at: float | None  # audio clock; None: as soon as possible
    offset_s: float
    entries: dict[str, Entry] = field(default_factory=dict)  # broadcast-log rows by channel
    started: bool = False
    ended: set[str] = field(default_factory=set)


class ProgrammeRunner:
    def __init__(self, app: BroadcastServer, schedule: Schedule, pool: Any = None) -> None:
        """``pool``: where programmes are decoded (tests give one that runs work at once)."""
        self.app = app
        self.schedule = schedule
        self._pool = pool
        self.loading: dict[tuple[str, float], Programme] = {}  # by occurrence key: the version decoding
        self.retry: dict[tuple[str, float], Occurrence] = {}  # due, but its row was not stored yet
        self.failed: dict[tuple[str, float], float] = {}  # occurrences whose media would not load -> their end
        self.plays: dict[tuple[str, float], Play] = {}  # by occurrence key, until every channel ended
        self.relaying: dict[tuple[str, float], float] = {}  # relay occurrences started -> their end
        self.relay_runs: dict[tuple[str, float], Any] = {}  # and their runs (control/relays.py RelayRun)
        self.relay_versions: dict[tuple[str, float], Programme] = {}  # and the version each was started for

    def _decoding(self) -> Any:
        """Programmes are decoded in two threads of their own, not the reactor's pool of ten:
        each thread that decodes keeps a glibc malloc arena of its own, and ten of them
        held up to ~85 MB that the soak benchmark saw grow a step per programme. Two
        threads, and the heap trimmed after each decode, keep control's memory flat."""
        if self._pool is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=2, name="broadcaster-programmes")
            self._pool.start()
            self.app.reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        return self._pool

    def playing_on(self, channel: str) -> list[Play]:
        return [p for p in self.plays.values() if p.started and channel in p.channels and channel not in p.ended]

    def poll(self) -> None:
        """Twice a second: plan what starts soon, start what is due and not planned.
        Never raises: a failure here must not stop the schedule for good."""
        try:
            self._poll(self.app.wall())
        except Exception:
            log.exception("the scheduler's poll failed; it runs again shortly")

    def _poll(self, now: float) -> None:
        for done in (self.failed, self.relaying):
            for key in [k for k, end in done.items() if end < now]:
                del done[key]
        for key, run in list(self.relay_runs.items()):
            if run.ended or key not in self.relaying:
                del self.relay_runs[key]
        self._withdraw()
        for occurrence in self.schedule.occurrences(now, now + PRELOAD_S):
            if occurrence.start <= now:  # what is already running was started (or skipped) by due()
                continue
            if occurrence.programme.relay is None:
                self._load(occurrence, late=False)
            elif occurrence.start - now <= RELAY_LEAD_S:
                self._relay(occurrence)
        due = self.schedule.due(now) + list(self.retry.values())
        self.retry.clear()
        for occurrence in due:
            if occurrence.programme.relay is not None:
                self._relay(occurrence)
            elif occurrence.key not in self.plays:
                self._load(occurrence, late=True)

    def _current(self, programme: Programme) -> bool:
        """Whether this version is the schedule's: not deleted, and not replaced by an edit."""
        return self.schedule.get(programme.id) is programme

    def _withdraw(self) -> None:
        """Take back what was sent or is decoding for a version deleted or replaced before it
        started (an edit within PRELOAD_S, or RELAY_LEAD_S for a relay): the core drops it before
        its start, a relay's worker stops, and the new version, under the same occurrence key or
        another, is planned in this same poll. One already on air finishes."""
        for key in list(self.relaying):
            version = self.relay_versions.get(key)
            run = self.relay_runs.get(key)
            if version is None or self._current(version) or (run is not None and run.on_air):
                continue
            if run is not None:
                run.stop("removed")
                del self.relay_runs[key]
            del self.relaying[key]  # a lookup still on its way finds its version gone and starts nothing
            del self.relay_versions[key]
        for key in [k for k in self.relay_versions if k not in self.relaying]:
            del self.relay_versions[key]
        for key, programme in list(self.loading.items()):
            if not self._current(programme):
                del self.loading[key]  # its decode finishes unheard (loaded() checks the version)
        for key, play in list(self.plays.items()):
            if not play.started and not self._current(play.occurrence.programme):
                del self.plays[key]
                self.app.untrack(play.input_id)
                self.app.core.send(RemoveInput(play.input_id))

    def _load(self, occurrence: Occurrence, late: bool) -> None:
        key = occurrence.key
        if key in self.plays or key in self.loading or key in self.failed:
            return
        self.loading[key] = occurrence.programme
        storage = self.app.storage
        work = deferToThreadPool(self.app.reactor, self._decoding(), _load_playlist, storage,
                                 occurrence.programme.id)

        def done() -> bool:
            """This decode is over; whether its version is still the one to play."""
            if self.loading.get(key) is occurrence.programme:
                del self.loading[key]
            return self._current(occurrence.programme)

        def loaded(result: tuple[SharedPcm, str] | None) -> None:
            if not done():  # deleted or replaced while it loaded
                if result is not None:
                    discard(result[0])
                return
            if result is None:  # scheduled a moment ago and its row not written yet: next poll
                if late:
                    self.retry[key] = occurrence
                return
            pcm, on_preempt = result
            if not self._send(occurrence, pcm, on_preempt):
                discard(pcm)

        def failed(failure: Any) -> None:
            if not done():
                return
            self.failed[key] = occurrence.end  # not decoded again every poll until its time is over
            log.error("programme %s: cannot load its media: %s", occurrence.programme.id, failure.getErrorMessage())
            metrics.programmes_total.labels("failed").inc()
            if late or occurrence.start <= self.app.wall():
                channels = self._channels(occurrence)
                entry = self.app.records.open(channels, "scheduled", occurrence.programme.title, "schedule",
                                            detail=f"programme={occurrence.programme.id}")
                self.app.records.close(entry, "failed")

        work.addCallbacks(loaded, failed)

    def _relay(self, occurrence: Occurrence) -> None:
        """A relay programme: its worker started RELAY_LEAD_S early, on air from the start to the end."""
        from broadcaster.control.relays import RelayItem, RelaysBusy

        key, programme = occurrence.key, occurrence.programme
        if key in self.relaying:
            return
        self.relaying[key] = occurrence.end
        self.relay_versions[key] = programme
        assert programme.relay is not None

        def found(row: dict[str, Any] | None) -> None:
            channels = self._channels(occurrence)
            if not self._current(programme) or not channels:  # deleted or edited while it was looked up
                return
            if row is None:
                log.error("programme %s: its relay %s is not in the library", programme.id, programme.relay)
                metrics.programmes_total.labels("failed").inc()
                entry = self.app.records.open(channels, "scheduled", programme.title, "schedule",
                                              detail=f"programme={programme.id} relay={programme.relay} missing")
                self.app.records.close(entry, "failed")
                return
            now = self.app.wall()
            start_at = self.app.reactor.seconds() + (occurrence.start - now) if occurrence.start > now else None
            # A media programme paused under an alert and running late gives way, as to any programme.
            ids = set(c.id for c in channels)
            cuts = tuple(p.input_id for p in self.plays.values() if set(p.channels) & ids)
            try:
                run = self.app.relays.start(RelayItem(row["id"], row["name"], row["url"], row["zone"]), channels,
                                            kind="scheduled", title=programme.title, by="schedule",
                                            priority=programme.priority, end_at=occurrence.end,
                                            start_at=start_at, detail=f"programme={programme.id}", cuts=cuts)
            except RelaysBusy as exc:
                not_played(str(exc))
                return
            metrics.programmes_total.labels("started").inc()
            self.relay_runs[key] = run

        def not_played(reason: str) -> None:
            log.error("programme %s (%s) not relayed: %s", programme.id, programme.title, reason)
            metrics.programmes_total.labels("failed").inc()
            channels = self._channels(occurrence)
            if channels:
                entry = self.app.records.open(channels, "scheduled", programme.title, "schedule",
                                              detail=f"programme={programme.id} relay={programme.relay} "
                                                     f"not played: {reason}")
                self.app.records.close(entry, "failed")

        def failed(failure: Any) -> None:
            not_played(f"its relay could not be read: {failure.getErrorMessage()}")

        self.app.storage.relays.get(programme.relay).addCallbacks(found, failed)

    def _channels(self, occurrence: Occurrence) -> list[Any]:
        return [self.app.channels[c] for c in occurrence.programme.channels if c in self.app.channels]

    def _send(self, occurrence: Occurrence, pcm: SharedPcm, on_preempt: str) -> bool:
        programme = occurrence.programme
        channels = tuple(c.id for c in self._channels(occurrence))
        if not channels:
            return False
        now = self.app.wall()
        if occurrence.start > now:
            start_at: float | None = self.app.reactor.seconds() + (occurrence.start - now)
            offset = 0.0
        else:
            start_at = None
            offset = max(0.0, now - occurrence.start) if programme.on_restart != "restart" else 0.0
        length = min(occurrence.end - occurrence.start, pcm.duration_s)
        if offset >= length:
            return False
        play = Play(occurrence, "p-" + uuid.uuid4().hex[:10], channels, start_at, offset)
        # A programme paused under an alert runs late; when the next one starts on
        # its channel it gives way (cut, in the same frame), rather than both playing at once.
        cuts = tuple(p.input_id for p in self.plays.values() if set(p.channels) & set(channels))
        self.plays[occurrence.key] = play
        self.app.track(play.input_id, lambda e: self._started(play, e), lambda e: self._ended(play, e))
        self.app.core.send(AddInput(play.input_id, channels, PcmSpec(pcm, name=programme.title, start_s=offset,
                                                                     length_s=length),
                                    priority=programme.priority, on_preempt=on_preempt, start_at=start_at,
                                    cuts=cuts))
        return True

    def _started(self, play: Play, event: InputStarted) -> None:
        channel = self.app.channels.get(event.channel)
        if channel is None:
            return
        programme = play.occurrence.programme
        if not play.started:
            play.started = True
            metrics.programmes_total.labels("started").inc()
            if play.start_at is not None:
                metrics.scheduler_lag_seconds.observe(max(0.0, event.at - play.start_at))
            log.info("programme %s (%s) on %s%s", programme.id, programme.title, ", ".join(play.channels),
                     f" from {play.offset_s:.1f} s" if play.offset_s >= 1 else "")
        detail = f"programme={programme.id}" + (f" offset={play.offset_s:.1f}s" if play.offset_s >= 1 else "")
        play.entries[event.channel] = self.app.records.open([channel], "scheduled", programme.title, "schedule",
                                                            detail=detail)

    def _ended(self, play: Play, event: InputEnded) -> None:
        """One channel's play of a programme ended: record how, per channel."""
        outcome = OUTCOMES.get(event.how, "stopped")
        play.ended.add(event.channel)
        if event.how == "refused" and event.channel in self.app.channels:  # it never started there
            play.entries[event.channel] = self.app.records.open(
                [self.app.channels[event.channel]], "scheduled", play.occurrence.programme.title, "schedule",
                detail=f"programme={play.occurrence.programme.id} not played")
        entry = play.entries.get(event.channel)
        if entry is not None:
            self.app.records.close(entry, outcome)
            metrics.programmes_total.labels(outcome).inc()
        if play.ended >= set(play.channels):
            self.plays.pop(play.occurrence.key, None)
            self.app.untrack(play.input_id)

    def stop(self) -> None:
        for play in self.plays.values():
            for channel, entry in play.entries.items():
                if channel not in play.ended:
                    self.app.records.close(entry, "stopped")
        self.plays.clear()


def _load_playlist(storage: Storage, programme_id: str) -> tuple[SharedPcm, str] | None:
    """In a worker: the programme's media decoded, joined and shared with the core."""
    row = storage.programmes.get_sync(programme_id)
    if row is None:
        return None
    paths = storage.media.paths_sync(row["media"])
    if not paths:
        raise AudioFileError("the programme has no media (deleted?)")
    parts = [load_audio(paths[m]) for m in row["media"] if m in paths]
    audio: Audio = (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(np.float32, copy=False)
    del parts
    try:
        return share(audio), row.get("on_preempt") or "pause"
    finally:
        del audio
        trim_heap()
