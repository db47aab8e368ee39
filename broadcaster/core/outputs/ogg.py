"""The Ogg/Opus listener stream: pages built once per channel, sent to control.

Control (control/channels.py) holds the HTTP listeners and the burst a new
listener starts with, and writes each page to each of them; the core only
makes the page (about once a second) and is told how many listeners there are.

With ``http.keep_burst`` (the default) the stream is always active, so a
channel nobody hears still encodes and its burst is always there: a player
starts on the burst at once instead of waiting for pages to come (Chromium
waited 8 s on a channel that woke for it, benchmarks/faststart.py). It costs
one encode a frame for such a channel (benchmarks/channels.py); a province's
channels all have loudspeakers and encode anyway.
"""

from __future__ import annotations

import secrets
from typing import Any

from broadcaster import metrics
from broadcaster.codecs.ogg import OggOpusWriter
from broadcaster.core.commands import Page
from broadcaster.core.outputs.base import EncodedFrame, Output, OutputContext, SendCounters, register


class OggHttp:
    kind = "ogg"

    def __init__(self, context: OutputContext) -> None:
        self.channel = context.spec.id
        self.emit = context.emit
        self.writer = OggOpusWriter(serial=secrets.randbits(31), pre_skip=context.pre_skip,
                                    page_samples=48 * context.http.page_ms,
                                    comments=[f"TITLE={context.spec.name}", f"CHANNEL={context.spec.id}"])
        self.listeners = 0
        self.keep_burst = context.http.keep_burst
        self._idle = False
        self._sent = SendCounters(self.channel, "http")
        self._subscribers = metrics.subscribers.labels(self.channel, "http")

    @property
    def header_pages(self) -> bytes:
        return self.writer.header_pages

    def set_listeners(self, count: int) -> None:
        self.listeners = count
        self._subscribers.set(count)

    @property
    def active(self) -> bool:
        return self.keep_burst or self.listeners > 0

    def send(self, frame: EncodedFrame) -> None:
        self._idle = False
        page = self.writer.add_packet(frame.opus, frame.samples)
        if page is not None:
            self.emit(Page(self.channel, page))
            self._sent.count(self.listeners, 0, len(page))

    def idle(self) -> None:
        """The channel stopped encoding: control forgets its burst at once, so the
        listener whose arrival wakes the channel up does not start with old audio."""
        if not self._idle:
            self._idle = True
            self.writer.flush()
            self.emit(Page(self.channel, b"", restart=True))

    def describe(self) -> dict[str, Any]:
        return {"listeners": self.listeners}


@register
def build(context: OutputContext) -> Output:
    return OggHttp(context)
