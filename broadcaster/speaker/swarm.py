"""The benchmark swarm: thousands of loudspeakers in one process."""

from __future__ import annotations

import time

from broadcaster.protocols.rtp import seq_delta
from broadcaster.protocols.speaker import MAGIC, MessageType, ProtocolError, parse_envelope
from broadcaster.speaker.client import RETRY_S, SubscriptionMessages


class SpeakerSwarm:
    """Many loudspeakers in one process, for load tests.

    Each simulated loudspeaker has its own UDP socket and key and speaks the
    same protocol as SpeakerClient (SubscriptionMessages), but only counts
    RTP sequence numbers instead of decoding: thousands of decoders would
    measure this process, not the server. A plain epoll loop, not the
    reactor, keeps the per-packet cost to one recv and one struct read.
    """

    def __init__(self, devices: list[tuple[str, bytes]], channel: str | list[str], server: tuple[str, int],
                 rcvbuf_bytes: int = 1 << 18) -> None:
        """channel: one for all, or one per device."""
        import select
        import socket

        self.server = server
        self.poller = select.epoll()
        channels = channel if isinstance(channel, list) else [channel] * len(devices)
        self.messages = [SubscriptionMessages(device, key, c) for (device, key), c in zip(devices, channels,
                                                                                            strict=True)]
        self.sockets = []
        for _ in devices:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            self.sockets.append(sock)
        self._index = {sock.fileno(): i for i, sock in enumerate(self.sockets)}
        for sock in self.sockets:
            self.poller.register(sock.fileno(), select.EPOLLIN)
        n = len(devices)
        self.acked = [False] * n
        self.first = [-1] * n          # first RTP sequence seen (extended)
        self.highest = [-1] * n        # highest extended sequence seen
        self.received = [0] * n
        self.late = [0] * n            # arrived after a higher sequence number
        self.marker_after: float | None = None  # when set: note the first marked packet after this time
        self.first_marker: list[float | None] = [None] * n

    def subscribe_all(self, only_unacked: bool = False, batch: int = 100) -> None:
        """Send a SUBSCRIBE from every loudspeaker, in batches with a short receive
        in between, as a fleet of real devices would not all fire in the same millisecond."""
        for i, (sock, messages) in enumerate(zip(self.sockets, self.messages, strict=True)):
            if only_unacked and self.acked[i]:
                continue
            try:
                sock.sendto(messages.subscribe(), self.server)
            except BlockingIOError:
                pass  # retried at the next keepalive
            if i % batch == batch - 1:
                self.run(0.005)

    def subscribe_until_acked(self, timeout_s: float = 30.0) -> int:
        """Retry like a device does (every second) until every loudspeaker has its ACK."""
        deadline = time.monotonic() + timeout_s
        self.subscribe_all()
        while sum(self.acked) < len(self.sockets) and time.monotonic() < deadline:
            self.run(RETRY_S, keepalive_s=3600)
            self.subscribe_all(only_unacked=True)
        return sum(self.acked)

    def run(self, duration_s: float, keepalive_s: float = 2.0) -> None:
        """Receive for duration_s, re-subscribing every keepalive_s."""
        from broadcaster.protocols.rtp import rtp_sequence

        end = time.monotonic() + duration_s
        next_keepalive = time.monotonic() + keepalive_s
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_keepalive:
                self.subscribe_all()
                next_keepalive = now + keepalive_s
            for fd, _ in self.poller.poll(min(0.05, end - now)):
                i = self._index[fd]
                sock = self.sockets[i]
                while True:
                    try:
                        data = sock.recv(2048)
                    except BlockingIOError:
                        break
                    if data[:4] == MAGIC:
                        self._control(i, data)
                        continue
                    self._count(i, rtp_sequence(data))
                    if self.marker_after is not None and data[1] & 0x80 and self.first_marker[i] is None:
                        now = time.monotonic()
                        if now >= self.marker_after:
                            self.first_marker[i] = now

    def _control(self, i: int, data: bytes) -> None:
        messages = self.messages[i]
        try:
            envelope = parse_envelope(data)
            if not envelope.verify(messages.key):
                return
            body = envelope.json()
        except ProtocolError:
            return
        if isinstance(body.get("cookie"), str):
            messages.cookie = body["cookie"]
        if body.get("verified") is False:
            try:
                self.sockets[i].sendto(messages.subscribe(), self.server)
            except BlockingIOError:
                pass
        elif envelope.type is MessageType.ACK and body.get("expires_s"):
            self.acked[i] = True

    def _count(self, i: int, seq: int) -> None:
        highest = self.highest[i]
        if highest < 0:
            self.first[i] = self.highest[i] = seq
            self.received[i] = 1
            return
        extended = highest + seq_delta(highest & 0xFFFF, seq)  # extended around the highest seen
        self.received[i] += 1
        if extended > highest:
            self.highest[i] = extended
        else:
            self.late[i] += 1

    def reset_counts(self) -> None:
        n = len(self.sockets)
        self.first, self.highest, self.received, self.late = [-1] * n, [-1] * n, [0] * n, [0] * n

    def totals(self) -> dict[str, int]:
        expected = sum(h - f + 1 for f, h in zip(self.first, self.highest, strict=True) if h >= 0)
        received = sum(self.received)
        return {"speakers": len(self.sockets), "acked": sum(self.acked),
                "hearing": sum(1 for h in self.highest if h >= 0), "received": received,
                "expected": expected, "lost": max(0, expected - received), "late": sum(self.late)}

    def close(self) -> None:
        for sock, messages in zip(self.sockets, self.messages, strict=True):
            try:
                sock.sendto(messages.unsubscribe(), self.server)
            except OSError:
                pass
            sock.close()
        self.poller.close()
