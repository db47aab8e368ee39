"""A channel's Ogg/Opus pages re-encoded for another kind of listener (HLS, MP3), off the reactor.

The core already builds each channel's Ogg page once a second for the Ogg
listeners (core/outputs/ogg.py, control/channels.py); a Tap takes the same
pages on control's side, so the core never does AAC or MP3 work and the audio
loop never waits for it. Decoding a second of Opus and encoding it to AAC or
MP3 costs 15–20 ms of CPU (PyAV, measured: docs/hls.md), too long for the
reactor, so the work runs on one ``transcode`` thread shared by every tap (one
thread keeps each channel's pages in order). A tap counts as a listener of its
channel (ChannelView.add_tap), so the core encodes the channel while it runs
even with ``http.keep_burst`` off. If the thread falls behind, pages are
dropped (counted) rather than queued without bound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from broadcaster import metrics
from broadcaster.codecs.ogg import OggError, OggReader
from broadcaster.codecs.opus import OpusCodecError, OpusDecoder

log = logging.getLogger(__name__)

T = TypeVar("T")
Runner = Callable[[Callable[[bytes], Any], bytes], "Deferred[Any]"]
MAX_PENDING = 8  # pages waiting for the thread, per tap (about 8 s of audio)


class OpusPages:
    """Ogg/Opus pages of one channel to 48 kHz mono float32 PCM. Lives on the transcode thread."""

    def __init__(self) -> None:
        self._reader = OggReader()
        self._decoder = OpusDecoder()

    def decode(self, data: bytes) -> np.ndarray:
        self._reader.feed(data)
        out: list[np.ndarray] = []
        try:
            for packet, _page in self._reader.packets():
                if packet.startswith((b"OpusHead", b"OpusTags")):
                    continue
                try:
                    out.append(self._decoder.decode(packet))
                except OpusCodecError:
                    out.append(self._decoder.conceal())
        except OggError as exc:  # our own core's pages: a bug, not a client's doing; never a crash
            log.warning("transcode: a damaged Ogg page skipped: %s", exc)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


class TranscodeThread:
    """The one thread every tap's work runs on; started on first use, stopped with the server
    (or at reactor shutdown, whichever comes first). Tests pass a pool that runs work at once."""

    def __init__(self, reactor: Any, pool: Any = None) -> None:
        self.reactor = reactor
        self._given = pool
        self._pool: ThreadPool | None = None

    def run(self, work: Callable[[bytes], Any], data: bytes) -> Deferred[Any]:
        if self._given is not None:
            return deferToThreadPool(self.reactor, self._given, work, data)
        if self._pool is None:
            self._pool = ThreadPool(1, 1, "transcode")
            self._pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self.stop)
        return deferToThreadPool(self.reactor, self._pool, work, data)

    def stop(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()


class Tap(Generic[T]):
    """One channel's pages into ``work`` (on the thread), its results to ``deliver`` (on the
    reactor). ``work`` and its state belong to the thread; once stopped, late results are
    dropped, so a tap started again never mixes with an old one."""

    def __init__(self, channel: Any, kind: str, work: Callable[[bytes], T], deliver: Callable[[T], None],
                 run: Runner) -> None:
        self.channel = channel
        self.kind = kind
        self._work = work
        self._deliver = deliver
        self._run = run
        self.pending = 0
        self.running = False
        self._seconds = metrics.transcode_seconds.labels(kind)
        self._dropped = metrics.transcode_pages_dropped_total.labels(channel.id, kind)

    def start(self) -> None:
        """Join the channel; start on its burst (the last seconds of audio), if it has one,
        so a first segment or a first MP3 second exists at once."""
        self.running = True
        self.channel.add_tap(self)
        metrics.transcoders.labels(self.kind).inc()
        burst = b"".join(self.channel.burst)
        if burst:
            self.write_page(burst)

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.channel.remove_tap(self)
            metrics.transcoders.labels(self.kind).dec()

    def write_page(self, page: bytes, chunk: bytes | None = None) -> None:
        """The channel's page (same signature as a listener's; ``chunk`` is not used)."""
        if not self.running:
            return
        if self.pending >= MAX_PENDING:
            self._dropped.inc()
            return
        self.pending += 1
        self._run(self._timed, page).addCallbacks(self._done, self._failed)

    def _timed(self, page: bytes) -> T:
        started = time.perf_counter()
        try:
            return self._work(page)
        finally:
            self._seconds.observe(time.perf_counter() - started)

    def _done(self, result: T) -> None:
        self.pending -= 1
        if self.running:
            self._deliver(result)

    def _failed(self, failure: Failure) -> None:
        self.pending -= 1
        log.error("channel %s: %s encoding failed: %s", self.channel.id, self.kind, failure.getErrorMessage())
