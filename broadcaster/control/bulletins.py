"""Bulletins on the control side: their transitions, and their plays.

The rules of who may move a bulletin where are bulletin_rules.py (pure) and
the plan's slots bulletin_plan.py (pure); this desk applies them to storage
(every transition a compare-and-set with its audit row) and plays what is
approved:

- An ordinary bulletin (thông thường: the commune chooses when) plays at the
  scheduled class, never over a programme: a slot that falls inside a
  programme on one of its channels waits for that programme's end (the
  create and approve replies warn of it). A priority bulletin (ưu tiên)
  plays at the announcement class: ahead of programmes and live studios,
  which pause. Both are decoded in a worker and sent to the core ahead with
  ``start_at``, as programmes are, so they start on the frame.
- An emergency bulletin (khẩn cấp) plays through the alert path (attention
  signal, amplifiers on, acknowledgements), at once.

Every slot is claimed in storage before it is sent (storage/bulletins.py), so
nothing plays twice across restarts or a second delivery from the province;
a slot first seen more than ``bulletins.late_within_s`` after its time is not
played late. A bulletin whose slots are all played is "played"; one whose
validity ends first is "expired"; neither plays again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from broadcaster import metrics
from broadcaster.codecs.audiofile import load_audio
from broadcaster.codecs.pcm import SAMPLE_RATE, Audio
from broadcaster.codecs.shared import SharedPcm, discard, share
from broadcaster.control.bulletin_plan import Plan
from broadcaster.control.bulletin_rules import CLASS_PRIORITY, FINAL, TransitionError, check
from broadcaster.control.workers import Busy, trim_heap
from broadcaster.core.commands import AddInput, InputEnded, InputStarted, RemoveInput
from broadcaster.core.mixer import PRIORITY_NAMES, Priority
from broadcaster.core.sources.pcm import PcmSpec
from broadcaster.storage.bulletins import BulletinContent
from broadcaster.storage.logs import SYSTEM, Actor

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer
    from broadcaster.control.alerts import Alert
    from broadcaster.control.records import Entry

log = logging.getLogger(__name__)
PRELOAD_S = 60.0       # a slot is claimed, decoded and sent to the core this far ahead
FINISH_CHECK_S = 30.0  # a bulletin with nothing ahead is looked at again this often, until its plays end
OUTCOMES = {"finished": "completed", "skipped": "preempted", "removed": "cut", "refused": "failed"}


class BulletinError(Exception):
    """A refused action: ``status`` and ``code`` for the API, the message for the person."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.retry_after_s = status, code, retry_after_s


@dataclass(eq=False)
class SlotPlay:
    """One slot of one bulletin on its channels: claimed, then sent, then on air, then ended."""

    bulletin: dict[str, Any]
    slot: float
    channels: tuple[str, ...]
    input_id: str
    start_at: float | None = None  # audio clock
    start: float | None = None     # wall clock, once sent: when it starts and ends
    end: float | None = None
    entries: dict[str, Entry] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    alert: Alert | None = None


