"""The real-time core: channels, their inputs and the loudspeakers' UDP side.

Pure of I/O policy: time comes from injected clocks (``now`` is the audio
clock, ``wall`` stamps device messages), datagrams and commands are handed
in, events go out through ``emit``. The same object runs in the core's own
process (core/process.py) and, for tests, in memory on a fake clock
(core/local.py).

Commands are queued by ``submit`` and applied at the next frame boundary,
before that frame is mixed: an alert accepted during frame n is heard in
frame n + 1. Queries are answered at once (they only read).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from prometheus_client import generate_latest

from broadcaster import metrics
from broadcaster.codecs.shared import SharedPcm, attach, discard
from broadcaster.core import commands as c
from broadcaster.core.channel import Channel
from broadcaster.core.clock import FrameClock
from broadcaster.core.commands import CoreSettings
from broadcaster.core.mixer import MixerInput, Priority
from broadcaster.core.sources import Source, SourceError, build
from broadcaster.core.sources.alert import AlertSource
from broadcaster.core.sources.live import LiveSource
from broadcaster.core.subscriptions import Subscription, SubscriptionTable

log = logging.getLogger(__name__)
REBUILD_TICKS = 5
UNVERIFIED_WHEN_BEHIND = 64  # datagrams from unsubscribed addresses examined per batch while behind a flood
FLOOD_REFUSALS_PER_S = 500   # refused datagrams in the last second that mean a flood (loudspeakers make none)


def release(spec: Any) -> None:
    """A spec the core will not build: discard the shared audio it names."""
    for value in vars(spec).values() if hasattr(spec, "__dict__") else ():
        if isinstance(value, SharedPcm):
            discard(value)


@dataclass(eq=False)
class _Input:
    command: c.AddInput
    spec: Any  # the source spec as built (with its lead-in for a frame-exact start)
    sources: dict[str, Source] = field(default_factory=dict)
    items: dict[str, MixerInput] = field(default_factory=dict)
    awaiting: set[str] = field(default_factory=set)  # channels whose first frame has not gone yet
    pending: bool = True


class Core:
    def __init__(self, settings: CoreSettings, sock: Any, *, now: Callable[[], float],
                 wall: Callable[[], float], emit: Callable[[c.Event], None]) -> None:
        self.settings = settings
        self.sock = sock
        self.now = now
        self.wall = wall
        self.emit = emit
        frame_s = settings.audio.frame_ms / 1000.0
        self.clock = FrameClock(frame_s)
        self.ticks_per_second = max(1, round(1.0 / frame_s))
        self.channels: dict[str, Channel] = {}
        self.inputs: dict[str, _Input] = {}
        self._queue: deque[c.Command] = deque()
        self._pending: list[tuple[int, int, _Input]] = []  # (first tick, order, input)
        self._order = itertools.count()
        self._dirty: set[str] = set()  # channels whose loudspeaker addresses changed
        self._first_frames: list[_Input] = []
        self._live_seen: dict[tuple[str, str], tuple[int, int, int]] = {}
        self.stopped = False
        self._metrics: tuple[float, bytes] | None = None
        self._next_rebuild = 0  # the tick from which changed send lists are rebuilt again
        # Channels played by the other core processes (core/shards.py): their stream description,
        # for this process's subscriptions, and where their loudspeakers' addresses go.
        self.remote: dict[str, dict[str, Any]] = {}
        self.on_remote_addresses: Callable[[str, list[tuple[str, int]]], None] = lambda channel, addresses: None
        self.subscriptions = SubscriptionTable(
            (), settings.speakers, channel_info=self._channel_info, on_change=self._dirty.add,
            on_session=self._session)
        self.subscriptions.on_command_ack = lambda device, seq: self.emit(c.CommandAck(device, seq))
        self.flooded = False  # more than FLOOD_REFUSALS_PER_S refused in the last second (Core.datagrams)
        self._refused_before = 0

    # --- inputs from outside ------------------------------------------------

    def start(self) -> None:
        self.clock.start(self.now())

    def submit(self, command: c.Command) -> None:
        if isinstance(command, c.Query):
            self.emit(c.Answer(command.query_id, self._answer(command)))
        else:
            self._queue.append(command)

    def datagrams(self, batch: list[tuple[bytes, tuple[str, int]]], behind: bool) -> None:
        """A batch read from the socket, all of it and in order while the loop keeps up: the
        reader already stops early once a frame is due (process.READ_MINIMUM), and nothing read
        is dropped for a late frame, so keepalives are not lost to a busy one.

        Behind (the socket held more than a batch) during a flood (over FLOOD_REFUSALS_PER_S
        datagrams refused in the last second, or so far in this one; loudspeakers make none,
        even 5,000 subscribing at once, and shedding their handshakes cost them audio in
        benchmarks/fanout.py): datagrams from the address of a live subscription naming that
        subscription's device go first, so keepalives and acknowledgements get through, then
        at most UNVERIFIED_WHEN_BEHIND of the rest; the others are dropped unexamined (counted
        as "shed"), so reading outpaces a flood of datagrams that each cost an HMAC to refuse.
        A loudspeaker not yet subscribed retries within its keepalive interval."""
        if behind and (self.flooded or self.subscriptions.refused - self._refused_before > FLOOD_REFUSALS_PER_S):
            verified = self.subscriptions.verified
            first, others = [], []
            for item in batch:
                data, address = item
                device = verified.get(address)
                if device is not None and len(data) > 8 and data[8:8 + data[5]] == device:
                    first.append(item)
                else:
                    others.append(item)
            if len(others) > UNVERIFIED_WHEN_BEHIND:
                self.subscriptions.rejected("shed", len(others) - UNVERIFIED_WHEN_BEHIND)
                others = others[:UNVERIFIED_WHEN_BEHIND]
            batch = first + others
        for data, address in batch:
            self.datagram(data, address)

    def datagram(self, data: bytes, address: tuple[str, int]) -> None:
        reply = self.subscriptions.handle(data, address, self.wall())
        if reply is not None:
            try:
                self.sock.sendto(reply, address)
            except OSError:
                pass

    @property
    def done(self) -> bool:
        """Stopped, with nothing left to apply."""
        return self.stopped and not self._queue

    @property
    def next_deadline(self) -> float:
        return self.clock.next_deadline

    def run_due(self) -> int:
        """Run every tick that is due now; returns how many ran."""
        ticks = self.clock.due(self.now())
        for tick, _deadline in ticks:
            self._tick(tick)
        return len(ticks)

    # --- the frame ----------------------------------------------------------

    def _tick(self, tick: int) -> None:
        while self._queue:
            command = self._queue.popleft()
            try:
                self._apply(command, tick)
            except Exception:
                log.exception("core: command %r failed", type(command).__name__)
        while self._pending and self._pending[0][0] <= tick:
            _, _, item = heapq.heappop(self._pending)
            if item.pending:
                self._begin(item)
        if self._dirty and tick >= self._next_rebuild:
            # A send list is rebuilt whole (thousands of addresses): during a subscription storm
            # (power back in a district) once every few frames, not on every one.
            for channel_id in self._dirty:
                channel = self.channels.get(channel_id)
                if channel is not None and "rtp" in channel.by_kind:
                    channel.by_kind["rtp"].set_addresses(self.subscriptions.addresses(channel_id))
                elif channel_id in self.remote:
                    self.on_remote_addresses(channel_id, self.subscriptions.addresses(channel_id))
            self._dirty.clear()
            self._next_rebuild = tick + REBUILD_TICKS
        for channel in self.channels.values():
            try:
                channel.tick(tick)
            except Exception:
                # One broken channel must not silence the others.
                log.exception("channel %s: tick failed", channel.id)
            if self._first_frames:
                self._check_first_frames(channel.id)  # as this channel's frame has left, not after all
        if tick % self.ticks_per_second == 0:
            self._every_second()

    def _check_first_frames(self, channel_id: str) -> None:
        now = self.now()
        for item in self._first_frames:
            if channel_id not in item.awaiting:
                continue
            mixer_input = item.items.get(channel_id)
            if mixer_input is None or mixer_input.frames_played == 0:
                continue
            item.awaiting.discard(channel_id)
            if item.command.accepted_at is not None:
                metrics.alert_latency_seconds.observe(now - item.command.accepted_at)
            self.emit(c.InputStarted(item.command.input_id, channel_id, now))
        self._first_frames = [item for item in self._first_frames if item.awaiting]

    def _every_second(self) -> None:
        metrics.flush_tallies()
        refused = self.subscriptions.refused
        self.flooded = refused - self._refused_before > FLOOD_REFUSALS_PER_S
        self._refused_before = refused
        self.subscriptions.expire(self.wall())
        channels: dict[str, dict[str, Any]] = {}
        for channel in self.channels.values():
            inputs = []
            for item in channel.mixer.inputs:
                inputs.append({"id": item.owner, "priority": int(item.priority), "preempted": item.preempted,
                               "name": item.source.name})
            status = channel.status()
            status["inputs"] = inputs
            channels[channel.id] = status
        for input_id, held in self.inputs.items():
            for channel_id, source in held.sources.items():
                if isinstance(source, LiveSource):
                    self._live_metrics(input_id, channel_id, source, channels)
        table = self.subscriptions
        heard = {d: (s.last_seen, s.status.as_dict()) for d in table.touched
                 if (s := table.subscriptions.get(d)) is not None}
        table.touched.clear()
        self.emit(c.Status(ticks=self.clock.tick_index, missed=self.clock.missed, channels=channels,
                           heard=heard))

    def _live_metrics(self, input_id: str, channel_id: str, source: LiveSource,
                      channels: dict[str, dict[str, Any]]) -> None:
        metrics.live_buffer_seconds.labels(channel_id).set(source.depth_s)
        stats = source.stats
        seen = self._live_seen.get((input_id, channel_id), (0, 0, 0))
        metrics.live_underruns_total.labels(channel_id).inc(stats.underruns - seen[0])
        metrics.live_overrun_seconds_total.labels(channel_id).inc((stats.overruns - seen[1]) / 48000)
        metrics.live_shed_seconds_total.labels(channel_id).inc((stats.shed - seen[2]) / 48000)
        self._live_seen[(input_id, channel_id)] = (stats.underruns, stats.overruns, stats.shed)
        if channel_id in channels:
            channels[channel_id].setdefault("live", {})[input_id] = {
                "buffer_s": round(source.depth_s, 3), "underruns": source.stats.underruns}

    # --- commands -----------------------------------------------------------

    def _apply(self, command: c.Command, tick: int) -> None:
        if isinstance(command, c.AddInput):
            self._add_input(command, tick)
        elif isinstance(command, c.RemoveInput):
            self._remove_input(command.input_id, command.fade)
        elif isinstance(command, c.SetMessage):
            item = self.inputs.get(command.input_id)
            audio = None
            if command.pcm is not None:
                try:
                    audio = attach(command.pcm)
                except (OSError, ValueError) as exc:  # the alert must not hold its channels in silence
                    log.error("core: alert %s: its message cannot be read: %s", command.input_id, exc)
            for source in (item.sources.values() if item else ()):
                if isinstance(source, AlertSource):
                    source.set_message(audio)
        elif isinstance(command, c.LiveAudio):
            item = self.inputs.get(command.input_id)
            if item is not None:
                pcm = np.frombuffer(command.pcm, dtype=np.float32)
                for source in item.sources.values():
                    if isinstance(source, LiveSource):
                        source.push(pcm)
        elif isinstance(command, c.LiveEnd):
            item = self.inputs.get(command.input_id)
            for source in (item.sources.values() if item else ()):
                if isinstance(source, LiveSource):
                    source.close()
        elif isinstance(command, c.SetListeners):
            channel = self.channels.get(command.channel)
            if channel is not None and "ogg" in channel.by_kind:
                channel.by_kind["ogg"].set_listeners(command.count)
        elif isinstance(command, c.SetTitle):
            channel = self.channels.get(command.channel)
            if channel is not None and "ogg" in channel.by_kind:
                channel.by_kind["ogg"].set_title(command.title, command.artist)
        elif isinstance(command, c.AddChannel):
            self._add_channel(command.spec)
        elif isinstance(command, c.SetAddresses):
            channel = self.channels.get(command.channel)
            if channel is not None and "rtp" in channel.by_kind:
                channel.by_kind["rtp"].set_addresses(list(command.addresses))
        elif isinstance(command, c.SetDevices):
            self.subscriptions.set_devices(command.devices, self.wall())
        elif isinstance(command, c.PutDevice):
            self.subscriptions.put_device(command.device, self.wall())
        elif isinstance(command, c.DropDevice):
            self.subscriptions.drop_device(command.device_id, self.wall())
        elif isinstance(command, c.Stop):
            self.stop()
        else:
            log.error("core: unknown command %r", command)

    def _add_channel(self, spec: c.ChannelSpec) -> None:
        if spec.id in self.channels:
            return
        try:
            channel = Channel(spec, self.settings.audio, self.settings.http, sock=self.sock,
                              fanout=self.settings.fanout, emit=self.emit)
        except (OSError, ValueError) as exc:
            log.error("core: channel %s cannot be built: %s", spec.id, exc)
            self.emit(c.ChannelFailed(spec.id, str(exc)))
            return
        self.channels[spec.id] = channel
        ogg = channel.by_kind.get("ogg")
        self.emit(c.ChannelReady(spec.id, dict(channel.rtp_info), ogg.header_pages if ogg else b""))

    def _add_input(self, command: c.AddInput, tick: int) -> None:
        if command.input_id in self.inputs:
            log.error("core: input %s exists already", command.input_id)
            release(command.source)
            return
        spec = command.source
        first = tick
        if command.start_at is not None:
            # Due in this frame or a later one: it starts there, silent up to its exact sample.
            # Due in a frame already gone (it came late): it starts now, from its beginning.
            first = self.clock.frame_of(command.start_at)
            if first >= tick and hasattr(spec, "lead_s"):
                spec = dataclasses.replace(spec, lead_s=max(0.0, command.start_at - self.clock.deadline(first)))
            first = max(first, tick)
        item = _Input(command, spec)
        for channel_id in command.channels:
            channel = self.channels.get(channel_id)
            if channel is None:
                self.emit(c.InputEnded(command.input_id, channel_id, "refused"))
                continue
            try:
                item.sources[channel_id] = build(spec, channel.frame_samples)
            except (SourceError, OSError, ValueError) as exc:
                log.error("core: input %s on %s: %s", command.input_id, channel_id, exc)
                self.emit(c.InputEnded(command.input_id, channel_id, "refused"))
        if not item.sources:
            release(spec)  # nothing maps its audio: its shared file must not wait for a restart
            return
        self.inputs[command.input_id] = item
        if first <= tick:
            self._begin(item)
        else:
            heapq.heappush(self._pending, (first, next(self._order), item))

    def _begin(self, item: _Input) -> None:
        item.pending = False
        command = item.command
        lead = min(self.settings.audio.frame_samples - 1, round(getattr(item.spec, "lead_s", 0.0) * 48000))
        for cut in command.cuts:
            cut_item = self.inputs.get(cut)
            if cut_item is not None and not cut_item.pending:  # one still to start is not replaced by this
                self._remove_input(cut, fade=True, only=set(item.sources), at=lead)
        for channel_id, source in item.sources.items():
            mixer_input = self.channels[channel_id].mixer.add(
                source, gain_db=command.gain_db, priority=Priority(command.priority), fade_in=command.fade_in,
                policy=command.policy, duck_db=command.duck_db, on_preempt=command.on_preempt,
                on_end=partial(self._ended, item, channel_id), ramp_at=lead)
            mixer_input.owner = command.input_id
            item.items[channel_id] = mixer_input
            item.awaiting.add(channel_id)
        self._first_frames.append(item)

    def _remove_input(self, input_id: str, fade: bool, only: set[str] | None = None, at: int = 0) -> None:
        item = self.inputs.get(input_id)
        if item is None:
            return
        if item.pending:
            item.pending = False  # left in the heap, ignored when popped
            del self.inputs[input_id]
            for channel_id in item.sources:
                self.emit(c.InputEnded(input_id, channel_id, "removed"))
            item.sources.clear()  # its audio is freed now, not when its start tick would have come
            return
        for channel_id, mixer_input in list(item.items.items()):
            if only is None or channel_id in only:
                self.channels[channel_id].mixer.remove(mixer_input, fade_out=fade, at=at)

    def _ended(self, item: _Input, channel_id: str, mixer_input: MixerInput, how: str) -> None:
        input_id = item.command.input_id
        item.items.pop(channel_id, None)
        item.sources.pop(channel_id, None)
        item.awaiting.discard(channel_id)
        self._live_seen.pop((input_id, channel_id), None)
        if not item.items and self.inputs.get(input_id) is item:
            del self.inputs[input_id]
        self.emit(c.InputEnded(input_id, channel_id, how))

    # --- loudspeakers -------------------------------------------------------

    def _channel_info(self, channel_id: str) -> dict[str, Any] | None:
        channel = self.channels.get(channel_id)
        return channel.rtp_info if channel is not None else self.remote.get(channel_id)

    def _session(self, kind: str, subscription: Subscription, at: float) -> None:
        self.emit(c.SessionChanged(kind, subscription.device_id, subscription.channel, subscription.address, at))

    def _answer(self, query: c.Query) -> Any:
        if query.what == "metrics":
            # At most one exposition a second, however often /metrics is asked: it costs
            # milliseconds of this loop with many channels, and the page needs no login.
            now = self.now()
            if self._metrics is None or now - self._metrics[0] >= 1.0:
                metrics.flush_tallies()
                self._metrics = (now, generate_latest(metrics.CORE_REGISTRY))
            return self._metrics[1]
        return None

    def stop(self) -> None:
        """End every subscription (so control records when each loudspeaker went off air)."""
        if not self.stopped:
            self.stopped = True
            self.subscriptions.end_all(self.wall())
