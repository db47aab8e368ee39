"""FrameClock: the one tick source that decides audio time for every channel.

Deadlines are computed from a fixed start (``start + n * frame_s``), never by
adding the frame length to "now", so lateness in one tick never accumulates as
drift. A late reactor runs the missed ticks back to back (up to
``max_catchup``) so that media time keeps pace with wall time; beyond that
the ticks are skipped and counted, because sending seconds of stale audio in
a burst would overflow every loudspeaker's jitter buffer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from broadcaster import metrics

log = logging.getLogger(__name__)


class DelayedCall(Protocol):
    def cancel(self) -> None: ...

    def active(self) -> bool: ...


class Scheduler(Protocol):
    """The part of a Twisted reactor (or task.Clock) the clock needs."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., object], *args: object) -> DelayedCall: ...


TickHandler = Callable[[int, float], None]


class FrameClock:
    def __init__(self, reactor: Scheduler, frame_s: float, max_catchup: int = 5) -> None:
        if frame_s <= 0:
            raise ValueError("frame_s must be positive")
        self.reactor = reactor
        self.frame_s = frame_s
        self.max_catchup = max_catchup
        self.tick_index = 0
        self.missed = 0
        self._start = 0.0
        self._handlers: list[TickHandler] = []
        self._call: DelayedCall | None = None

    def add_handler(self, handler: TickHandler) -> None:
        """Handlers run in registration order on every tick with (tick, deadline)."""
        self._handlers.append(handler)

    @property
    def running(self) -> bool:
        return self._call is not None and self._call.active()

    def start(self) -> None:
        if self.running:
            return
        self._start = self.reactor.seconds()
        self.tick_index = 0
        self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def deadline(self, tick: int) -> float:
        return self._start + tick * self.frame_s

    def _schedule(self) -> None:
        delay = max(0.0, self.deadline(self.tick_index) - self.reactor.seconds())
        self._call = self.reactor.callLater(delay, self._fire)

    def _fire(self) -> None:
        now = self.reactor.seconds()
        due = int((now - self._start) / self.frame_s + 1e-9) + 1 - self.tick_index
        if due > self.max_catchup:
            skipped = due - self.max_catchup
            self.missed += skipped
            metrics.ticks_missed_total.inc(skipped)
            self.tick_index += skipped
            due = self.max_catchup
        for _ in range(max(due, 1)):
            deadline = self.deadline(self.tick_index)
            metrics.tick_lateness_seconds.observe(max(0.0, now - deadline))
            for handler in self._handlers:
                try:
                    handler(self.tick_index, deadline)
                except Exception:
                    # One broken channel must not silence the others.
                    log.exception("tick handler %r failed", handler)
            self.tick_index += 1
        self._schedule()