class BulletinDesk:
    def __init__(self, app: BroadcastServer, pool: Any = None) -> None:
        """``pool``: where bulletins' audio is decoded (tests give one that runs work at once)."""
        self.app = app
        self.settings = app.config.bulletins
        self.tz = ZoneInfo(app.config.schedule.timezone)
        self._pool = pool
        self.active: dict[str, dict[str, Any]] = {}   # approved and scheduled bulletins, by id
        self.claimed: dict[str, set[float]] = {}       # their slots already claimed (played, playing, or skipped)
        self.plays: dict[tuple[str, float], SlotPlay] = {}
        self._check_at: dict[str, float] = {}  # bulletin id -> when its plan is next looked at (wall clock)
        self._plans: dict[str, tuple[int, Plan]] = {}  # bulletin id -> (version, its plan parsed)

    # --- start and stop ---------------------------------------------------------------

    def load(self) -> None:
        """At start: what may play, and which of its slots were claimed before the restart."""
        closed = self.app.storage.bulletins.close_dangling_sync(self.app.wall())
        if closed:
            log.warning("bulletins: %d plays were on air when the server stopped; recorded as stopped", closed)
        self.claimed = self.app.storage.bulletins.played_slots_sync()
        for row in self.app.storage.bulletins.on_air_sync():
            self.active[row["id"]] = row

    def stop(self) -> None:
        for play in self.plays.values():
            for channel, entry in play.entries.items():
                if channel not in play.ended:
                    self.app.records.close(entry, "stopped")
                    self._record("play_ended", play.bulletin["id"], play.slot, channel, self.app.wall(),
                                 "stopped")
        self.plays.clear()

    def _record(self, what: str, bulletin_id: str, *args: Any, **kwargs: Any) -> None:
        """A play's row, written beside the audio and never waited for."""
        getattr(self.app.storage.bulletins, what)(bulletin_id, *args, **kwargs).addErrback(
            _warn, f"bulletin {bulletin_id}: {what} not recorded")

    def _decoding(self) -> Any:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="broadcaster-bulletins")
            self._pool.start()
            self.app.reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        return self._pool

    # --- what the API asks ---------------------------------------------------------------

    def self_approval(self, zones: list[str]) -> bool:
        """Whether the four-eyes rule is off for every target zone (bulletins.self_approval_zones)."""
        allowed = set(self.settings.self_approval_zones)
        return bool(allowed) and all(set(self.app.zones.ancestors(z)) & allowed for z in zones)

    def validate(self, content: BulletinContent) -> Plan:
        """The plan, parsed; BulletinError for what storage would accept but could never play."""
        from broadcaster.control.bulletin_plan import PlanError

        try:
            plan = Plan.parse(content.plan)
        except PlanError as exc:
            raise BulletinError(400, "bad_value", str(exc)) from None
        if content.valid_from is not None and content.valid_until is not None \
                and content.valid_until <= content.valid_from:
            raise BulletinError(400, "bad_value", "valid_until: must be after valid_from")
        if not content.body.strip() and content.media is None:
            raise BulletinError(400, "missing_field", "give 'text' to read aloud and show, or 'media' to play")
        if not self.app.channels_in(content.zones):
            raise BulletinError(400, "bad_reference", "zones: the zones have no channel to play on")
        return plan

    def warnings(self, content: BulletinContent, plan: Plan, asap_at: float | None = None) -> list[str]:
        """What the operator should know before approving: an ordinary bulletin's slots that fall
        in a programme (it will wait for the programme's end), and a plan with nothing ahead."""
        now = self.app.wall()
        horizon = now + 8 * 86400
        slots = plan.slots(self.tz, now, horizon, valid_from=content.valid_from, valid_until=content.valid_until,
                           asap_at=asap_at if asap_at is not None else now)
        notes: list[str] = []
        if not slots:
            notes.append("no slot of its plan lies ahead within its validity: it would never play")
        for channel in self.app.channels_in(content.zones):
            for run in self.app.relays.on_channel(channel):
                notes.append(f"{channel} is relaying {run.item.name} now: the bulletin "
                             + ("plays over it" if content.klass != "thong-thuong" else "mixes with it if it plays "
                                "while the relay runs; stop the relay or choose another time"))
        if content.klass == "thong-thuong":
            channels = set(self.app.channels_in(content.zones))
            for slot in slots[:50]:
                for occurrence in self.app.schedule.occurrences(slot, slot + 1):
                    if occurrence.start <= slot < occurrence.end and channels & set(occurrence.programme.channels):
                        notes.append(f"at {_local(slot, self.tz)} the programme {occurrence.programme.id} "
                                     f"({occurrence.programme.title}) is on air: the bulletin waits for its end "
                                     f"({_local(occurrence.end, self.tz)})")
        return notes

    async def create(self, actor: Actor, content: BulletinContent, submit: bool,
                     straight_to_air: bool = False) -> dict[str, Any]:
        """A new bulletin, draft or submitted. ``straight_to_air``: an emergency bulletin from someone who
        may alert: approved by that person and played at once through the alert path."""
        self.validate(content)
        bulletin_id = "b-" + uuid.uuid4().hex[:10]
        if straight_to_air:
            row = await self.app.storage.bulletins.create(actor, bulletin_id, content, "approved",
                                                          approved_by=actor.name, now=self.app.wall())
            self._now_on_air(row, asap=True)
            return row
        row = await self.app.storage.bulletins.create(actor, bulletin_id, content,
                                                      "submitted" if submit else "draft", now=self.app.wall())
        metrics.bulletins_total.labels("created").inc()
        return row

    async def edit(self, actor: Actor, row: dict[str, Any], content: BulletinContent,
                   version: int) -> dict[str, Any]:
        self.validate(content)
        try:
            transition = check("edit", row["state"])
        except TransitionError as exc:
            raise BulletinError(409, exc.code, str(exc)) from None
        self._off_air(row["id"], "edited")
        updated = await self.app.storage.bulletins.edit(actor, row["id"], row["state"], transition.after, version,
                                                        content, now=self.app.wall())
        return updated

    async def move(self, actor: Actor, row: dict[str, Any], action: str, reason: str = "") -> dict[str, Any]:
        """submit, reject or withdraw (approve has its own: it renders speech first)."""
        try:
            transition = check(action, row["state"], actor=actor.name)
        except TransitionError as exc:
            raise BulletinError(409, exc.code, str(exc)) from None
        if action == "reject" and not reason.strip():
            raise BulletinError(400, "missing_field", "reason: say why it is rejected")
        changes: dict[str, Any] = {"reason": reason} if action in ("reject", "withdraw") else {"reason": ""}
        now = self.app.wall()
        if action == "submit":
            changes.update(submitted_by=actor.name, submitted_at=now)
        if action == "withdraw":
            self._off_air(row["id"], "withdrawn")
        updated = await self.app.storage.bulletins.transition(actor, row["id"], transition.before, transition.after,
                                                              action, changes, reason)
        metrics.bulletins_total.labels(transition.after).inc()
        return updated

    async def approve(self, actor: Actor, row: dict[str, Any]) -> dict[str, Any]:
        """Four-eyes, a plan with something ahead, then the text read aloud by its language's engine
        and stored as media (a language without one is refused here, not played as silence)."""
        try:
            transition = check("approve", row["state"], actor=actor.name, author=row["created_by"],
                               editor=row.get("updated_by"), self_approval=self.self_approval(row["zones"]))
        except TransitionError as exc:
            raise BulletinError(409 if exc.code == "state" else 403, exc.code, str(exc)) from None
        content = content_from_row(row)
        plan = self.validate(content)
        now = self.app.wall()
        if not plan.slots(self.tz, now, now + 400 * 86400, valid_from=content.valid_from,
                          valid_until=content.valid_until, asap_at=now):
            raise BulletinError(409, "nothing_ahead", "no slot of its plan lies ahead within its validity; "
                                                      "edit its times or validity first")
        speech = row.get("speech")
        if content.media is None and not speech:
            speech = (await self._speak(actor, row))["id"]
        updated = await self.app.storage.bulletins.transition(
            actor, row["id"], transition.before, transition.after, "approve",
            {"approved_by": actor.name, "approved_at": now, "speech": speech, "reason": ""},
            f"version {row['version']}")
        metrics.bulletins_total.labels("approved").inc()
        self._now_on_air(updated, asap=plan.asap)
        return updated

    async def _speak(self, actor: Actor, row: dict[str, Any]) -> dict[str, Any]:
        from broadcaster.control.tts import NoVoice, SpeechError

        speech = self.app.speech
        if speech.voices.engine_for(row["language"]) is None:
            raise BulletinError(409, "no_voice", str(NoVoice(row["language"])))
        try:
            audio = await speech.render(row["body"], row["language"])
            return dict(await speech.store(audio, zone=row["zones"][0], title=f"{row['title']} (speech)",
                                           actor=actor))
        except Busy as exc:
            raise BulletinError(503, "busy", f"speech is being made for others: {exc}", exc.retry_after_s) from None
        except SpeechError as exc:
            raise BulletinError(422, "speech_failed", f"the text could not be read aloud: {exc}") from None

    def receive(self, content: BulletinContent, *, approve: bool, actor: Actor) -> Deferred[dict[str, Any]]:
        """A bulletin from the upstream system, idempotent by (origin, origin_id): the same content
        again changes nothing; new content updates it (back to submitted unless ``approve``); one
        already played, expired or withdrawn stays so. ``approve``: approved here by the link
        (auto-approval per class is the link's configuration)."""
        return ensureDeferred(self._receive(content, approve, actor))

    async def _receive(self, content: BulletinContent, approve: bool, actor: Actor) -> dict[str, Any]:
        assert content.origin is not None and content.origin_id is not None
        stored = await self.app.storage.bulletins.by_origin(content.origin, content.origin_id)
        if stored is not None:
            if stored["state"] in FINAL or content.same_as(stored):
                return stored
            stored = await self.edit(actor, stored, content, stored["version"])
        else:
            straight = approve and content.klass == "khan-cap"
            stored = await self.create(actor, content, submit=True, straight_to_air=straight)
            if straight:
                return stored
        if approve and stored["state"] == "submitted":
            stored = await self._approve_received(actor, stored)
        return stored

    async def _approve_received(self, actor: Actor, row: dict[str, Any]) -> dict[str, Any]:
        """Auto-approval by the link: the four-eyes rule was the upstream's."""
        content = content_from_row(row)
        self.validate(content)
        speech = row.get("speech")
        if content.media is None and not speech:
            speech = (await self._speak(actor, row))["id"]
        updated = await self.app.storage.bulletins.transition(
            actor, row["id"], "submitted", "approved", "approve",
            {"approved_by": actor.name, "approved_at": self.app.wall(), "speech": speech},
            "approved by the upstream system")
        self._now_on_air(updated, asap=Plan.parse(updated["plan"]).asap)
        return updated

    def withdraw_origin(self, origin: str, origin_id: str, actor: Actor,
                        reason: str) -> Deferred[dict[str, Any] | None]:
        """Withdrawn upstream: withdrawn here (stopped if on air), unless it has already played."""
        return ensureDeferred(self._withdraw_origin(origin, origin_id, actor, reason))

    async def _withdraw_origin(self, origin: str, origin_id: str, actor: Actor,
                               reason: str) -> dict[str, Any] | None:
        stored = await self.app.storage.bulletins.by_origin(origin, origin_id)
        if stored is None or stored["state"] in FINAL:
            return stored
        return await self.move(actor, stored, "withdraw", reason or "withdrawn upstream")

    # --- playing -----------------------------------------------------------------------------

    def _now_on_air(self, row: dict[str, Any], asap: bool) -> None:
        self.active[row["id"]] = row
        self.claimed.setdefault(row["id"], set())
        self._check_at.pop(row["id"], None)
        if row["class"] == "khan-cap" and asap:
            self._poll(self.app.wall())  # the alert path starts in this call: nothing waits for the next poll

    def _off_air(self, bulletin_id: str, why: str) -> None:
        """Edited or withdrawn: it stops being planned, and what of it is on air stops."""
        self.active.pop(bulletin_id, None)
        for play in [p for p in self.plays.values() if p.bulletin["id"] == bulletin_id]:
            if play.alert is not None:
                self.app.alerts.cancel(play.alert.id, f"bulletin {why}")
            else:
                self.app.core.send(RemoveInput(play.input_id))

    def poll(self) -> None:
        """Once a second; never raises."""
        try:
            self._poll(self.app.wall())
        except Exception:
            log.exception("the bulletins' poll failed; it runs again shortly")

    def _poll(self, now: float) -> None:
        """Each bulletin is expanded only when its next slot comes within PRELOAD_S (``_check_at``),
        so a province's thousands of recurring bulletins cost the reactor next to nothing a second."""
        late = self.settings.late_within_s
        for row in list(self.active.values()):
            if self._check_at.get(row["id"], 0.0) > now:
                continue
            plan = self._plan(row)
            claimed = self.claimed.setdefault(row["id"], set())
            for slot in plan.slots(self.tz, now - late, now + PRELOAD_S, valid_from=row["valid_from"],
                                   valid_until=row["valid_until"], asap_at=row["approved_at"]):
                if slot not in claimed:
                    self._claim(row, plan, slot)
            upcoming = self._next_slot(row, plan, now + PRELOAD_S)
            self._check_at[row["id"]] = upcoming - PRELOAD_S if upcoming is not None else now + FINISH_CHECK_S
            if upcoming is None:
                self._finish_if_done(row, now)
        self._alerts_ended()

    def _plan(self, row: dict[str, Any]) -> Plan:
        cached = self._plans.get(row["id"])
        if cached is None or cached[0] != row["version"]:
            cached = self._plans[row["id"]] = (row["version"], Plan.parse(row["plan"]))
        return cached[1]

    def _next_slot(self, row: dict[str, Any], plan: Plan, after: float) -> float | None:
        """Its first unclaimed slot from ``after`` on: two days looked at first, a year and more only if
        those have none (a monthly plan, or none left)."""
        claimed = self.claimed.get(row["id"], set())
        until = row["valid_until"]
        for span in (2 * 86400.0, 400 * 86400.0):
            found = [s for s in plan.slots(self.tz, after, after + span, valid_from=row["valid_from"],
                                           valid_until=until, asap_at=row["approved_at"]) if s not in claimed]
            if found:
                return found[0]
            if until is not None and until <= after + span:
                return None
        return None

    def _claim(self, row: dict[str, Any], plan: Plan, slot: float) -> None:
        self.claimed[row["id"]].add(slot)
        channels = [self.app.channels[c] for c in self.app.channels_in(row["zones"])]
        if not channels:
            return
        pairs = [(ch.config.id, ch.config.zone) for ch in channels]
        # Held from now, so the bulletin is not taken for finished while its claim is being written.
        play = self.plays[(row["id"], slot)] = SlotPlay(row, slot, tuple(c for c, _ in pairs),
                                                        "bl-" + uuid.uuid4().hex[:10])

        def claimed(ours: bool) -> None:
            if not ours or self.active.get(row["id"]) is not row:  # played before a restart; withdrawn or edited
                self.plays.pop((row["id"], slot), None)
                if row["id"] in self.active:
                    self._finish_if_done(row, self.app.wall())
                return
            if row["state"] == "approved":
                self._scheduled(row, slot)
            if row["class"] == "khan-cap":
                self._alert(play, plan)
            else:
                self._load(play, plan)

        def failed(failure: Any) -> None:
            # A full disk must not silence a bulletin: it plays, unrecorded as claimed.
            log.error("bulletin %s: its slot %s could not be recorded (%s); it plays anyway", row["id"],
                      _local(slot, self.tz), failure.getErrorMessage())
            claimed(True)

        self.app.storage.bulletins.claim(row["id"], slot, pairs, self.app.wall()).addCallbacks(claimed, failed)

    def _scheduled(self, row: dict[str, Any], slot: float) -> None:
        row["state"] = "scheduled"
        self.app.storage.bulletins.transition(SYSTEM, row["id"], "approved", "scheduled", "schedule",
                                              {"next_at": slot}, f"first slot {_local(slot, self.tz)}").addErrback(
            _warn, f"bulletin {row['id']}: not marked scheduled")

    def _start_time(self, row: dict[str, Any], slot: float, channels: set[str]) -> float:
        """When a slot starts: an ordinary bulletin waits for the end of a programme on its channels,
        and any bulletin for another of its own class already sent there (equal classes would mix)."""
        start = slot
        for _ in range(20):  # programmes and bulletins back to back: at most this many hops
            ends = [p.end for p in self.plays.values()
                    if p.end is not None and p.start is not None and p.start <= start < p.end
                    and p.bulletin["class"] == row["class"] and channels & set(p.channels)]
            if row["class"] == "thong-thuong":
                ends += [o.end for o in self.app.schedule.occurrences(start, start + 1)
                         if o.start <= start < o.end and channels & set(o.programme.channels)]
            if not ends:
                break
            start = max(ends)
        return start

    def _load(self, play: SlotPlay, plan: Plan) -> None:
        row = play.bulletin
        media_id = row["media"] or row["speech"]
        work = deferToThreadPool(self.app.reactor, self._decoding(), _load_bulletin, self.app.storage, media_id,
                                 plan.repeat, plan.gap_s)

        def loaded(pcm: SharedPcm) -> None:
            if self.active.get(row["id"]) is not row:  # withdrawn, or edited (and perhaps approved again)
                discard(pcm)
                self.plays.pop((row["id"], play.slot), None)
                return
            now = self.app.wall()
            start = self._start_time(row, play.slot, set(play.channels))
            if row["valid_until"] is not None and start >= row["valid_until"]:
                discard(pcm)
                self._not_played(play, "its programme ran past the bulletin's validity")
                return
            play.start_at = self.app.reactor.seconds() + (start - now) if start > now else None
            play.start, play.end = max(start, now), max(start, now) + pcm.duration_s
            priority = PRIORITY_NAMES[CLASS_PRIORITY[row["class"]]]
            self.app.track(play.input_id, lambda e: self._started(play, e), lambda e: self._ended(play, e))
            self.app.core.send(AddInput(play.input_id, play.channels, PcmSpec(pcm, name=row["title"]),
                                        priority=int(priority), on_preempt="pause", start_at=play.start_at))

        def failed(failure: Any) -> None:
            log.error("bulletin %s: cannot load its audio: %s", row["id"], failure.getErrorMessage())
            self._not_played(play, f"its audio could not be read: {failure.getErrorMessage()}")

        work.addCallbacks(loaded, failed)

    def _not_played(self, play: SlotPlay, why: str) -> None:
        self.plays.pop((play.bulletin["id"], play.slot), None)
        metrics.bulletin_plays_total.labels("failed").inc()
        channels = [self.app.channels[c] for c in play.channels if c in self.app.channels]
        entry = self.app.records.open(channels, CLASS_PRIORITY[play.bulletin["class"]], play.bulletin["title"],
                                      "bulletin", detail=f"bulletin={play.bulletin['id']} not played: {why}",
                                      source=play.bulletin["source"])
        self.app.records.close(entry, "failed")
        for channel in play.channels:
            self._record("play_ended", play.bulletin["id"], play.slot, channel, self.app.wall(), "failed")

    def _started(self, play: SlotPlay, event: InputStarted) -> None:
        channel = self.app.channels.get(event.channel)
        if channel is None:
            return
        row = play.bulletin
        if not play.entries:
            metrics.bulletin_plays_total.labels("started").inc()
            log.info("bulletin %s (%s) on %s", row["id"], row["title"], ", ".join(play.channels))
        play.entries[event.channel] = self.app.records.open(
            [channel], CLASS_PRIORITY[row["class"]], row["title"], row["approved_by"] or "bulletin",
            detail=f"bulletin={row['id']} slot={_local(play.slot, self.tz)}", source=row["source"])
        self._record("play_started", row["id"], play.slot, event.channel, self.app.wall(),
                                                self.app.devices.on_channels([event.channel]))

    def _ended(self, play: SlotPlay, event: InputEnded) -> None:
        outcome = OUTCOMES.get(event.how, "stopped")
        play.ended.add(event.channel)
        entry = play.entries.get(event.channel)
        if entry is not None:
            self.app.records.close(entry, outcome)
        self._record("play_ended", play.bulletin["id"], play.slot, event.channel, self.app.wall(),
                     outcome if entry is not None else "failed")
        metrics.bulletin_plays_total.labels(outcome).inc()
        if play.ended >= set(play.channels):
            self.plays.pop((play.bulletin["id"], play.slot), None)
            self.app.untrack(play.input_id)
            self._finish_if_done(play.bulletin, self.app.wall())

    def _alert(self, play: SlotPlay, plan: Plan) -> None:
        """An emergency bulletin: the alert path, as soon as its audio's path is read (off the reactor)."""
        row = play.bulletin
        media_id = row["media"] or row["speech"]
        if media_id is None:
            self._start_alert(play, plan, None, None)
            return

        def unread(failure: Any) -> None:
            _warn(failure, f"bulletin {row['id']}: its audio's path not read; its text is read")
            self._start_alert(play, plan, None, None)

        self.app.storage.media.get(media_id).addCallbacks(
            lambda media: self._start_alert(play, plan, media_id, media["path"] if media else None), unread)

    def _start_alert(self, play: SlotPlay, plan: Plan, media_id: str | None, media_path: str | None) -> None:
        row = play.bulletin
        if self.active.get(row["id"]) is not row:  # withdrawn or edited while its path was read
            self.plays.pop((row["id"], play.slot), None)
            return
        alerts = self.app.config.alerts
        channels = list(play.channels)
        play.alert = self.app.alerts.start(
            title=row["title"], zones=row["zones"], channels=channels, priority=Priority.EMERGENCY,
            policy="preempt", repeat=plan.repeat, gap_s=plan.gap_s or alerts.gap_s,
            created_by=row["approved_by"] or row["created_by"], volume=alerts.volume,
            text="" if media_path else row["body"], media_path=media_path, media_id=media_id,
            language=row["language"], bulletin=row["id"],
            audit=(row["approved_by"] or "system", None, f"emergency bulletin {row['id']} {row['title']}"))
        now = self.app.wall()
        for channel in channels:
            self._record("play_started", row["id"], play.slot, channel, now, self.app.devices.on_channels([channel]))
        metrics.bulletin_plays_total.labels("started").inc()

    def _alerts_ended(self) -> None:
        for key, play in list(self.plays.items()):
            alert = play.alert
            if alert is None or alert.ended is None:
                continue
            del self.plays[key]
            now = self.app.wall()
            for channel in play.channels:
                acks = len({d for d in alert.acknowledged if self._device_channel(d) == channel})
                self._record("play_ended", play.bulletin["id"], play.slot, channel, now,
                                                      alert.ended, acknowledged=acks)
            metrics.bulletin_plays_total.labels(alert.ended).inc()
            self._finish_if_done(play.bulletin, now)

    def _device_channel(self, device_id: str) -> str | None:
        device = self.app.devices.known.get(device_id)
        return device.channel if device is not None else None

    def _finish_if_done(self, row: dict[str, Any], now: float) -> None:
        """No slot left ahead and nothing on air: played (if a slot was claimed) or expired (its
        validity ended first)."""
        if row["id"] not in self.active or any(p.bulletin["id"] == row["id"] for p in self.plays.values()):
            return
        if self._next_slot(row, self._plan(row), now - self.settings.late_within_s) is not None:
            return
        played = bool(self.claimed.get(row["id"]))
        after = "played" if played else "expired"
        del self.active[row["id"]]
        self._check_at.pop(row["id"], None)
        self._plans.pop(row["id"], None)
        self.app.storage.bulletins.transition(SYSTEM, row["id"], ("approved", "scheduled"), after,
                                              "play" if played else "expire").addErrback(
            _warn, f"bulletin {row['id']}: not marked {after}")
        metrics.bulletins_total.labels(after).inc()


