"""Who may receive audio: the loudspeaker subscription controller.

Pure policy with time passed in. An address receives RTP only after a
datagram from it carried a valid MAC under a registered device's key, a
timestamp inside the replay window, and a (timestamp, sequence) pair newer
than any accepted before from that device. Everything else is dropped without
a reply (no reflection, no amplification) and counted by reason.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from broadcaster import metrics
from broadcaster.config import SpeakerPolicy
from broadcaster.core.commands import Device
from broadcaster.protocols.speaker import (
    MessageType,
    ProtocolError,
    Request,
    SpeakerStatus,
    encode_message,
    parse_envelope,
    parse_request,
)

Address = tuple[str, int]
COOKIE_PERIOD_S = 300  # a cookie is good for this period and the next


@dataclass
class Subscription:
    device_id: str
    channel: str
    address: Address
    last_seen: float
    status: SpeakerStatus


class SubscriptionTable:
    """Registered devices, live subscriptions and the replay state.

    ``on_change(channel_id)`` fires whenever a channel's set of addresses
    changes, so the fan-out can rebuild its send list outside the hot path.
    ``channel_info(channel_id)`` returns the stream description for the ACK
    (SSRC, payload type, frame size), or None for a channel that does not exist.
    """

    def __init__(self, devices: Iterable[Device], policy: SpeakerPolicy, *,
                 channel_info: Callable[[str], dict[str, Any] | None],
                 on_change: Callable[[str], None] = lambda channel: None,
                 on_session: Callable[[str, Subscription, float], None] = lambda event, s, now: None) -> None:
        self.devices = {d.id: d for d in devices}
        self.policy = policy
        self.channel_info = channel_info
        self.on_change = on_change
        self.on_session = on_session  # ("start" | "end", subscription, now): for the availability record
        self.on_command_ack: Callable[[str, int], None] = lambda device, seq: None
        self.subscriptions: dict[str, Subscription] = {}
        self.verified: dict[Address, bytes] = {}  # the address of each subscription -> its device id, as sent
        self._rejected: dict[str, Any] = {}  # reason -> its counter, looked up once: a flood pays per datagram
        self.refused = 0  # datagrams refused after examination, ever (the core tells a flood by its rate)
        self._by_channel: dict[str, dict[str, Address]] = {}
        self._last: dict[str, tuple[int, int]] = {}  # device -> newest (ts_ms, seq) accepted
        self._cookie_secret = secrets.token_bytes(32)
        self.touched: set[str] = set()  # devices with a keepalive since the core last reported them

    # --- datagrams -------------------------------------------------------

    def handle(self, data: bytes, address: Address, now: float) -> bytes | None:
        try:
            envelope = parse_envelope(data)
        except ProtocolError as exc:
            return self._reject(exc.reason)
        device = self.devices.get(envelope.device_id)
        if device is None:
            return self._reject("unknown_device")
        if not envelope.verify(device.key):
            return self._reject("bad_mac")
        try:
            request = parse_request(envelope)
        except ProtocolError as exc:
            return self._reject(exc.reason)
        if abs(request.ts_ms / 1000.0 - now) > self.policy.replay_window_s:
            return self._reject("stale_timestamp")
        if (request.ts_ms, request.seq) <= self._last.get(device.id, (-1, -1)):
            return self._reject("replay")
        self._last[device.id] = (request.ts_ms, request.seq)
        if request.type is MessageType.COMMAND_ACK:
            subscription = self.subscriptions.get(device.id)
            if subscription is not None and subscription.address == address and request.command is not None:
                self.on_command_ack(device.id, request.command)
            return None
        if request.type is MessageType.UNSUBSCRIBE:
            self._end(device.id, now)
            return self._reply(device, MessageType.ACK, request, now, {"expires_s": 0})
        if request.channel != device.channel:
            metrics.datagrams_rejected_total.labels("channel_not_allowed").inc()
            return self._reply(device, MessageType.REFUSE, request, now,
                               {"reason": "channel_not_allowed", "channel": request.channel[:64]})
        info = self.channel_info(request.channel)
        if info is None:
            metrics.datagrams_rejected_total.labels("unknown_channel").inc()
            return self._reply(device, MessageType.REFUSE, request, now,
                               {"reason": "unknown_channel", "channel": request.channel[:64]})
        cookie = self.cookie(device.id, address, now)
        if not self._cookie_valid(request.cookie, device.id, address, now):
            # Return routability: audio goes to an address only once it has echoed a
            # cookie sent to it. This reply is at most 48 bytes larger than the request,
            # goes only to a MAC-valid request, once per (ts, seq): a spoofed source
            # gains no amplification worth having (tests/unit/test_fuzz.py holds the bound).
            metrics.cookie_challenges_total.inc()
            return self._reply(device, MessageType.ACK, request, now,
                               {"cookie": cookie, "verified": False})
        self._subscribe(device, request, address, now)
        return self._reply(device, MessageType.ACK, request, now, {
            "verified": True,
            "cookie": cookie,
            "channel": request.channel,
            "keepalive_s": self.policy.keepalive_s,
            "volume": device.volume,
            "expires_s": self.policy.expiry_s,
            "rtp": info,
        })

    def cookie(self, device_id: str, address: Address, now: float) -> str:
        return self._cookie(device_id, address, int(now // COOKIE_PERIOD_S))

    def _cookie(self, device_id: str, address: Address, period: int) -> str:
        text = f"{device_id}|{address[0]}|{address[1]}|{period}".encode()
        return hmac.new(self._cookie_secret, text, hashlib.sha256).hexdigest()[:32]

    def _cookie_valid(self, cookie: str | None, device_id: str, address: Address, now: float) -> bool:
        if not cookie:
            return False
        period = int(now // COOKIE_PERIOD_S)
        return any(hmac.compare_digest(cookie, self._cookie(device_id, address, p)) for p in (period, period - 1))

    def _reject(self, reason: str) -> bytes | None:
        self.rejected(reason)
        return None

    def rejected(self, reason: str, count: int = 1) -> None:
        if reason != "shed":
            self.refused += count
        counter = self._rejected.get(reason)
        if counter is None:
            counter = self._rejected[reason] = metrics.datagrams_rejected_total.labels(reason)
        counter.inc(count)

    def _reply(self, device: Device, kind: MessageType, request: Request,
               now: float, body: dict[str, Any]) -> bytes:
        return encode_message(kind, device.id,
                              {"ts": int(now * 1000), "seq": request.seq, **body}, device.key)

    # --- subscriptions ---------------------------------------------------

    def _subscribe(self, device: Device, request: Request, address: Address, now: float) -> None:
        current = self.subscriptions.get(device.id)
        if current is not None and current.address == address and current.channel == request.channel:
            current.last_seen = now
            current.status = request.status
            self.touched.add(device.id)
            return
        if current is not None:
            self._end(device.id, now)
        subscription = self.subscriptions[device.id] = Subscription(
            device_id=device.id, channel=request.channel, address=address,
            last_seen=now, status=request.status)
        self.on_session("start", subscription, now)
        self._by_channel.setdefault(request.channel, {})[device.id] = address
        self.verified[address] = device.id.encode("ascii")
        metrics.subscriptions_total.labels(request.channel).inc()
        metrics.loudspeakers_online.set(len(self.subscriptions))
        self.on_change(request.channel)

    def _end(self, device_id: str, now: float, expired: bool = False) -> None:
        subscription = self.subscriptions.pop(device_id, None)
        if subscription is None:
            return
        self.on_session("end", subscription, now)
        self._by_channel.get(subscription.channel, {}).pop(device_id, None)
        if self.verified.get(subscription.address) == device_id.encode("ascii"):
            del self.verified[subscription.address]
        if expired:
            metrics.subscriptions_expired_total.labels(subscription.channel).inc()
        metrics.loudspeakers_online.set(len(self.subscriptions))
        self.on_change(subscription.channel)

    def expire(self, now: float) -> list[Subscription]:
        """End the subscriptions whose keepalives stopped; call about once a second."""
        deadline = now - self.policy.expiry_s
        gone = [s for s in self.subscriptions.values() if s.last_seen < deadline]
        for subscription in gone:
            # Online until the first keepalive that did not come.
            self._end(subscription.device_id, subscription.last_seen + self.policy.keepalive_s, expired=True)
        return gone

    def end_all(self, now: float) -> None:
        """The server is stopping: close every session record."""
        for device_id in list(self.subscriptions):
            self._end(device_id, now)

    def put_device(self, device: Device, now: float) -> None:
        """One device registered or changed: only its own subscription is touched."""
        old = self.devices.get(device.id)
        subscription = self.subscriptions.get(device.id)
        if subscription is not None and (old is None or old.key != device.key
                                         or device.channel != subscription.channel):
            self._end(device.id, now)
        self.devices[device.id] = device

    def drop_device(self, device_id: str, now: float) -> None:
        self._end(device_id, now)
        self.devices.pop(device_id, None)
        self._last.pop(device_id, None)

    def set_devices(self, devices: Iterable[Device], now: float) -> None:
        """Replace the registry (the API changed it). A device that was removed, moved
        to another channel or given a new key loses its subscription at once: audio
        must follow the current registration, and a rotated key must be proven anew."""
        new = {d.id: d for d in devices}
        for device_id, subscription in list(self.subscriptions.items()):
            old, current = self.devices.get(device_id), new.get(device_id)
            if current is None or old is None or current.key != old.key or current.channel != subscription.channel:
                self._end(device_id, now)
        self.devices = new

    def addresses(self, channel: str) -> list[Address]:
        return list(self._by_channel.get(channel, {}).values())
