"""Sending one channel's packet to every subscribed loudspeaker.

The packet is built once per channel per frame; this module only hands the
same bytes to the kernel once per address. The address list is rebuilt when
subscriptions change, never per frame.
"""

from __future__ import annotations

import socket

Address = tuple[str, int]


class UdpFanout:
    """Sends on the server's subscription socket, so replies and audio share
    the 5-tuple that the loudspeaker's NAT binding was opened for."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._targets: tuple[Address, ...] = ()

    def set_targets(self, addresses: list[Address]) -> None:
        self._targets = tuple(addresses)

    def __len__(self) -> int:
        return len(self._targets)

    def send(self, packet: bytes) -> tuple[int, int]:
        """Returns (sent, failed); a full socket buffer drops this packet for that
        address rather than blocking the tick."""
        sendto = self.sock.sendto
        failed = 0
        for address in self._targets:
            try:
                sendto(packet, address)
            except OSError:
                failed += 1
        return len(self._targets) - failed, failed
