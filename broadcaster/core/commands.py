"""The one interface between control and the real-time core.

Control sends commands; the core applies them at the next frame boundary and
answers with events. Both are small frozen dataclasses that pickle, because
in production they cross a socket to the core's own process (core/process.py)
and in tests they are handed over in memory (core/local.py). Nothing else
crosses: control never reaches into a channel's objects, and the core never
imports control, storage or HTTP code.

Times are on the audio clock (``time.monotonic`` in production, a fake clock
in tests): ``start_at`` says which frame an input starts in, to the sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from broadcaster.config import AudioConfig, Config, HttpConfig, Multicast, SpeakerPolicy

# --- shared descriptions ------------------------------------------------------


@dataclass(frozen=True)
class ChannelSpec:
    id: str
    name: str
    zone: str
    multicast: Multicast | None = None


@dataclass(frozen=True)
class Device:
    """A registered loudspeaker as the UDP side needs it: who it is, its key, where it may listen."""

    id: str
    key: bytes
    channel: str
    zone: str
    volume: int = 80


AUTO_PROCESSES = 16


@dataclass(frozen=True)
class CoreSettings:
    """Everything the core needs from the configuration: the first message to its process."""

    audio: AudioConfig
    http: HttpConfig
    speakers: SpeakerPolicy
    fanout: str = "auto"
    nice: int = -5
    processes: int = 1  # core processes the channels are spread over (core/shards.py)

    @classmethod
    def of(cls, config: Config) -> CoreSettings:
        # auto: one per CPU this process may run on, at most AUTO_PROCESSES (each idle one still
        # ticks 50 times a second and holds its own interpreter).
        processes = config.server.core_processes or min(AUTO_PROCESSES, len(os.sched_getaffinity(0)))
        return cls(audio=config.audio, http=config.http, speakers=config.speakers, fanout=config.server.udp_fanout,
                   nice=config.server.core_nice, processes=processes)


# --- control -> core ----------------------------------------------------------


@dataclass(frozen=True)
class Command:
    pass


@dataclass(frozen=True)
class AddChannel(Command):
    spec: ChannelSpec


@dataclass(frozen=True)
class AddInput(Command):
    """Play a source on channels. ``source`` is a spec registered in
    core/sources (a tone, shared PCM, a live buffer, an alert).

    ``start_at`` (audio clock) starts it in the frame covering that instant,
    silent up to the exact sample for sources with a lead-in (PCM); one that
    arrives after its frame has gone starts at once, from its beginning. None
    starts it at the next frame.
    ``cuts`` are inputs faded out in the same frame (the programme before).
    ``accepted_at`` (audio clock) makes the core measure alert latency."""

    input_id: str
    channels: tuple[str, ...]
    source: Any
    priority: int
    policy: str = "preempt"
    duck_db: float = -20.0
    on_preempt: str = "continue"
    gain_db: float = 0.0
    fade_in: bool = True
    start_at: float | None = None
    cuts: tuple[str, ...] = ()
    accepted_at: float | None = None


@dataclass(frozen=True)
class RemoveInput(Command):
    input_id: str
    fade: bool = True


@dataclass(frozen=True)
class SetMessage(Command):
    """An alert's message is ready (pcm: a SharedPcm), or could not be made (None)."""

    input_id: str
    pcm: Any


@dataclass(frozen=True)
class LiveAudio(Command):
    """Decoded studio audio for a live input: 48 kHz mono float32 bytes."""

    input_id: str
    pcm: bytes


@dataclass(frozen=True)
class LiveEnd(Command):
    input_id: str


@dataclass(frozen=True)
class SetListeners(Command):
    """How many HTTP listeners a channel has (control serves them; the core encodes for them)."""

    channel: str
    count: int


@dataclass(frozen=True)
class SetTitle(Command):
    """What is playing on a channel now (a studio's track title), for its Ogg listeners: the
    Ogg output starts a new chain (new OpusHead and OpusTags with TITLE=) at its next page
    boundary, so a flood of updates costs at most one chain per page. None: back to the
    channel's name. Control bounds the length (web/admin.py)."""

    channel: str
    title: str | None
    artist: str | None = None


@dataclass(frozen=True)
class SetAddresses(Command):
    """Between core processes: the loudspeakers now subscribed to a channel this process
    plays (the process reading the datagrams keeps the subscriptions, core/shards.py)."""

    channel: str
    addresses: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class SetDevices(Command):
    devices: tuple[Device, ...]


@dataclass(frozen=True)
class PutDevice(Command):
    device: Device


@dataclass(frozen=True)
class DropDevice(Command):
    device_id: str


@dataclass(frozen=True)
class Query(Command):
    """Answered at once with an Answer of the same id: ``what`` is "metrics" (the
    text exposition of the core's metrics, at most a second old)."""

    query_id: int
    what: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Stop(Command):
    pass


# --- core -> control ----------------------------------------------------------


@dataclass(frozen=True)
class Event:
    pass


@dataclass(frozen=True)
class ChannelReady(Event):
    channel: str
    rtp: dict[str, Any]
    ogg_headers: bytes


@dataclass(frozen=True)
class ChannelFailed(Event):
    """The core could not build the channel (its multicast socket, say): nothing plays on it."""

    channel: str
    reason: str


@dataclass(frozen=True)
class Page(Event):
    """One Ogg page of a channel's listener stream, built once for every listener."""

    channel: str
    data: bytes
    restart: bool = False  # the channel was idle before: what control kept for new listeners is stale
    # Non-empty: a new Ogg chain begins in ``data`` (after the old one's EOS page); these are its
    # header pages, which a new listener now starts with, before the pages that follow.
    headers: bytes = b""


@dataclass(frozen=True)
class InputStarted(Event):
    """The input's first frame left the server on this channel (audio clock)."""

    input_id: str
    channel: str
    at: float


@dataclass(frozen=True)
class InputEnded(Event):
    """how: finished, skipped (preempted, policy skip), removed, or refused (bad spec)."""

    input_id: str
    channel: str
    how: str


@dataclass(frozen=True)
class SessionChanged(Event):
    """A loudspeaker's subscription started or ended (wall clock ``at``)."""

    kind: str
    device_id: str
    channel: str
    address: tuple[str, int]
    at: float


@dataclass(frozen=True)
class CommandAck(Event):
    device_id: str
    seq: int


@dataclass(frozen=True)
class Status(Event):
    """About once a second: what is on air, for the API and the console."""

    ticks: int
    missed: int
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    heard: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)  # keepalives: last_seen, status


@dataclass(frozen=True)
class Answer(Event):
    query_id: int
    value: Any
