"""The core in this process, on the caller's reactor: for tests and tools.

Same Core, same commands and events as the core's own process, without the
socket: commands are handed over in memory (each is pickled and unpickled, so
a command that could not cross the process boundary fails here too) and the
frame clock runs on the reactor's ``seconds()`` (a task.Clock in tests).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed

from broadcaster.core import commands as c
from broadcaster.core.commands import CoreSettings
from broadcaster.core.engine import Core


class LocalCore:
    def __init__(self, reactor: Any, wall: Callable[[], float]) -> None:
        self.reactor = reactor
        self.wall = wall
        self.on_event: Callable[[c.Event], None] = lambda event: None
        self.core: Core | None = None
        self._call: Any = None
        self._queries = 0

    @property
    def started(self) -> bool:
        return self.core is not None

    def start(self, settings: CoreSettings, sock: Any) -> None:
        self.core = Core(settings, sock, now=self.reactor.seconds, wall=self.wall, emit=self._emit)
        self.core.start()
        self._schedule()

    def _emit(self, event: c.Event) -> None:
        self.on_event(pickle.loads(pickle.dumps(event)))

    def _schedule(self) -> None:
        assert self.core is not None
        delay = max(0.0, self.core.next_deadline - self.reactor.seconds())
        self._call = self.reactor.callLater(delay, self._fire)

    def _fire(self) -> None:
        assert self.core is not None
        self.core.run_due()
        if not self.core.stopped:
            self._schedule()

    def send(self, command: c.Command) -> None:
        assert self.core is not None
        self.core.submit(pickle.loads(pickle.dumps(command)))

    def datagram(self, data: bytes, address: tuple[str, int]) -> None:
        """A loudspeaker's datagram (tests hand them in; the process reads its socket)."""
        assert self.core is not None
        self.core.datagram(data, address)

    def ask(self, what: str, *args: Any) -> Deferred[Any]:
        assert self.core is not None
        self._queries += 1
        answers: list[Any] = []
        previous = self.on_event

        def catch(event: c.Event) -> None:
            if isinstance(event, c.Answer) and event.query_id == self._queries:
                answers.append(event.value)
            else:
                previous(event)

        self.on_event = catch
        try:
            self.core.submit(c.Query(self._queries, what, args))
        finally:
            self.on_event = previous
        return succeed(answers[0] if answers else None)

    def stop(self) -> Deferred[None]:
        if self.core is not None and not self.core.stopped:
            self.core.stop()
        if self._call is not None and self._call.active():
            self._call.cancel()
        return succeed(None)
