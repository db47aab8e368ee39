"""CPU-heavy Python work of control in worker processes.

Decoding an upload, measuring its loudness and writing its FLAC holds the
GIL for seconds; in a thread it would delay every API call made meanwhile.
In a process of its own it only costs a core. The pool is made on first use
(spawned, not forked: control has threads), and results come back to the
reactor thread as Deferreds without a thread waiting on them.

At most ``workers`` jobs run and ``waiting`` more wait; beyond that ``run``
refuses at once with Busy (the API answers 503 with Retry-After), so a flood
of uploads queues neither memory nor minutes of work behind the ones running.

Tests run the same work at once on their own thread (``Inline``).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed

from broadcaster.core.lifetime import die_with_parent

T = TypeVar("T")


class Busy(Exception):
    """Every worker is busy and the queue is full: try again in ``retry_after_s``."""

    def __init__(self, running: int, waiting: int, retry_after_s: int) -> None:
        super().__init__(f"{running} running and {waiting} waiting already; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class ProcessWorkers:
    RETRY_AFTER_S = 10

    def __init__(self, reactor: Any, workers: int = 1, waiting: int = 4) -> None:
        self.reactor = reactor
        self.workers = workers
        self.waiting = waiting
        self.in_flight = 0
        self._pool: ProcessPoolExecutor | None = None

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """fn(*args, **kwargs) in a worker process; fn, its arguments and its result must pickle.
        A failed Deferred (Busy) at once when ``workers`` run and ``waiting`` wait already."""
        if self.in_flight >= self.workers + self.waiting:
            return fail(Busy(self.workers, self.waiting, self.RETRY_AFTER_S))
        try:
            future = self._executor().submit(fn, *args, **kwargs)
        except BrokenProcessPool:  # a worker was killed (the OOM killer): a new pool, once
            self._pool = None
            try:
                future = self._executor().submit(fn, *args, **kwargs)
            except (BrokenProcessPool, RuntimeError, OSError) as exc:
                return fail(exc)
        except (RuntimeError, OSError) as exc:
            return fail(exc)
        deferred: Deferred[T] = Deferred()
        self.in_flight += 1

        def settled(result: Any) -> Any:
            self.in_flight -= 1
            return result

        deferred.addBoth(settled)

        def done(finished: Future[T]) -> None:
            error = finished.exception()
            if error is not None:
                self.reactor.callFromThread(deferred.errback, error)
            else:
                self.reactor.callFromThread(deferred.callback, finished.result())

        future.add_done_callback(done)
        return deferred

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=die_with_parent, initargs=(os.getpid(),))
        return self._pool

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


_LIBC: Any = None


def trim_heap() -> None:
    """Give freed heap memory back to the system (glibc's malloc_trim), after work that
    allocated a whole programme in a thread: otherwise that thread's arena keeps it."""
    global _LIBC
    if not sys.platform.startswith("linux"):
        return
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL(None)
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Inline:
    """The same interface, running the work at once (tests)."""

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        try:
            return succeed(fn(*args, **kwargs))
        except Exception as exc:
            return fail(exc)

    def stop(self) -> None:
        pass
