"""A flood of junk datagrams at a server's UDP port on loopback, bounded in count and time:
``python -m tests.e2e.junk PORT SECONDS COUNT``. It mixes the three kinds a loudspeaker port
sees from an attacker: random bytes, well-framed datagrams for devices that do not exist, and
datagrams claiming a real device (spk-1) signed with the wrong key, which cost an HMAC each to
refuse. Prints how many it sent."""

from __future__ import annotations

import os
import socket
import sys
import time

from broadcaster.protocols.speaker import MessageType, encode_message


def payloads() -> list[bytes]:
    now = int(time.time() * 1000)
    forged = [encode_message(MessageType.SUBSCRIBE, "spk-1", {"channel": "ch-a", "ts": now, "seq": i},
                             b"not-the-key-of-spk-1-at-all") for i in range(32)]
    unknown = [encode_message(MessageType.SUBSCRIBE, f"nobody-{i}", {"channel": "ch-a"}, b"k" * 16) for i in range(16)]
    return forged + unknown + [os.urandom(48 + i) for i in range(16)]


def main() -> int:
    port, seconds, count = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = ("127.0.0.1", port)
    batch = payloads()
    sent = 0
    deadline = time.monotonic() + seconds
    while sent < count and time.monotonic() < deadline:
        for datagram in batch:
            try:
                sock.sendto(datagram, address)
            except OSError:
                pass
        sent += len(batch)
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
