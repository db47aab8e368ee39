"""The channel's RTP to its multicast group (see /channels/{id}.sdp): a fan-out
of one, on a socket of its own that carries the group's TTL."""

from __future__ import annotations

import socket
from typing import Any

from broadcaster.core.fanout import LoopFanout
from broadcaster.core.outputs.base import EncodedFrame, Output, OutputContext, SendCounters, register


def multicast_socket(group: str, ttl: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in group else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
    return sock


class Multicast:
    kind = "multicast"
    active = True  # a group has listeners the server cannot count

    def __init__(self, context: OutputContext) -> None:
        spec = context.spec.multicast
        assert spec is not None
        self.group = (spec.group, spec.port)
        self.sender = LoopFanout(multicast_socket(spec.group, spec.ttl))
        self.sender.set_targets([self.group])
        self._sent = SendCounters(context.spec.id, "rtp")

    def send(self, frame: EncodedFrame) -> None:
        sent, failed = self.sender.send(frame.rtp)
        self._sent.count(sent, failed, len(frame.rtp))

    def idle(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"multicast": f"{self.group[0]}:{self.group[1]}"}


@register
def build(context: OutputContext) -> Output | None:
    return Multicast(context) if context.spec.multicast is not None else None
