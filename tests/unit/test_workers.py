"""The upload workers' bound: at most ``workers`` running and ``waiting`` queued; beyond
that a job is refused at once (Busy), never queued. Real worker processes."""

from __future__ import annotations

import os
import time
from typing import Any

from twisted.python.failure import Failure

from broadcaster.control.workers import Busy, ProcessWorkers


class Reactor:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...]]] = []

    def callFromThread(self, f: Any, *args: Any) -> None:  # noqa: N802
        self.calls.append((f, args))

    def run_calls(self) -> None:
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


def test_beyond_running_and_waiting_a_job_is_refused_at_once_and_room_returns() -> None:
    reactor = Reactor()
    workers = ProcessWorkers(reactor, workers=1, waiting=1)
    results: list[Any] = []
    try:
        for _ in range(3):
            workers.run(time.sleep, 1.0).addBoth(results.append)
        assert len(results) == 1 and isinstance(results[0], Failure) and results[0].check(Busy)
        assert results[0].value.retry_after_s == ProcessWorkers.RETRY_AFTER_S
        assert workers.in_flight == 2
        assert workers._pool is not None
        workers._pool.shutdown(wait=True)  # both finish
        reactor.run_calls()
        assert results[1:] == [None, None] and workers.in_flight == 0
    finally:
        workers.stop()


def test_a_worker_killed_mid_job_fails_that_job_only_and_the_next_gets_a_new_pool() -> None:
    """As the OOM killer would: the job fails, the count comes back down, and the pool is
    rebuilt, rather than every later upload failing (or, counted as running, refused as busy)."""
    reactor = Reactor()
    workers = ProcessWorkers(reactor, workers=1, waiting=0)
    results: list[Any] = []
    try:
        workers.run(os._exit, 9).addBoth(results.append)
        assert workers._pool is not None
        workers._pool.shutdown(wait=True)
        reactor.run_calls()
        assert isinstance(results[0], Failure) and workers.in_flight == 0
        workers.run(abs, -3).addBoth(results.append)
        assert workers._pool is not None
        workers._pool.shutdown(wait=True)
        reactor.run_calls()
        assert results[1] == 3
    finally:
        workers.stop()
