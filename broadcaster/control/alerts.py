"""Emergency alerts and announcements: what plays, on which channels, and the
record of who heard it.

An alert starts at the next frame after it is accepted: the core makes its
attention signal itself (core/sources/alert.py), and the message (an uploaded
file, or text read aloud by a TTS engine in a worker thread) joins when it is
ready, so nothing waits for the database or for TTS. The alert's source
holds the channel (silence while the message is still being synthesised)
until its last repeat or a cancel. Records and loudspeaker commands wait
until the core reports the first frame sent.

An alert on air is also a row in storage (storage/alerts.py) until it ends.
After a crash, ``recover`` finds those rows: an alert that began less than
``alerts.resume_within_s`` ago (and whose CAP message has not expired) plays
again from its attention signal, under the same id; any other is not played,
and its loudspeakers are told to go back to normal as each comes back online
(for RESTORE_AFTER_RESTART_S), so none stays at alert volume with its
amplifier on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from broadcaster import metrics
from broadcaster.codecs.audiofile import load_audio
from broadcaster.codecs.pcm import Audio
from broadcaster.codecs.shared import SharedPcm, discard, share
from broadcaster.control.tts import NoVoice
from broadcaster.core.commands import AddInput, InputEnded, InputStarted, RemoveInput, SetMessage
from broadcaster.core.mixer import Priority
from broadcaster.core.sources.alert import AlertSpec
from broadcaster.storage.logs import Actor

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer
    from broadcaster.control.records import Entry
    from broadcaster.control.speech import Speech

log = logging.getLogger(__name__)
RESTORE_RETRY_S = 30.0
RESTORE_AFTER_RESTART_S = 300.0  # loudspeakers come back over seconds to minutes after a restart


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
    accepted_at: float                   # audio-clock time when the API accepted it
    volume: int = 100
    text: str = ""
    media_id: str | None = None
    cap_identifier: str | None = None   # "sender,identifier" of the CAP message it came from
    cap_sent: float | None = None       # and that message's <sent>, Unix seconds: with the above, the message's key
    ended_on: set[str] = field(default_factory=set)  # channels where its input has ended
    refused_on: set[str] = field(default_factory=set)  # channels where the core could not play it
    first_frame_s: dict[str, float] = field(default_factory=dict)  # channel -> seconds from accept to first frame
    acknowledged: set[str] = field(default_factory=set)
    commanded: set[str] = field(default_factory=set)
    restored: set[str] = field(default_factory=set)  # acknowledged the command that ended the alert
    ended_at: float | None = None
    entry: Entry | None = None  # its broadcast-log rows, once its first frame has gone
    ended: str | None = None
    restore_until: float | None = None  # audio-clock time the restore command stops being repeated
    bulletin: str | None = None  # the bulletin it carried (a khẩn cấp bulletin goes to air as an alert)
    started_wall: float = 0.0  # wall-clock time it began (for a resumed alert, when it first began)


class DuplicateCap(ValueError):
    """This CAP message (sender, identifier, sent) is already on air or recently was: ``alert``."""

    def __init__(self, alert: Alert) -> None:
        super().__init__(f"the CAP message {alert.cap_identifier} was already received: alert {alert.id} "
                         f"({alert.ended or 'on air'})")
        self.alert = alert


class AlertDesk:
    def __init__(self, app: BroadcastServer, speech: Speech, pool: Any = None) -> None:
        """``speech``: the engines per language and how text becomes normalised speech (app.speech);
        ``pool``: where an alert's message is made (tests give one that runs work at once)."""
        self.app = app
        self.speech = speech
        self._pool = pool
        self.active: dict[str, Alert] = {}
        self.recent: dict[str, Alert] = {}  # ended alerts, newest last, a bounded few for the API
        self._audit: dict[str, tuple[str, str | None, str]] = {}
        self._command_alert: dict[int, tuple[Alert, bool]] = {}  # command seq -> (alert, on)
        self._saved: dict[str, Any] = {}  # alert id -> the Deferred of its on-air row being written

    def start(self, *, title: str, zones: list[str], channels: list[str], priority: Priority, policy: str,
              repeat: int, gap_s: float, created_by: str, volume: int, text: str = "",
              message: Audio | None = None, media_id: str | None = None, language: str = "vi",
              cap_identifier: str | None = None, audit: tuple[str, str | None, str] = ("system", None, ""),
              media_path: str | None = None, cap_sent: float | None = None, expires_at: float | None = None,
              alert_id: str | None = None, started_at: float | None = None, bulletin: str | None = None) -> Alert:
        """Start an alert at the next frame. DuplicateCap if ``cap_identifier`` and ``cap_sent``
        name a CAP message already on air or among the recent alerts: one message plays once.
        ``alert_id`` and ``started_at`` (wall clock) are those of an alert resumed after a crash.
        ``bulletin``: the id of the bulletin it carries, recorded with its result."""
        if cap_identifier is not None and cap_sent is not None:
            duplicate = self.cap_duplicate(cap_identifier, cap_sent)
            if duplicate is not None:
                raise DuplicateCap(duplicate)
        alert = Alert(id=alert_id or "a-" + uuid.uuid4().hex[:10], title=title, zones=zones, channels=channels,
                      priority=priority, policy=policy, repeat=repeat, created_by=created_by,
                      accepted_at=self.app.reactor.seconds(), volume=volume, text=text, media_id=media_id,
                      cap_identifier=cap_identifier, cap_sent=cap_sent, bulletin=bulletin,
                      started_wall=self.app.wall() if started_at is None else started_at)
        self.active[alert.id] = alert
        self._audit[alert.id] = audit
        spec = {"title": title, "zones": zones, "channels": channels, "priority": int(priority), "policy": policy,
                "repeat": repeat, "gap_s": gap_s, "created_by": created_by, "volume": volume, "text": text,
                "media_id": media_id, "media_path": media_path, "language": language,
                "cap_identifier": cap_identifier, "cap_sent": cap_sent, "bulletin": bulletin}
        self._saved[alert.id] = self.app.storage.alerts.on_air(alert.id, alert.started_wall, expires_at, spec)
        self.app.track(alert.id, self._started, self._ended)
        # An announcement under an emergency waits (pauses) and is heard after it.
        self.app.core.send(AddInput(alert.id, tuple(channels), AlertSpec(repeat=repeat, gap_s=gap_s, name=title),
                                    priority=int(priority), policy=policy, fade_in=False, on_preempt="pause",
                                    accepted_at=alert.accepted_at))
        metrics.alerts_total.labels(priority.name.lower()).inc()
        if message is not None:
            self._in_worker(alert, "sharing its message", lambda: message)
        elif media_path:
            self._in_worker(alert, "reading its media", load_audio, media_path)
        elif text:
            self._synthesize(alert, text, language)
        else:
            self._set_message(alert, None)
        return alert

    def cap_duplicate(self, cap_identifier: str, sent: float) -> Alert | None:
        """The alert on air or recent (the last 100 ended) that the CAP message ("sender,identifier",
        its <sent> in Unix seconds) started, if any."""
        for alert in (*self.active.values(), *reversed(self.recent.values())):
            if alert.cap_identifier == cap_identifier and alert.cap_sent == sent:
                return alert
        return None

    def _started(self, event: InputStarted) -> None:
        alert = self.active.get(event.input_id) or self.recent.get(event.input_id)
        if alert is None:
            return
        first = not alert.first_frame_s
        alert.first_frame_s[event.channel] = event.at - alert.accepted_at
        if first:
            self._after_first_frame(alert)

    def _after_first_frame(self, alert: Alert) -> None:
        """Commands to thousands of loudspeakers and the log writes wait until the first
        frame has gone: nothing may stand between acceptance and audio."""
        targets = [self.app.channels[c] for c in alert.channels if c in self.app.channels]
        try:
            alert.entry = self.app.records.open(targets, "alert", alert.title, alert.created_by,
                                                  detail=f"alert={alert.id} priority={int(alert.priority)}")
            actor, remote, detail = self._audit.pop(alert.id, ("system", None, ""))
            self.app.storage.logs.audit(Actor(actor, remote), "alert.start", alert.id, alert.zones[0], detail)
            for channel in alert.channels:
                self._note_preemptions(channel, alert)
        except Exception:
            log.exception("alert %s: writing its records failed", alert.id)
        finally:
            if alert.ended is None:
                self.command(alert, on=True)
            else:  # it was cancelled within the first frames
                self._close_records(alert, alert.ended)

    def command(self, alert: Alert, on: bool, channels: list[str] | None = None,
                skip: set[str] | frozenset[str] = frozenset(), only: set[str] | None = None) -> None:
        """Amplifier on and alert volume at the start, the devices' own volume after.
        Repeated every second to those that have not acknowledged (resend)."""
        body = {"alert": alert.id, "amp": True, "volume": alert.volume} if on else {"alert": None}
        seq, sent = self.app.devices.command(alert.channels if channels is None else channels, body,
                                             skip=skip, only=only)
        if len(self._command_alert) > 10000:
            self._command_alert.clear()  # acknowledgements of long-gone commands are no longer wanted
        self._command_alert[seq] = (alert, on)
        if on:
            sent.addCallback(alert.commanded.update)

    def acknowledged(self, device_id: str, seq: int) -> None:
        alert, on = self._command_alert.get(seq, (None, True))
        if alert is not None:
            (alert.acknowledged if on else alert.restored).add(device_id)

    def resend(self) -> None:
        """UDP loses datagrams: a loudspeaker that missed its alert command (or subscribed
        during the alert) is told again each second until it acknowledges; after the alert,
        the restore is repeated for RESTORE_RETRY_S."""
        for alert in list(self.active.values()):
            if alert.entry:  # its first frame has gone and the first round of commands with it
                self.command(alert, on=True, skip=alert.acknowledged)
        on_air = {c for a in self.active.values() for c in a.channels}
        now = self.app.reactor.seconds()
        for alert in list(self.recent.values()):
            pending = alert.commanded - alert.restored
            if pending and alert.restore_until is not None and now < alert.restore_until:
                self.command(alert, on=False, channels=[c for c in alert.channels if c not in on_air], only=pending)

    def _synthesize(self, alert: Alert, text: str, language: str) -> None:
        """The text read by its language's engine, at the library's loudness, in the alert-messages
        threads (never queued behind bulletin previews); a language with no engine plays only the
        attention signal, and the log says which key would give it a voice."""
        engine = self.speech.voices.engine_for(language)
        if engine is None:
            log.error("alert %s: %s; only the attention signal plays", alert.id, NoVoice(language))
            self._set_message(alert, None)
            return
        started = time.perf_counter()
        speech = self.speech

        def speak() -> Audio:
            audio = speech.speak(engine, text, language)
            metrics.tts_seconds.observe(time.perf_counter() - started)
            return audio

        self._in_worker(alert, f"TTS ({engine.name})", speak)

    def _messages(self) -> Any:
        """Alert messages (speech, a stored file) are made in threads of their own: an
        alert's speech never waits behind programmes being decoded in the default pool."""
        if self._pool is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=2, name="broadcaster-alert-messages")
            self._pool.start()
            self.app.reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        return self._pool

    def _in_worker(self, alert: Alert, what: str, work: Callable[..., Audio], *args: Any) -> None:
        """Make the message off the reactor and hand it to the core as shared audio;
        the attention signal plays meanwhile."""
        deferred = deferToThreadPool(self.app.reactor, self._messages(), lambda: share(work(*args)))

        def failed(failure: Any) -> None:
            log.error("alert %s: %s failed: %s", alert.id, what, failure.getErrorMessage())
            self._set_message(alert, None)

        deferred.addCallbacks(partial(self._set_message, alert), failed)

    def _set_message(self, alert: Alert, pcm: SharedPcm | None) -> None:
        if alert.ended is not None:
            if pcm is not None:
                discard(pcm)
            return
        self.app.core.send(SetMessage(alert.id, pcm))

    def _note_preemptions(self, channel: str, alert: Alert) -> None:
        for play in self.app.programmes.playing_on(channel):
            for entry in play.entries.values():
                self.app.records.note(entry, f"preempted by alert {alert.id} at {self.app.wall():.0f}")

    def cancel(self, alert_id: str, by: str) -> Alert | None:
        alert = self.active.get(alert_id)
        if alert is None:
            return None
        if alert.entry:
            self.app.records.note(alert.entry, f"cancelled by {by}")
        self._finish(alert, "cancelled")
        self.app.core.send(RemoveInput(alert.id))  # a short fade, not a click
        return alert

    def _ended(self, event: InputEnded) -> None:
        alert = self.active.get(event.input_id) or self.recent.get(event.input_id)
        if alert is None:
            return
        alert.ended_on.add(event.channel)
        if event.how == "refused":
            alert.refused_on.add(event.channel)
            log.error("alert %s: the core could not play it on %s", alert.id, event.channel)
        if alert.ended_on < set(alert.channels):
            return
        self.app.untrack(alert.id)
        if alert.ended is None:
            self._finish(alert, "failed" if alert.refused_on >= set(alert.channels) else "completed")
        audit = self._audit.pop(alert.id, None)
        if alert.entry is None and audit is not None:
            # It never got a first frame (refused everywhere, or cancelled at once): its records
            # still say it was sent, and how it ended.
            actor, remote, detail = audit
            self.app.storage.logs.audit(Actor(actor, remote), "alert.start", alert.id, alert.zones[0], detail)
            targets = [self.app.channels[c] for c in alert.channels if c in self.app.channels]
            entry = self.app.records.open(targets, "alert", alert.title, alert.created_by,
                                          detail=f"alert={alert.id} priority={int(alert.priority)} not played")
            self.app.records.close(entry, alert.ended or "failed")

    def recover(self) -> None:
        """At start, before anything plays: the alerts a crash left on air are played again
        (recent enough, not expired) or their loudspeakers are restored. Each is audited."""
        now, clock = self.app.wall(), self.app.reactor.seconds()
        within = self.app.config.alerts.resume_within_s
        for row in self.app.storage.alerts.on_air_sync():
            try:
                self._recover(row, now, clock, within)
            except Exception:  # one alert that cannot be recovered never keeps the others
                log.exception("alert %s left on air by a crash: recovering it failed", row["id"])
                self.app.storage.alerts.off_air_sync(row["id"])

    def _recover(self, row: dict[str, Any], now: float, clock: float, within: float) -> None:
        spec, alert_id = row["spec"], row["id"]
        channels = [c for c in spec["channels"] if c in self.app.channels]
        age = now - row["started_at"]
        expired = row["expires_at"] is not None and now >= row["expires_at"]
        why = ("its CAP message has expired" if expired else f"it began {age:.0f} s ago (alerts.resume_within_s "
               f"is {within:.0f})" if age > within else "its channels are gone" if not channels else None)
        if why is None:
            log.warning("alert %s (%s) was on air when the server stopped: playing it again", alert_id,
                        spec["title"])
            self.start(title=spec["title"], zones=spec["zones"], channels=channels,
                       priority=Priority(spec["priority"]), policy=spec["policy"], repeat=spec["repeat"],
                       gap_s=spec["gap_s"], created_by=spec["created_by"], volume=spec["volume"],
                       text=spec["text"], media_id=spec["media_id"], media_path=spec["media_path"],
                       language=spec["language"], cap_identifier=spec["cap_identifier"],
                       cap_sent=spec["cap_sent"], expires_at=row["expires_at"], alert_id=alert_id,
                       started_at=row["started_at"], bulletin=spec.get("bulletin"),
                       audit=("system", None, f"resumed after a restart; first started by {spec['created_by']} "
                                              f"{age:.0f} s before"))
            return
        log.warning("alert %s (%s) was on air when the server stopped; not played again (%s): its loudspeakers "
                    "are told to go back to normal", alert_id, spec["title"], why)
        alert = Alert(id=alert_id, title=spec["title"], zones=spec["zones"], channels=channels,
                      priority=Priority(spec["priority"]), policy=spec["policy"], repeat=spec["repeat"],
                      created_by=spec["created_by"], accepted_at=clock, volume=spec["volume"], text=spec["text"],
                      media_id=spec["media_id"], cap_identifier=spec["cap_identifier"], cap_sent=spec["cap_sent"],
                      ended="interrupted", ended_at=clock, restore_until=clock + RESTORE_AFTER_RESTART_S,
                      bulletin=spec.get("bulletin"), started_wall=row["started_at"])
        # It was heard; who acknowledged died with the crash. A result written before it is kept.
        self._write_result(alert, ended_at=None, by_zone={}, replace=False)
        alert.commanded = {d.id for d in self.app.devices.known.values() if d.channel in channels}
        self.recent[alert.id] = alert
        self.app.storage.logs.audit(Actor("system"), "alert.restore", alert_id, spec["zones"][0] if spec["zones"]
                                    else None, f"not played again after a restart: {why}")
        self.app.storage.alerts.off_air_sync(alert_id)

    def stop(self) -> None:
        """The server is stopping: what is on air ends as stopped, loudspeakers are told to restore."""
        for alert in list(self.active.values()):
            self._finish(alert, "stopped")

    def _finish(self, alert: Alert, outcome: str) -> None:
        if alert.ended is not None:
            return
        alert.ended = outcome
        alert.ended_at = self.app.reactor.seconds()
        alert.restore_until = alert.ended_at + RESTORE_RETRY_S
        self.active.pop(alert.id, None)
        saved = self._saved.pop(alert.id, None)
        if saved is not None:  # its DELETE is queued once its INSERT has been written or queued
            saved.addBoth(lambda written: self.app.storage.alerts.off_air(alert.id, written is True))
        self.recent[alert.id] = alert
        while len(self.recent) > 100:
            self.recent.pop(next(iter(self.recent)))
        if alert.entry:
            self._close_records(alert, outcome)
        self._write_result(alert, self.app.wall(), self._by_zone(alert))

    def _by_zone(self, alert: Alert) -> dict[str, tuple[int, int]]:
        """Loudspeakers commanded and acknowledged per loudspeaker zone (the yearly report's
        per-commune share). A loudspeaker no longer registered counts under "?"."""
        counts: dict[str, list[int]] = {}
        for device_id in alert.commanded | alert.acknowledged:
            known = self.app.devices.known.get(device_id)
            n = counts.setdefault(known.zone if known is not None else "?", [0, 0])
            n[0] += 1
            n[1] += device_id in alert.acknowledged
        return {zone: (c, a) for zone, (c, a) in counts.items()}

    def _write_result(self, alert: Alert, ended_at: float | None, by_zone: dict[str, tuple[int, int]],
                      replace: bool = True) -> None:
        """Its row of alert_results, written off the reactor and never waited for (queued if the
        disk is full); a failure is logged, and the alert is over whatever happens to it."""
        try:
            self.app.storage.alerts.result(
                alert.id, title=alert.title, zones=alert.zones, priority=int(alert.priority), bulletin=alert.bulletin,
                started_at=alert.started_wall, ended_at=ended_at, by_zone=by_zone, replace=replace).addErrback(
                lambda f: log.error("alert %s: its result was not recorded: %s", alert.id, f.getErrorMessage()))
        except Exception:
            log.exception("alert %s: recording its result failed", alert.id)

    def _close_records(self, alert: Alert, outcome: str) -> None:
        if alert.commanded:
            # Back to normal only where no other alert is still on air.
            still = {c for other in self.active.values() for c in other.channels}
            self.command(alert, on=False, channels=[c for c in alert.channels if c not in still])
        heard = sorted(alert.acknowledged)
        assert alert.entry is not None
        self.app.records.note(alert.entry, f"acknowledged by {len(heard)}/{len(alert.commanded)} loudspeakers: "
                                             f"{','.join(heard)}")
        self.app.records.close(alert.entry, outcome)

    def describe(self, alert: Alert) -> dict[str, Any]:
        return {"id": alert.id, "title": alert.title, "zones": alert.zones, "channels": alert.channels,
                "priority": alert.priority.name.lower(), "policy": alert.policy, "repeat": alert.repeat,
                "volume": alert.volume, "created_by": alert.created_by, "status": alert.ended or "on_air",
                "cap_identifier": alert.cap_identifier,
                "first_frame_ms": {c: round(s * 1000, 1) for c, s in alert.first_frame_s.items()},
                "loudspeakers_commanded": sorted(alert.commanded), "loudspeakers_acknowledged": sorted(
                    alert.acknowledged)}
