"""What every output is, and the registry of output kinds.

A channel mixes and encodes once per tick and hands the same EncodedFrame to
each of its outputs; an output only sends (or packages) those bytes. A
channel whose outputs are all inactive does no mixing or encoding at all.

Each kind is a module with a builder registered here with ``@register``; the
builder returns None for a channel the kind does not apply to (multicast on a
channel with no group).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from broadcaster import metrics
from broadcaster.codecs.pcm import Audio
from broadcaster.config import AudioConfig, HttpConfig
from broadcaster.core.commands import ChannelSpec, Event


class EncodedFrame(NamedTuple):
    """A tuple, not a frozen dataclass: one is made per channel per frame, and a frozen
    dataclass's __init__ costs several times as much."""

    tick: int
    pcm: Audio | None  # None: nothing played (the opus packet is the cached silence)
    opus: bytes
    rtp: bytes
    samples: int


class Output(Protocol):
    kind: str

    @property
    def active(self) -> bool:
        """Someone consumes this output now, so the channel must encode."""

    def send(self, frame: EncodedFrame) -> None: ...

    def idle(self) -> None:
        """The channel did not encode this tick (nobody consumes it)."""

    def describe(self) -> dict[str, Any]: ...


@dataclass
class OutputContext:
    """What the core offers an output when a channel is built."""

    spec: ChannelSpec
    audio: AudioConfig
    http: HttpConfig
    sock: Any                      # the UDP socket loudspeakers subscribe on
    fanout: str                    # "auto" (sendmmsg where possible) or "loop"
    emit: Callable[[Event], None]  # events to control
    ssrc: int
    pre_skip: int                  # the encoder's lookahead, for Ogg headers


class SendCounters:
    """Packets, bytes and refused sends of one channel and transport, counted per send call
    (as tallies: added to the metrics once a second, metrics.flush_tallies)."""

    def __init__(self, channel: str, transport: str) -> None:
        self._packets = metrics.Tally(metrics.packets_sent_total.labels(channel, transport))
        self._bytes = metrics.Tally(metrics.bytes_sent_total.labels(channel, transport))
        self._errors = metrics.Tally(metrics.send_errors_total.labels(channel, transport))

    def count(self, sent: int, failed: int, size: int) -> None:
        if sent:
            self._packets.pending += sent
            self._bytes.pending += sent * size
        if failed:
            self._errors.pending += failed


Builder = Callable[[OutputContext], Output | None]
BUILDERS: list[Builder] = []


def register(builder: Builder) -> Builder:
    BUILDERS.append(builder)
    return builder


def build_outputs(context: OutputContext) -> list[Output]:
    return [output for builder in BUILDERS if (output := builder(context)) is not None]
