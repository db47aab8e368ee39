"""The reference loudspeaker: what a device maker implements, in Python.

It subscribes with its key, repeats the subscription as a keepalive with its
status, receives RTP, reorders it in a jitter buffer, decodes Opus (with
packet-loss concealment for gaps) and writes the audio to a WAV file or
discards it. Tests and benchmarks run this same code.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall

from broadcaster.codecs.opus import OpusCodecError, OpusDecoder
from broadcaster.codecs.pcm import Audio
from broadcaster.protocols.rtp import RtpError, parse_rtp
from broadcaster.protocols.speaker import (
    MAGIC,
    MessageType,
    ProtocolError,
    SpeakerStatus,
    encode_message,
    parse_envelope,
)
from broadcaster.speaker.jitter import JitterBuffer

RETRY_S = 1.0  # subscribe retry interval until the first ACK
COMMAND_WINDOW_S = 30.0


class SubscriptionMessages:
    """Builds a device's signed requests; (ts, seq) always increases."""

    def __init__(self, device: str, key: bytes, channel: str, wall: Callable[[], float] = time.time) -> None:
        self.device = device
        self.key = key
        self.channel = channel
        self.wall = wall
        self._seq = itertools.count()
        self.cookie: str | None = None  # from the server's last ACK; echoing it proves our address

    def subscribe(self, status: SpeakerStatus | None = None) -> bytes:
        body: dict[str, Any] = {"channel": self.channel, "ts": int(self.wall() * 1000), "seq": next(self._seq)}
        if self.cookie:
            body["cookie"] = self.cookie
        if status is not None:
            body["status"] = status.as_dict()
        return encode_message(MessageType.SUBSCRIBE, self.device, body, self.key)

    def command_ack(self, command_seq: int) -> bytes:
        body = {"ts": int(self.wall() * 1000), "seq": next(self._seq), "command": command_seq}
        return encode_message(MessageType.COMMAND_ACK, self.device, body, self.key)

    def unsubscribe(self) -> bytes:
        body = {"channel": self.channel, "ts": int(self.wall() * 1000), "seq": next(self._seq)}
        return encode_message(MessageType.UNSUBSCRIBE, self.device, body, self.key)