def _warn(failure: Any, what: str) -> None:
    log.warning("%s: %s", what, failure.getErrorMessage())


def content_from_row(row: dict[str, Any]) -> BulletinContent:
    return BulletinContent(title=row["title"], summary=row["summary"], body=row["body"], category=row["category"],
                           klass=row["class"], language=row["language"], valid_from=row["valid_from"],
                           valid_until=row["valid_until"], zones=list(row["zones"]), plan=dict(row["plan"]),
                           media=row["media"], source=row["source"], origin=row["origin"],
                           origin_id=row["origin_id"])


def _local(t: float, tz: ZoneInfo) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M:%S")


def _load_bulletin(storage: Any, media_id: str | None, repeat: int, gap_s: float) -> SharedPcm:
    """In a worker: the bulletin's audio, ``repeat`` times with ``gap_s`` of silence between, shared."""
    from broadcaster.codecs.audiofile import AudioFileError

    if media_id is None:
        raise AudioFileError("the bulletin has no audio (no media and no speech)")
    path = storage.media.paths_sync([media_id]).get(media_id)
    if path is None:
        raise AudioFileError(f"its media item {media_id} is gone")
    audio: Audio = load_audio(path).astype(np.float32, copy=False)
    if repeat > 1:
        gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
        audio = np.concatenate([part for _ in range(repeat) for part in (audio, gap)][:-1])
    try:
        return share(audio)
    finally:
        del audio
        trim_heap()
