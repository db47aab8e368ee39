"""Channels spread over several core processes, so the audio uses every CPU.

A channel's frame (mix, one Opus encode, packetize, fan-out) is the unit of
work and channels share nothing, so channels are what is spread. Threads would
share one GIL: ctypes releases it inside libopus and sendmmsg, but the Python
between those calls holds it; processes share nothing (benchmarks/channels.py
measures both counts).

The core process control starts is the primary. With ``CoreSettings.processes``
above one it starts the others itself (``python -m broadcaster.core.process
--shard LINK UDP``; they die with it), places each new channel on the process
with the fewest channels (another before itself on a tie: it also reads every
datagram), and from then on:

- it alone reads the loudspeakers' datagrams and keeps their subscriptions;
  when a channel played elsewhere gains or loses loudspeakers, it sends that
  process the new address list (SetAddresses), applied at its next frame;
- commands naming channels go to the processes playing them: an AddInput on
  channels of several processes is split, and its shared audio gets a hard link
  for each further process, because each process unlinks the file it maps;
- events from the others pass on to control unchanged, except their
  once-a-second Status, merged into the primary's own, and their metrics,
  answered together as a list (control merges the expositions,
  metrics.merge_expositions: parsing them is no work for an audio loop).

Every process sends on the one UDP socket (inherited) on its own frame clock:
their frames are not in phase, which nobody hears, as each channel is one
process's. If one of them dies the primary ends too, and control stops the
server, as when the core dies.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from broadcaster.codecs.shared import SharedPcm
from broadcaster.core import commands as c
from broadcaster.core.engine import Core
from broadcaster.core.lifetime import die_with_parent
from broadcaster.core.link import LINK_READ, FrameReader, encode, send_blocking, send_some

log = logging.getLogger("broadcaster.core")



@dataclass(eq=False)
class Shard:
    """One further core process, as the primary sees it."""

    index: int
    link: socket.socket
    process: subprocess.Popen[bytes]
    reader: FrameReader = field(default_factory=FrameReader)
    out: bytearray = field(default_factory=bytearray)
    channels: int = 0

    def send(self, message: Any) -> None:
        self.out += encode(message)

    def flush(self) -> None:
        send_some(self.link, self.out)


@dataclass(eq=False)
class _Gather:
    """A metrics query asked of every process: answered once all have."""

    waiting: int
    parts: list[bytes] = field(default_factory=list)


Where = Shard | None  # None: the primary itself


class Shards:
    def __init__(self, settings: c.CoreSettings, udp: socket.socket, core: Core,
                 emit: Callable[[c.Event], None]) -> None:
        self.core = core
        self.emit = emit
        self.shards = [_start(index, settings, udp) for index in range(1, settings.processes)]
        self.owner: dict[str, Where] = {}
        self.local_channels = 0
        self.inputs: dict[str, dict[str, Where]] = {}  # input -> its channels -> where each plays
        self.statuses: dict[int, c.Status] = {}
        self._gathers: dict[int, _Gather] = {}
        core.emit = self._local_event
        core.on_remote_addresses = self._addresses

    # --- commands from control ----------------------------------------------

    def route(self, command: c.Command) -> None:
        if isinstance(command, c.AddChannel):
            self._add_channel(command)
        elif isinstance(command, c.AddInput):
            self._add_input(command)
        elif isinstance(command, (c.RemoveInput, c.LiveEnd, c.LiveAudio)):
            for where in set(self.inputs.get(command.input_id, {None: None}).values()):
                self._to(where, command)
        elif isinstance(command, c.SetMessage):
            holders = dict.fromkeys(self.inputs.get(command.input_id, {None: None}).values())
            for tag, where in enumerate(holders):
                self._to(where, dataclasses.replace(command, pcm=self._shared(command.pcm, tag, command.input_id)))
        elif isinstance(command, (c.SetListeners, c.SetTitle)):
            self._to(self.owner.get(command.channel), command)
        elif isinstance(command, c.Query) and command.what == "metrics":
            self._gathers[command.query_id] = _Gather(waiting=1 + len(self.shards))
            for shard in self.shards:
                shard.send(command)
            self.core.submit(command)
        elif isinstance(command, c.Stop):
            for shard in self.shards:
                shard.send(command)
            self.core.submit(command)
        else:  # devices and other queries: the subscriptions are here
            self.core.submit(command)

    def _to(self, where: Where, command: c.Command) -> None:
        if where is None:
            self.core.submit(command)
        else:
            where.send(command)

    def _add_channel(self, command: c.AddChannel) -> None:
        if command.spec.id in self.owner:
            return
        where: Where = min(self.shards, key=lambda shard: shard.channels, default=None)
        if where is None or self.local_channels < where.channels:
            where = None
            self.local_channels += 1
        else:
            where.channels += 1
        self.owner[command.spec.id] = where
        self._to(where, command)

    def _add_input(self, command: c.AddInput) -> None:
        groups: dict[Where, list[str]] = {}
        for channel_id in command.channels:
            groups.setdefault(self.owner.get(channel_id), []).append(channel_id)
        held = self.inputs.setdefault(command.input_id, {})
        for tag, (where, channels) in enumerate(groups.items()):
            source = self._shared(command.source, tag, command.input_id)
            if source is None:
                for channel_id in channels:
                    self.emit(c.InputEnded(command.input_id, channel_id, "refused"))
                continue
            held.update(dict.fromkeys(channels, where))
            self._to(where, dataclasses.replace(command, channels=tuple(channels), source=source))
        if not held:
            del self.inputs[command.input_id]

    def _shared(self, value: Any, tag: int, input_id: str) -> Any:
        """What the ``tag``-th process to get this audio is sent: the first the original, each
        further one a hard link of its own to every SharedPcm in it, made now, before any
        process can map and unlink the original. None if a link cannot be made."""
        if tag == 0:
            return value
        try:
            if isinstance(value, SharedPcm):
                return _link(value, tag)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                fields = {f.name: _link(v, tag) for f in dataclasses.fields(value)
                          if isinstance(v := getattr(value, f.name), SharedPcm)}
                return dataclasses.replace(value, **fields) if fields else value
        except OSError as exc:
            log.error("core: input %s: its audio cannot be shared with another core process: %s", input_id, exc)
            return None
        return value

    # --- events -------------------------------------------------------------

    def _local_event(self, event: c.Event) -> None:
        if isinstance(event, c.Status):
            channels = dict(event.channels)
            missed = event.missed
            for status in self.statuses.values():
                channels.update(status.channels)
                missed += status.missed
            self.emit(dataclasses.replace(event, channels=channels, missed=missed))
            return
        self._event(event)

    def _shard_event(self, shard: Shard, event: c.Event) -> None:
        if isinstance(event, c.Status):
            self.statuses[shard.index] = event
            return
        if isinstance(event, c.ChannelReady):
            self.core.remote[event.channel] = event.rtp
        self._event(event)

    def _event(self, event: c.Event) -> None:
        if isinstance(event, c.Answer) and event.query_id in self._gathers:
            gather = self._gathers[event.query_id]
            gather.parts.append(event.value or b"")
            gather.waiting -= 1
            if gather.waiting == 0:
                del self._gathers[event.query_id]
                self.emit(c.Answer(event.query_id, gather.parts))
            return
        if isinstance(event, c.InputEnded):
            held = self.inputs.get(event.input_id)
            if held is not None:
                held.pop(event.channel, None)
                if not held:
                    del self.inputs[event.input_id]
        self.emit(event)

    def _addresses(self, channel_id: str, addresses: list[tuple[str, int]]) -> None:
        where = self.owner.get(channel_id)
        if where is not None:
            where.send(c.SetAddresses(channel_id, tuple(addresses)))

    # --- the links ----------------------------------------------------------

    def read(self, shard: Shard) -> bool:
        """Events from one process; False when it has gone (then the primary ends too)."""
        try:
            data = shard.link.recv(LINK_READ)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            log.critical("core process %d ended (exit %s): stopping", shard.index, shard.process.poll())
            return False
        for event in shard.reader.feed(data):
            self._shard_event(shard, event)
        return True

    def flush(self) -> None:
        for shard in self.shards:
            shard.flush()

    def close(self) -> None:
        for shard in self.shards:
            send_blocking(shard.link, shard.out)
            shard.link.close()
        for shard in self.shards:
            try:
                shard.process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                shard.process.kill()


def _link(pcm: SharedPcm, tag: int) -> SharedPcm:
    path = f"{pcm.path.removesuffix('.f32')}-{tag}.f32"  # still matched by shared.sweep
    os.link(pcm.path, path)
    return SharedPcm(path, pcm.samples)


def _start(index: int, settings: c.CoreSettings, udp: socket.socket) -> Shard:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    process = subprocess.Popen(
        [sys.executable, "-m", "broadcaster.core.process", "--shard", str(theirs.fileno()), str(udp.fileno())],
        pass_fds=(theirs.fileno(), udp.fileno()), stdin=subprocess.DEVNULL,
        preexec_fn=partial(die_with_parent, os.getpid()))
    theirs.close()
    ours.setblocking(False)
    shard = Shard(index, ours, process)
    shard.send(dataclasses.replace(settings, processes=1))
    return shard
