"""The edge role: channels taken from an origin server and played here (docs/scaling.md).

An edge subscribes to its origin's UDP side as a loudspeaker does, once per channel it
relays, as a device registered on the origin for that channel: the same keys, cookie and
replay rules, so the origin sends audio only to an edge that proved its key, and counts it as
one loudspeaker. The edge decodes the Opus once (the reference loudspeaker's jitter buffer
and decoder, speaker/client.py) and gives the audio to its own core as a live input on the
channel, at the live class: the edge's own announcements and alerts still preempt it, and when
the origin goes quiet the channel falls back to its own loop (the live source's stall), coming
back by itself when the origin's audio does. The edge's core then encodes the channel once
and fans it out to the edge's loudspeakers: the origin sends one stream per channel to each
edge, however many loudspeakers the edge has.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from broadcaster.codecs.pcm import Audio
from broadcaster.config import EdgeLink
from broadcaster.core.commands import AddInput, InputEnded, LiveAudio, RemoveInput
from broadcaster.core.mixer import Priority
from broadcaster.core.sources.live import LiveSpec
from broadcaster.speaker.client import SpeakerClient, SubscriptionMessages

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer

log = logging.getLogger(__name__)

FRAMES_PER_PUSH = 5  # decoded frames handed to the core at a time (100 ms at 20 ms frames)
RESTART_S = 1.0      # an edge input the core ended is added again after this


class EdgeRelay:
    def __init__(self, app: BroadcastServer) -> None:
        self.app = app
        self.config = app.config.edge
        self.clients: dict[str, SpeakerClient] = {}
        self.ports: list[Any] = []
        self._pending: dict[str, list[Audio]] = {}
        self._stopping = False

    def start(self) -> None:
        assert self.config.origin is not None
        for link in self.config.links:
            if link.channel not in self.app.channels:
                log.error("edge: channel %s is not built here; not relayed", link.channel)
                continue
            client = SpeakerClient(SubscriptionMessages(link.device, link.key.encode(), link.origin_channel),
                                   self.config.origin, self.app.reactor, sink=partial(self._frame, link))
            self.clients[link.channel] = client
            self._pending[link.channel] = []
            self.ports.append(self.app.reactor.listenUDP(0, client, interface=self.app.config.server.host))
            self._add_input(link)
            log.info("edge: %s from %s:%d (as %s on %s)", link.channel, *self.config.origin, link.device,
                     link.origin_channel)

    def input_id(self, link: EdgeLink) -> str:
        return f"edge-{link.channel}"

    def _add_input(self, link: EdgeLink) -> None:
        if self._stopping:
            return
        live = self.app.config.live
        spec = LiveSpec(target_delay_s=live.target_delay_ms / 1000, max_delay_s=live.max_delay_ms / 1000,
                        stall_s=live.stall_timeout_ms / 1000, name=f"edge of {self.config.origin[0]}"
                        if self.config.origin else "edge")
        self.app.track(self.input_id(link), lambda event: None, partial(self._ended, link))
        self.app.core.send(AddInput(self.input_id(link), (link.channel,), spec, priority=int(Priority.LIVE)))

    def _frame(self, link: EdgeLink, frame: Audio) -> None:
        """One decoded frame from the origin, at its playout time."""
        pending = self._pending[link.channel]
        pending.append(frame)
        if len(pending) >= FRAMES_PER_PUSH:
            pcm = np.concatenate(pending).astype(np.float32, copy=False)
            pending.clear()
            self.app.core.send(LiveAudio(self.input_id(link), pcm.tobytes()))

    def _ended(self, link: EdgeLink, event: InputEnded) -> None:
        self.app.untrack(self.input_id(link))
        if not self._stopping:
            log.warning("edge: %s's input ended (%s); adding it again", link.channel, event.how)
            self.app.reactor.callLater(RESTART_S, self._add_input, link)

    def stats(self) -> dict[str, Any]:
        return {channel: client.stats() for channel, client in self.clients.items()}

    def stop(self) -> None:
        self._stopping = True
        for link in self.config.links:
            if link.channel in self.clients:
                self.app.untrack(self.input_id(link))
                self.app.core.send(RemoveInput(self.input_id(link)))
        for client in self.clients.values():
            client.stop()
        for port in self.ports:
            port.stopListening()
        self.ports.clear()
