"""RTP unicast to every loudspeaker subscribed to the channel (proven addresses only).

The send list is rebuilt once, at the next frame, however many loudspeakers
(re)subscribed in between; per frame the work is one sendmmsg per 1,024
loudspeakers of one shared buffer (core/fanout.py).
"""

from __future__ import annotations

from typing import Any

from broadcaster import metrics
from broadcaster.core.fanout import Address, LoopFanout, make_fanout
from broadcaster.core.outputs.base import EncodedFrame, Output, OutputContext, SendCounters, register


class RtpUnicast:
    kind = "rtp"

    def __init__(self, context: OutputContext) -> None:
        self.channel = context.spec.id
        self.fanout = LoopFanout(context.sock) if context.fanout == "loop" else make_fanout(context.sock)
        self._pending: list[Address] | None = None
        self._sent = SendCounters(self.channel, "rtp")
        self._subscribers = metrics.subscribers.labels(self.channel, "rtp")

    def set_addresses(self, addresses: list[Address]) -> None:
        """Subscriptions changed; applied at the next send or idle."""
        self._pending = addresses

    def _apply(self) -> None:
        if self._pending is not None:
            self.fanout.set_targets(self._pending)
            self._subscribers.set(len(self._pending))
            self._pending = None

    @property
    def active(self) -> bool:
        self._apply()
        return len(self.fanout) > 0

    def send(self, frame: EncodedFrame) -> None:
        self._apply()
        sent, failed = self.fanout.send(frame.rtp)
        self._sent.count(sent, failed, len(frame.rtp))

    def idle(self) -> None:
        self._apply()

    def describe(self) -> dict[str, Any]:
        return {"loudspeakers": len(self.fanout)}


@register
def build(context: OutputContext) -> Output:
    return RtpUnicast(context)
