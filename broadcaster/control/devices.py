"""Loudspeakers on the control side: the registry the core checks datagrams
against, who is online (as the core reports it), and alert commands.

The core verifies every datagram and owns the subscriptions; control keeps a
mirror from the core's events (address on start, last heartbeat and status
once a second) for the API, the records and for commands. Command rounds
(amplifier on and alert volume, then back) are signed and sent here, in a
worker thread, on control's copy of the UDP socket: thousands of HMACs and
sendto calls never run on the audio loop, and they go only to addresses the
core has seen prove their key.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from broadcaster import metrics
from broadcaster.core import commands as c
from broadcaster.protocols.speaker import MessageType, SpeakerStatus, encode_message
from broadcaster.storage import Storage
from broadcaster.storage.loudspeakers import StoredDevice

log = logging.getLogger(__name__)
COMMAND_BATCH = 256       # datagrams sent back to back in a command round ...
COMMAND_PAUSE_S = 0.002   # ... then a pause, so the round never fills the socket's send buffer


@dataclass
class Online:
    """A loudspeaker's live subscription, as the core last reported it."""

    device_id: str
    channel: str
    address: tuple[str, int]
    since: float
    last_seen: float
    status: SpeakerStatus = field(default_factory=SpeakerStatus)


class Devices:
    def __init__(self, storage: Storage, send: Callable[[c.Command], None], reactor: Any,
                 wall: Callable[[], float], pool: Any = None) -> None:
        self.storage = storage
        self.send = send
        self.reactor = reactor
        self.wall = wall
        self.known: dict[str, c.Device] = {}
        self.online: dict[str, Online] = {}
        self._on_channel: dict[str, dict[str, Online]] = {}  # the same, by channel: no scan of every device
        self.sock: socket.socket | Any = None  # control's copy of the UDP socket, for commands
        self.on_ack: Callable[[str, int], None] = lambda device, seq: None
        self._command_seq = 0
        self._commands: Any = pool  # made on first use unless given (tests give one that runs work at once)

    def _pool(self) -> Any:
        """Command rounds in a thread of their own: never behind TTS or a programme's decoding."""
        if self._commands is None:
            self._commands = ThreadPool(minthreads=1, maxthreads=1, name="broadcaster-commands")
            self._commands.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self._commands.stop)
        return self._commands

    # --- the registry -----------------------------------------------------------

    def load_all(self) -> None:
        """At start: every registered device's key unsealed once, sent to the core."""
        self.known = {d.id: _device(d) for d in self.storage.loudspeakers.devices_sync()}
        self.send(c.SetDevices(tuple(self.known.values())))

    def changed(self, device_id: str) -> Deferred[None]:
        """One loudspeaker was registered, edited, re-keyed or deleted: only it is reloaded.
        A new key or channel ends its subscription here at once too (the core does the same),
        so no command is signed with a key its address has not proven."""

        def apply(stored: StoredDevice | None) -> None:
            old = self.known.get(device_id)
            if stored is None:
                self.known.pop(device_id, None)
                self._forget(device_id)
                self.send(c.DropDevice(device_id))
            else:
                self.known[device_id] = device = _device(stored)
                if old is None or old.key != device.key or old.channel != device.channel:
                    self._forget(device_id)
                self.send(c.PutDevice(device))

        return self.storage.loudspeakers.device(device_id).addCallback(apply)

    # --- what the core reports ---------------------------------------------------

    def session_changed(self, event: c.SessionChanged) -> None:
        if event.kind == "start":
            self._forget(event.device_id)
            online = Online(event.device_id, event.channel, event.address, event.at, event.at)
            self.online[event.device_id] = online
            self._on_channel.setdefault(event.channel, {})[event.device_id] = online
        else:
            self._forget(event.device_id)

    def _forget(self, device_id: str) -> None:
        online = self.online.pop(device_id, None)
        if online is not None:
            self._on_channel.get(online.channel, {}).pop(device_id, None)

    def heard(self, heard: dict[str, tuple[float, dict[str, Any]]]) -> None:
        for device_id, (last_seen, status) in heard.items():
            online = self.online.get(device_id)
            if online is not None:
                online.last_seen = last_seen
                online.status = SpeakerStatus(volume=status.get("volume"), signal_dbm=status.get("signal_dbm"),
                                              uptime_s=status.get("uptime_s"), amplifier_on=status.get("amp"))

    def on_channels(self, channels: Iterable[str]) -> int:
        wanted = set(channels)
        return sum(len(self._on_channel.get(channel, {})) for channel in wanted)

    # --- commands ----------------------------------------------------------------

    def command(self, channels: Iterable[str], body: dict[str, Any], *, skip: Iterable[str] = (),
                only: set[str] | None = None) -> tuple[int, Deferred[list[str]]]:
        """Sign and send one COMMAND to each loudspeaker online on these channels (less
        ``skip``, or only ``only``); returns the command's seq and a Deferred of who was sent it."""
        self._command_seq += 1
        seq = self._command_seq
        wanted, skipped = set(channels), set(skip)
        targets = [(o.address, self.known[o.device_id]) for channel in wanted
                   for o in self._on_channel.get(channel, {}).values()
                   if o.device_id in self.known and o.device_id not in skipped
                   and (only is None or o.device_id in only)]
        now = self.wall()
        sock = self.sock
        payload = {"ts": int(now * 1000), "seq": seq, **body}

        def sign_and_send() -> list[str]:
            sent = []
            for i, (address, device) in enumerate(targets):
                if i and i % COMMAND_BATCH == 0:
                    time.sleep(COMMAND_PAUSE_S)  # the core's fan-out shares this socket's send buffer
                datagram = encode_message(MessageType.COMMAND, device.id, payload, device.key)
                try:
                    sock.sendto(datagram, address)
                except OSError:
                    continue
                sent.append(device.id)
            return sent

        work = deferToThreadPool(self.reactor, self._pool(), sign_and_send)

        def count(sent: list[str]) -> list[str]:
            metrics.speaker_commands_total.labels("sent").inc(len(sent))
            return sent

        return seq, work.addCallback(count)

    def acknowledged(self, event: c.CommandAck) -> None:
        metrics.speaker_commands_total.labels("acknowledged").inc()
        self.on_ack(event.device_id, event.seq)


def _device(stored: StoredDevice) -> c.Device:
    return c.Device(id=stored.id, key=stored.key, channel=stored.channel, zone=stored.zone, volume=stored.volume)
