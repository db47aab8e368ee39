"""The whole server in memory: a memory reactor with a fake clock, SQLite in
memory, the audio core in this process (LocalCore), a UDP socket that records
what is sent, a fake TTS and a fake wall clock that moves with the reactor.

Requests go through the real HTTP site (twisted.web over a StringTransport),
loudspeakers are the reference client's own message code; nothing here needs
a port, a thread or a real second.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from broadcaster.app import BroadcastServer
from broadcaster.codecs.opus import OpusDecoder
from broadcaster.config import parse_config
from broadcaster.control.workers import Inline
from broadcaster.core.local import LocalCore
from broadcaster.protocols.rtp import parse_rtp
from broadcaster.protocols.speaker import MessageType, parse_envelope
from broadcaster.speaker.client import SubscriptionMessages
from broadcaster.storage import KeySealer, Storage
from tests.conftest import RecordingSocket, SyncPool

POOLS = ("db", "reports", "auth", "tokens", "commands", "alerts", "programmes", "transcode", "bulletins",
         "speech")
WALL_OFFSET = 1.8e9  # the wall clock is the reactor's clock plus this
FRAME = 0.02


class Reactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.pool = SyncPool()

    def getThreadPool(self) -> SyncPool:  # noqa: N802
        return self.pool

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:  # noqa: N802
        self.callLater(0, f, *args, **kwargs)


class FakeTTS:
    name = "fake"

    def __init__(self) -> None:
        self.spoken: list[tuple[str, str]] = []

    def synthesize(self, text: str, language: str = "vi") -> np.ndarray:
        """1.5 s of a 300 Hz tone stands for the speech: easy to tell from every other sound here."""
        self.spoken.append((text, language))
        t = np.arange(int(1.5 * 48000)) / 48000
        return (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


KEYS = {"spk-a1": "key-of-loudspeaker-a1-0001", "spk-a2": "key-of-loudspeaker-a2-0002",
        "spk-b1": "key-of-loudspeaker-b1-0003"}


def document(tmp_path: Path) -> dict[str, Any]:
    tone = tmp_path / "loop.wav"
    t = np.arange(48000) / 48000
    soundfile.write(str(tone), (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 48000)
    return {
        "server": {"host": "127.0.0.1", "udp_fanout": "loop"},
        "speakers": {"keepalive_s": 1, "missed_keepalives": 3},
        "storage": {"path": str(tmp_path / "unused.sqlite"), "media_dir": str(tmp_path / "media"),
                    "secret_file": str(tmp_path / "secret.key")},
        "zones": [{"id": "province", "children": [
            {"id": "commune-a", "children": [{"id": "hamlet-a", "kind": "hamlet"}]},
            {"id": "commune-b", "children": [{"id": "hamlet-b", "kind": "hamlet"}]}]}],
        "channels": [{"id": "ch-a", "zone": "commune-a", "name": "Kênh A", "loop": str(tone)},
                     {"id": "ch-b", "zone": "commune-b", "name": "Kênh B"}],
        "loudspeakers": [{"id": "spk-a1", "zone": "hamlet-a", "channel": "ch-a", "key": KEYS["spk-a1"]},
                         {"id": "spk-a2", "zone": "hamlet-a", "channel": "ch-a", "key": KEYS["spk-a2"]},
                         {"id": "spk-b1", "zone": "hamlet-b", "channel": "ch-b", "key": KEYS["spk-b1"]}],
    }


class Server:
    def __init__(self, tmp_path: Path, patch: Callable[[dict[str, Any]], None] | None = None,
                 before_start: Callable[[Storage], None] | None = None, storage_path: Path | None = None,
                 wall_offset: float = WALL_OFFSET) -> None:
        """``patch`` edits the configuration document; ``before_start`` the database before the
        server reads it (rows an older version, or a bug, may have left). ``storage_path``: a
        database file instead of memory, for a second server to start on what the first left
        (``wall_offset`` later: its reactor starts at the same time as the first's)."""
        self.wall_offset = wall_offset
        doc = document(tmp_path)
        if patch:
            patch(doc)
        self.config = parse_config(doc, file=str(tmp_path / "memory.yaml"), base_dir=tmp_path)
        self.reactor = Reactor()
        self.reactor.advance(1000.0)
        self.udp = RecordingSocket()
        self.tts = FakeTTS()
        storage = Storage(storage_path or ":memory:", KeySealer(b"k" * 32))
        fresh = storage.is_empty()
        if before_start is not None and fresh:
            from broadcaster.storage import seed_from_config

            seed_from_config(storage, self.config)
            before_start(storage)
        self.app = BroadcastServer(self.config, self.reactor, storage, core=LocalCore(self.reactor, self.wall),
                                   tts=self.tts, udp=self.udp, wall=self.wall, workers=Inline(),
                                   pools={name: self.reactor.pool for name in POOLS})
        self.app.start()
        self.site = self.reactor.tcpServers[0][1]
        self.advance(0.1)
        self.tokens = self._tokens(storage)
        self.speakers: dict[str, Speaker] = {}

    def _tokens(self, storage: Storage) -> dict[str, str]:
        tokens = {}
        for name, role, zones in (("admin", "admin", []), ("op-a", "operator", ["commune-a"])):
            if not storage.db.query_sync("SELECT 1 FROM users WHERE name = ?", (name,)):  # a second start
                storage.add_user(name, role, zones)
            tokens[name] = storage.new_token(name, now=self.wall())
        return tokens

    def wall(self) -> float:
        return self.reactor.seconds() + self.wall_offset

    def advance(self, seconds: float) -> None:
        """Move time frame by frame, so every tick runs and every call due runs."""
        steps = max(1, round(seconds / FRAME))
        for _ in range(steps):
            self.reactor.advance(seconds / steps)

    def http(self, method: str, path: str, body: Any = None, who: str | None = "admin",
             raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """``headers``: more request headers (a cookie, a CSRF value); the reply's head is kept in
        ``last_head`` (its Set-Cookie, say)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        lines = [f"{method} {path} HTTP/1.0", "Host: memory", f"Content-Length: {len(data)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if who is not None:
            lines.append(f"Authorization: Bearer {self.tokens[who]}")
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        protocol.makeConnection(transport)
        protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        for _ in range(10):
            if transport.disconnecting or b"\r\n\r\n" in transport.value() and self._complete(transport.value()):
                break
            self.reactor.advance(0)
        head, _, payload = transport.value().partition(b"\r\n\r\n")
        self.last_head = head.decode("latin-1")
        status = int(head.split(b" ", 2)[1])
        if b"application/json" in head and payload:
            return status, json.loads(payload)
        return status, payload

    @staticmethod
    def _complete(value: bytes) -> bool:
        head, _, payload = value.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                return len(payload) >= int(line.split(b":")[1])
        return False

    def speaker(self, device: str, channel: str, port: int) -> Speaker:
        speaker = Speaker(self, device, channel, ("127.0.0.1", port))
        self.speakers[device] = speaker
        return speaker


class Speaker:
    """A loudspeaker speaking the real protocol (the reference client's messages) to the core."""

    def __init__(self, server: Server, device: str, channel: str, address: tuple[str, int]) -> None:
        self.server = server
        self.address = address
        self.messages = SubscriptionMessages(device, KEYS[device].encode(), channel, wall=server.wall)
        self.key = KEYS[device].encode()
        self._acked: set[int] = set()

    def subscribe(self) -> None:
        """Subscribe, echo the cookie: after this the core sends audio here."""
        core = self.server.app.core
        core.datagram(self.messages.subscribe(), self.address)
        reply = parse_envelope(self.server.udp.to(self.address)[-1])
        cookie = reply.json().get("cookie")
        self.messages.cookie = cookie
        core.datagram(self.messages.subscribe(), self.address)
        self.server.advance(FRAME)

    def rtp(self) -> list[Any]:
        return [parse_rtp(d) for d in self.server.udp.to(self.address) if d[:4] != b"BCS1"]

    def audio(self) -> np.ndarray:
        """What this loudspeaker heard: its RTP decoded in sequence order (no loss on this path)."""
        decoder = OpusDecoder()
        arrived = self.rtp()
        first = arrived[0].sequence if arrived else 0
        # Sequence numbers start at random and wrap at 65536: ordered from the first one heard.
        packets = sorted(arrived, key=lambda p: (p.sequence - first) & 0xFFFF)
        return np.concatenate([decoder.decode(p.payload) for p in packets]) if packets else np.zeros(0, np.float32)

    def commands(self) -> list[dict[str, Any]]:
        out = []
        for datagram in self.server.udp.to(self.address):
            if datagram[:4] == b"BCS1":
                envelope = parse_envelope(datagram)
                if envelope.type is MessageType.COMMAND and envelope.verify(self.key):
                    out.append(envelope.json())
        return out

    def ack(self, command_seq: int) -> None:
        self.server.app.core.datagram(self.messages.command_ack(command_seq), self.address)

    def ack_all(self) -> None:
        """Acknowledge every command received, as a device does on applying it."""
        for command in self.commands():
            if command["seq"] not in self._acked:
                self._acked.add(command["seq"])
                self.ack(command["seq"])

    def keepalive(self) -> None:
        self.server.app.core.datagram(self.messages.subscribe(), self.address)
