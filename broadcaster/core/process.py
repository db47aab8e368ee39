"""The core's own process: one loop that reads loudspeaker datagrams and
commands, and ticks every channel on time.

Why a process and not a thread: control (the API, reports, uploads, TTS,
password checks) is Python that holds the GIL for milliseconds at a time, and
each time the core's thread gave the GIL up (every libopus, sendmmsg or numpy
call does) it would wait up to the switch interval (5 ms) to get it back: a
few dozen such waits per tick and frames are late. In a process of its own
the core shares nothing with control but a socket (docs/architecture.md).

The loop waits in select() until the next frame deadline, for datagrams on
the UDP socket (at most READ_BUDGET per wake-up, so a flood cannot starve the
clock) and for commands from control. Events to control are buffered and
written without blocking; if control stops reading, listener pages are
dropped first and audio to loudspeakers never waits.

Started by control (broadcaster/control/coreproc.py) as
``python -m broadcaster.core.process LINK_FD UDP_FD``; the first message on
the link is the CoreSettings. When the link closes (control died) it exits.
With ``CoreSettings.processes`` above one it starts further core processes
(``--shard``) and spreads the channels over them (core/shards.py).
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable

from broadcaster.core import commands as c
from broadcaster.core.commands import CoreSettings
from broadcaster.core.engine import Core
from broadcaster.core.link import LINK_READ, FrameReader, encode, send_blocking, send_some
from broadcaster.core.shards import Shards
from broadcaster.logfmt import configure

log = logging.getLogger("broadcaster.core")

READ_BUDGET = 256           # datagrams per wake-up
READ_MINIMUM = 32           # datagrams per wake-up even when a frame is due (keepalives must not starve)
PAGE_DROP_BYTES = 16 << 20  # past this much unwritten output, listener pages are dropped
STATUS_DROP_BYTES = 64 << 20  # and past this, status snapshots too (the next one says it all again)


class CoreLoop:
    """``shard``: one of the further core processes (core/shards.py), which plays the channels
    the primary gives it and never reads the UDP socket (it only sends on it)."""

    def __init__(self, link: socket.socket, udp: socket.socket, shard: bool = False) -> None:
        self.link = link
        self.udp = udp
        self.shard = shard
        self.reader = FrameReader()
        self.out = bytearray()
        self.dropped_pages = 0
        self.core: Core | None = None
        self.shards: Shards | None = None
        self._early: list[c.Command] = []
        self.selector = selectors.DefaultSelector()
        link.setblocking(False)
        udp.setblocking(False)

    def emit(self, event: c.Event) -> None:
        if isinstance(event, c.Page) and len(self.out) > PAGE_DROP_BYTES:
            self.dropped_pages += 1
            return
        if isinstance(event, c.Status) and len(self.out) > STATUS_DROP_BYTES:
            return
        self.out += encode(event)

    def run(self) -> None:
        settings = self._settings()
        _nice(settings.nice)
        core = self.core = Core(settings, self.udp, now=time.monotonic, wall=time.time, emit=self.emit)
        submit = core.submit
        if not self.shard:
            self.selector.register(self.udp, selectors.EVENT_READ, "udp")
            if settings.processes > 1:
                shards = self.shards = Shards(settings, self.udp, core, self.emit)
                submit = shards.route
                for shard in shards.shards:
                    self.selector.register(shard.link, selectors.EVENT_READ, shard)
        self.selector.register(self.link, selectors.EVENT_READ, "link")
        core.start()
        for message in self._early:
            submit(message)
        self._early = []
        open_link = True
        while open_link and not core.done:
            timeout = max(0.0, core.next_deadline - time.monotonic())
            ready = self.selector.select(timeout)
            if self.shards is not None and any(key.data == "link" for key, _ in ready):
                # Commands on to the other processes before this one's frame: they wait for their
                # own next frame, not for ours as well (an alert on channels of both).
                open_link = self._read_commands(core, submit)
                self.shards.flush()
                ready = [(key, mask) for key, mask in ready if key.data != "link"]
            core.run_due()  # a frame that is due goes before anything read meanwhile
            for key, _mask in ready:
                if key.data == "udp":
                    self._read_datagrams(core)
                elif key.data == "link":
                    open_link = self._read_commands(core, submit)
                elif self.shards is not None and not self.shards.read(key.data):
                    core.stop()
                    open_link = False
            core.run_due()
            self._flush()
        self._flush(block=True)
        if self.shards is not None:
            self.shards.close()

    def _settings(self) -> CoreSettings:
        self.link.setblocking(True)
        while True:
            data = self.link.recv(LINK_READ)
            if not data:
                raise SystemExit(0)
            messages = self.reader.feed(data)
            if messages:
                break
        self.link.setblocking(False)
        settings = messages[0]
        if not isinstance(settings, CoreSettings):
            raise SystemExit("the core's first message must be its settings")
        self._early = messages[1:]
        return settings

    def _read_datagrams(self, core: Core) -> None:
        """At most READ_BUDGET; past the next frame's deadline only READ_MINIMUM, so a busy
        loop still keeps up with keepalives (a full receive buffer drops them and the
        loudspeakers go offline) while a flood cannot hold a frame back for long. Read first,
        then handled as a batch: a full batch means the socket is behind, and then subscribed
        loudspeakers go first (Core.datagrams)."""
        deadline = core.next_deadline
        batch: list[tuple[bytes, tuple[str, int]]] = []
        recv = self.udp.recvfrom
        full = True
        for i in range(READ_BUDGET):
            if i >= READ_MINIMUM and i % 16 == 0 and time.monotonic() >= deadline:
                break
            try:
                batch.append(recv(2048))
            except (BlockingIOError, InterruptedError):
                full = False
                break
            except OSError:
                full = False
                break  # e.g. ICMP port unreachable reported on the socket
        core.datagrams(batch, behind=full)

    def _read_commands(self, core: Core, submit: Callable[[c.Command], None]) -> bool:
        try:
            data = self.link.recv(LINK_READ)
        except (BlockingIOError, InterruptedError):
            return True
        if not data:  # control is gone: nobody to tell, nothing more to do
            core.stop()
            return False
        for message in self.reader.feed(data):
            submit(message)
        return True

    def _flush(self, block: bool = False) -> None:
        if self.shards is not None:
            self.shards.flush()
        if block:
            send_blocking(self.link, self.out)
        else:
            send_some(self.link, self.out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    shard = args[:1] == ["--shard"]
    link_fd, udp_fd = (int(arg) for arg in args[int(shard):int(shard) + 2])
    # Control decides when the core stops (a Stop command, or the link closing): a SIGTERM
    # sent to the whole service must not end the core before control has recorded its sessions.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    name = "core-shard" if shard else "core"
    configure(name)
    link = socket.socket(fileno=link_fd)
    udp = socket.socket(fileno=udp_fd)
    CoreLoop(link, udp, shard=shard).run()
    return 0


def _nice(value: int) -> None:
    """Ahead of control for the CPU when the machine is busy (server.core_nice), where allowed."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, value)
    except (OSError, AttributeError):
        log.info("cannot set the core's nice value to %d; it runs at the default", value)


if __name__ == "__main__":
    sys.exit(main())

