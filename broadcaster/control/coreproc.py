"""Control's handle on the core's process: start it, send commands, receive events.

The child gets two inherited descriptors: its end of a socketpair (the link)
and the UDP socket loudspeakers talk to, which control binds first so the
port is known before anything listens. Control keeps its own copy of the UDP
socket only to send alert commands (never to read).

If the core process exits while the server runs, nothing can play: control
logs it and stops the server, so a supervisor (systemd) restarts the whole.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from broadcaster.core import commands as c
from broadcaster.core.commands import CoreSettings
from broadcaster.core.link import FrameReader, encode
from broadcaster.protocols.sendnow import send_now, socket_of

log = logging.getLogger(__name__)

SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # Linux <asm-generic/socket.h>; Python does not export them


def _grow_buffers(sock: socket.socket, size: int) -> None:
    """Room for a frame's fan-out and for a fleet's keepalives arriving together.

    The plain options are capped by net.core.[rw]mem_max; the FORCE variants
    (root only) are not, so try them first."""
    linux = sys.platform.startswith("linux")
    for force, plain in ((SO_SNDBUFFORCE if linux else None, socket.SO_SNDBUF),
                         (SO_RCVBUFFORCE if linux else None, socket.SO_RCVBUF)):
        try:
            if force is None:
                raise PermissionError
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


def udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, port))
    sock.setblocking(False)
    _grow_buffers(sock, 4 * 1024 * 1024)
    return sock


class _LinkProtocol(Protocol):
    def __init__(self, owner: CoreProcess) -> None:
        self.owner = owner
        self.reader = FrameReader()

    def connectionMade(self) -> None:  # noqa: N802
        self.owner._protocol_made(self)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        for event in self.reader.feed(data):
            self.owner._event(event)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # noqa: N802
        self.owner._lost()


class CoreProcess:
    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.on_event: Callable[[c.Event], None] = lambda event: None
        self.on_exit: Callable[[], None] = lambda: None
        self.process: subprocess.Popen[bytes] | None = None
        self.protocol: _LinkProtocol | None = None
        self._queries: dict[int, Deferred[Any]] = {}
        self._next_query = 0
        self._stopping: Deferred[None] | None = None
        self._gone = False
        self._early: list[Any] = []
        self._socket: Any = None

    @property
    def started(self) -> bool:
        return self.process is not None

    def start(self, settings: CoreSettings, sock: socket.socket) -> None:
        """Spawn the core; commands sent before it is up are queued on the link."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "broadcaster.core.process", str(theirs.fileno()), str(sock.fileno())],
            pass_fds=(theirs.fileno(), sock.fileno()), env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        ours.setblocking(False)
        factory = Factory.forProtocol(lambda: _LinkProtocol(self))
        transport = self.reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, factory)
        del transport
        ours.close()  # the reactor holds its own duplicate
        self.send_raw(settings)

    def _protocol_made(self, protocol: _LinkProtocol) -> None:
        self.protocol = protocol
        self._socket = socket_of(protocol.transport)
        early, self._early = self._early, []
        for message in early:
            self.send_raw(message)

    def send_raw(self, message: Any) -> None:
        if self._gone:
            return
        if self.protocol is None:
            self._early.append(message)
            return
        transport = self.protocol.transport
        assert transport is not None
        # At once, not at the next reactor turn: an alert's AddInput must not wait for the rest
        # of the API request that made it (benchmarks/preemption.py).
        send_now(transport, self._socket, encode(message))

    def send(self, command: c.Command) -> None:
        self.send_raw(command)

    def ask(self, what: str, *args: Any) -> Deferred[Any]:
        if self._gone:
            return succeed(None)
        self._next_query += 1
        deferred: Deferred[Any] = Deferred()
        self._queries[self._next_query] = deferred
        self.send(c.Query(self._next_query, what, args))
        return deferred

    def _event(self, event: c.Event) -> None:
        if isinstance(event, c.Answer):
            deferred = self._queries.pop(event.query_id, None)
            if deferred is not None:
                deferred.callback(event.value)
            return
        try:
            self.on_event(event)
        except Exception:
            log.exception("handling core event %s failed", type(event).__name__)

    def _lost(self) -> None:
        self._gone = True
        for deferred in self._queries.values():
            deferred.callback(None)
        self._queries.clear()
        if self._stopping is not None:
            stopping, self._stopping = self._stopping, None
            stopping.callback(None)
        else:
            code = self.process.poll() if self.process else None
            log.critical("the audio core's process ended (exit %s); stopping the server", code)
            self.on_exit()

    def stop(self) -> Deferred[None]:
        """Ask the core to end every subscription and exit; fires when its last events are in."""
        if self._gone:
            return succeed(None)
        self._stopping = Deferred()
        self.send(c.Stop())
        stopping = self._stopping
        timeout = self.reactor.callLater(3.0, self._kill)
        stopping.addBoth(lambda result: (timeout.cancel() if timeout.active() else None, result)[1])
        return stopping

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.loseConnection()
