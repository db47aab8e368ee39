"""CPU-heavy Python work of control in worker processes.

Decoding an upload, measuring its loudness and writing its FLAC holds the
GIL for seconds; in a thread it would delay every API call made meanwhile.
In a process of its own it only costs a core. The pool is made on first use
(spawned, not forked: control has threads), and results come back to the
reactor thread as Deferreds without a thread waiting on them.

Tests run the same work at once on their own thread (``Inline``).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed

T = TypeVar("T")


class ProcessWorkers:
    def __init__(self, reactor: Any, workers: int = 1) -> None:
        self.reactor = reactor
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """fn(*args, **kwargs) in a worker process; fn, its arguments and its result must pickle."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        deferred: Deferred[T] = Deferred()
        future = self._pool.submit(fn, *args, **kwargs)

        def done(finished: Future[T]) -> None:
            error = finished.exception()
            if error is not None:
                self.reactor.callFromThread(deferred.errback, error)
            else:
                self.reactor.callFromThread(deferred.callback, finished.result())

        future.add_done_callback(done)
        return deferred

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class Inline:
    """The same interface, running the work at once (tests)."""

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        try:
            return succeed(fn(*args, **kwargs))
        except Exception as exc:
            return fail(exc)

    def stop(self) -> None:
        pass