class SpeakerClient(DatagramProtocol):
    def __init__(self, messages: SubscriptionMessages, server: tuple[str, int], reactor: Any, *,
                 sink: Callable[[Audio], None] | None = None, target_delay_s: float = 0.12) -> None:
        self.messages = messages
        self.server = server
        self.reactor = reactor
        self.sink = sink
        self.target_delay_s = target_delay_s
        self.started = reactor.seconds()
        self.acks = 0
        self.refusals: list[str] = []
        self.ignored = 0
        self.decode_errors = 0
        self.rtp_info: dict[str, Any] = {}
        self.commands: list[dict[str, Any]] = []
        self._last_command = (-1, -1)
        self.jitter: JitterBuffer | None = None
        self.decoder: OpusDecoder | None = None
        self._keepalive = LoopingCall(self._send_subscribe)
        self._keepalive.clock = reactor
        self._playout = LoopingCall(self._play)
        self._playout.clock = reactor

    def startProtocol(self) -> None:  # noqa: N802
        self._keepalive.start(RETRY_S, now=True)

    def _send_subscribe(self) -> None:
        status = SpeakerStatus(volume=80, signal_dbm=-70, uptime_s=int(self.reactor.seconds() - self.started),
                               amplifier_on=True)
        self._send(self.messages.subscribe(status))

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            try:
                self.transport.write(data, self.server)
            except OSError:
                pass  # retried at the next keepalive

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        if addr != self.server:
            self.ignored += 1  # only the server we subscribed to may send us anything
            return
        if data[:4] == MAGIC:
            self._control(data)
        elif self.jitter is not None:
            try:
                packet = parse_rtp(data)
            except RtpError:
                self.ignored += 1
                return
            self.jitter.push(packet, self.reactor.seconds())

    def _control(self, data: bytes) -> None:
        try:
            envelope = parse_envelope(data)
            if envelope.device_id != self.messages.device or not envelope.verify(self.messages.key):
                raise ProtocolError("bad_mac", "reply not signed with our key")
            body = envelope.json()
        except ProtocolError:
            self.ignored += 1
            return
        if envelope.type is MessageType.COMMAND:
            self._command(body)
            return
        if envelope.type is MessageType.REFUSE:
            self.refusals.append(str(body.get("reason")))
            return
        if envelope.type is not MessageType.ACK:
            return
        if isinstance(body.get("cookie"), str):
            self.messages.cookie = body["cookie"]
        if body.get("verified") is False:
            self._send_subscribe()  # echo the cookie at once: audio starts on the next ACK
            return
        if not body.get("expires_s"):
            return
        self.acks += 1
        if self.jitter is None:
            self.rtp_info = dict(body.get("rtp") or {})
            frame_s = int(self.rtp_info.get("frame_ms", 20)) / 1000.0
            self.jitter = JitterBuffer(frame_s=frame_s, target_delay_s=self.target_delay_s)
            self.decoder = OpusDecoder(int(frame_s * 48000))
            self._playout.start(frame_s / 2, now=False)
            keepalive_s = float(body.get("keepalive_s", 5.0))
            self._keepalive.stop()
            self._keepalive.start(keepalive_s, now=False)

    def _command(self, body: dict[str, Any]) -> None:
        """Apply an alert command (a real device switches its amplifier and volume here) and acknowledge it.
        Only fresh commands: ts within the window and (ts, seq) newer than the last one applied."""
        ts, seq = body.get("ts"), body.get("seq")
        if not isinstance(ts, int) or not isinstance(seq, int):
            return
        if abs(ts / 1000 - self.messages.wall()) > COMMAND_WINDOW_S or (ts, seq) <= self._last_command:
            self.ignored += 1
            return
        self._last_command = (ts, seq)
        self.commands.append({k: body.get(k) for k in ("alert", "amp", "volume")})
        if isinstance(body.get("seq"), int):
            self._send(self.messages.command_ack(body["seq"]))

    def _play(self) -> None:
        assert self.jitter is not None and self.decoder is not None
        for payload in self.jitter.pop_due(self.reactor.seconds()):
            try:
                frame = self.decoder.decode(payload) if payload is not None else self.decoder.conceal()
            except OpusCodecError:
                self.decode_errors += 1
                frame = self.decoder.conceal()
            if self.sink is not None:
                self.sink(frame)

    def stop(self) -> None:
        for loop in (self._keepalive, self._playout):
            if loop.running:
                loop.stop()
        self._send(self.messages.unsubscribe())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = {"acked": self.acks > 0, "acks": self.acks, "refusals": self.refusals,
                                  "commands": self.commands,
                                  "ignored": self.ignored, "decode_errors": self.decode_errors}
        if self.jitter is not None:
            result.update(asdict(self.jitter.stats))
        return result


def parse_server(text: str) -> tuple[str, int]:
    """HOST:PORT to the (address, port) replies will come from (names resolved once)."""
    import socket

    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return socket.gethostbyname(host.strip("[]")), int(port)


def run_speaker(*, device: str, key: bytes, channel: str, server: str, out: Path | None,
                duration_s: float | None, target_delay_s: float = 0.12) -> dict[str, Any]:
    """Run one loudspeaker on the global reactor until duration_s passes or it is interrupted."""
    from twisted.internet import reactor

    wav = soundfile.SoundFile(str(out), "w", samplerate=48000, channels=1, subtype="PCM_16") if out else None

    def sink(frame: Audio) -> None:
        if wav is not None:
            wav.write(np.clip(frame, -1.0, 1.0))

    client = SpeakerClient(SubscriptionMessages(device, key, channel), parse_server(server), reactor,
                           sink=sink, target_delay_s=target_delay_s)
    reactor.listenUDP(0, client)  # type: ignore[attr-defined]

    def finish() -> None:
        client.stop()
        reactor.callLater(0.05, reactor.stop)

    if duration_s is not None:
        reactor.callLater(duration_s, finish)
    try:
        reactor.run()
    finally:
        if wav is not None:
            wav.close()
    return client.stats()
