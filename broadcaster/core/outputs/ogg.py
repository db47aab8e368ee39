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

A title change (``SetTitle``, from a studio's /admin/metadata) starts a new
Ogg chain (RFC 3533 4: a new logical bitstream after the old one's EOS page,
with its own OpusHead and OpusTags carrying TITLE=), which is how Ogg players
(ffmpeg, mpv, VLC, browsers) learn a new title. The switch waits for the next
page boundary, so it never splits a page and a flood of updates makes at most
one chain a page; the last title asked for wins.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from broadcaster import metrics
from broadcaster.codecs.ogg import OggError, OggOpusWriter
from broadcaster.core.commands import Page
from broadcaster.core.outputs.base import EncodedFrame, Output, OutputContext, SendCounters, register

log = logging.getLogger(__name__)


class OggHttp:
    kind = "ogg"

    def __init__(self, context: OutputContext) -> None:
        self.channel = context.spec.id
        self.name = context.spec.name
        self.emit = context.emit
        self.pre_skip = context.pre_skip
        self.page_samples = 48 * context.http.page_ms
        self.title: tuple[str | None, str | None] = (None, None)
        self._wanted: tuple[str | None, str | None] | None = None  # a title waiting for a page boundary
        self.writer = self._writer(self.title)
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

    def _writer(self, title: tuple[str | None, str | None]) -> OggOpusWriter:
        name, artist = title
        comments = [f"TITLE={name or self.name}", f"CHANNEL={self.channel}"]
        if name and artist:
            comments.insert(1, f"ARTIST={artist}")
        if name:
            comments.append(f"ORGANIZATION={self.name}")
        return OggOpusWriter(serial=secrets.randbits(31), pre_skip=self.pre_skip, page_samples=self.page_samples,
                             comments=comments)

    def set_title(self, title: str | None, artist: str | None = None) -> None:
        wanted = (title or None, artist or None)
        self._wanted = None if wanted == self.title else wanted
        if self._idle and self._wanted is not None:  # nothing is being sent: the next listener starts with it
            self._restart_with_wanted()

    def _chain(self, title: tuple[str | None, str | None]) -> OggOpusWriter | None:
        """A writer for a new chain, or None (logged) if its headers cannot carry the title: the
        stream then goes on as it was."""
        try:
            return self._writer(title)
        except OggError as exc:
            log.error("channel %s: title not sent to Ogg listeners: %s", self.channel, exc)
            return None

    def _restart_with_wanted(self) -> None:
        wanted, self._wanted = self._wanted, None
        writer = self._chain(wanted) if wanted is not None else None
        if wanted is not None and writer is not None:
            self.title, self.writer = wanted, writer
            self.emit(Page(self.channel, b"", restart=True, headers=writer.header_pages))

    def _start_chain(self, page: bytes) -> None:
        """After ``page`` (just finished), end this chain with an EOS page and begin the next."""
        wanted, self._wanted = self._wanted, None
        writer = self._chain(wanted) if wanted is not None else None
        if wanted is None or writer is None:
            self.emit(Page(self.channel, page))
            return
        end = self.writer.flush(eos=True) or b""
        self.title, self.writer = wanted, writer
        self.emit(Page(self.channel, page + end + writer.header_pages, headers=writer.header_pages))

    def send(self, frame: EncodedFrame) -> None:
        self._idle = False
        page = self.writer.add_packet(frame.opus, frame.samples)
        if page is not None:
            self._sent.count(self.listeners, 0, len(page))
            if self._wanted is not None:
                self._start_chain(page)
            else:
                self.emit(Page(self.channel, page))

    def idle(self) -> None:
        """The channel stopped encoding: control forgets its burst at once, so the
        listener whose arrival wakes the channel up does not start with old audio."""
        if not self._idle:
            self._idle = True
            self.writer.flush()
            self.emit(Page(self.channel, b"", restart=True))
            if self._wanted is not None:  # a title that was waiting for a page boundary: now
                self._restart_with_wanted()

    def describe(self) -> dict[str, Any]:
        return {"listeners": self.listeners, "title": self.title[0]}


@register
def build(context: OutputContext) -> Output:
    return OggHttp(context)
