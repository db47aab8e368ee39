"""Receiver-side jitter buffer for the reference loudspeaker client.

Playout model
-------------
The server sends one packet per frame, each carrying ``frame_s`` of audio,
so the buffer schedules by sequence number alone: one *slot* per sequence
number, and the slot of (extended) sequence ``s`` plays at::

    anchor_time + (s - anchor_seq) * frame_s

where ``anchor_seq`` is the packet that anchored the playout and
``anchor_time`` its arrival time plus ``target_delay_s``. Timing from a
fixed anchor rather than from "previous slot + frame" keeps playout drift
free however irregularly the caller polls, and makes the output a pure
function of the (packet, arrival time) sequence, which is what lets the
tests assert exact counts. RTP timestamps are not used.

``pop_due(now)`` returns one entry per slot that has come due since the
previous call: the payload, or ``None`` for the decoder to conceal. A slot
has *passed* once ``pop_due`` has returned it.

When playout (re-)anchors
-------------------------
* The first packet.
* **Reset** (sender restarted): the SSRC changed, or the sequence number is
  more than ``MAX_SEQUENCE_JUMP`` slots away from the next slot to play.
  Held packets are discarded (counted in ``dropped``) and the history of
  earlier sequence numbers is forgotten, since they belong to another stream.
* **Resume after a stop**: playout pauses (``pop_due`` returns ``[]``) once
  the buffer is empty and the next slot is more than ``STREAM_STOP_S`` after
  the last accepted packet, so a sender that stopped costs at most about a
  second of concealment instead of endless concealment. The next packet
  that is not behind the playout re-anchors it.
* **Sender fell behind**: a packet newer than every packet received so far
  arrives after its slot has passed. That is not a reordered straggler but
  a stream whose media time slipped behind the playout (a server stall that
  kept sequence numbers continuous, or a lasting rise in network delay);
  without re-anchoring every later packet would be late as well. Playout
  restarts at that packet, so slots concealed while waiting for it are
  played after all once their packets come.

The buffer never shrinks its latency: after a re-anchor the delay stays
whatever the new anchor packet's arrival made it. An adaptive delay is left
to a later version.

A packet behind the playout is accepted only in one case: before any slot
of the current anchoring has been returned, a packet earlier than the
anchor whose slot time is still in the future moves the start of playout
back to it, so that the first two packets swapping places loses nothing.

Accounting
----------
All counters are exact; "sequence number" means the extended one.

* ``received`` - distinct packets accepted for playout.
* ``duplicates`` - packets whose sequence number had already been received
  (held, played, dropped, or already counted as late).
* ``late`` - distinct packets discarded because their slot had passed (or
  was skipped by a re-anchor, or came before the playout start).
* ``lost`` - distinct sequence numbers whose slot was concealed and whose
  packet has not arrived. It is incremented when such a slot is concealed
  and decremented if the packet arrives after all (it then counts as
  ``late``, or is played after a "sender fell behind" re-anchor), so at the
  end of a stream it counts exactly the concealed slots whose packet never
  arrived. Slots never played (skipped by a re-anchor) are not ``lost``.
* ``concealed`` - slots returned as ``None``.
* ``played`` - slots returned with a payload.
* ``dropped`` - accepted packets discarded unplayed: the oldest held packet
  when a new one would exceed ``max_packets``, or all held packets at a
  reset. A slot whose packet was dropped is concealed but not ``lost``.
* ``resets`` / ``reanchors`` - how often each of the events above happened
  (the first packet counts as neither).

So ``played + concealed`` is the number of slots returned, ``received ==
played + dropped + depth``, and as long as no re-anchor replays concealed
slots, ``concealed == lost + late_for_concealed_slots + dropped_slots``; for
a plain stream with losses and late packets, ``concealed == lost + late``.
"""

from __future__ import annotations

from dataclasses import dataclass

from broadcaster.protocols.rtp import RtpPacket, seq_delta

__all__ = ["MAX_SEQUENCE_JUMP", "STREAM_STOP_S", "JitterBuffer", "JitterStats"]

STREAM_STOP_S = 1.0
MAX_SEQUENCE_JUMP = 1000
# Slot times are float products; a caller polling exactly at a slot time
# must not see the slot a call later because of one rounding ulp.
_EPSILON_S = 1e-9


@dataclass
class JitterStats:
    received: int = 0  # distinct packets accepted
    duplicates: int = 0
    late: int = 0  # arrived after their playout slot had passed (discarded)
    lost: int = 0  # concealed slots whose packet never arrived (so far)
    concealed: int = 0  # slots returned as None
    played: int = 0  # slots played from a real packet
    dropped: int = 0  # accepted packets discarded unplayed (overflow, reset)
    resets: int = 0  # sender restarts (SSRC change, sequence jump)
    reanchors: int = 0  # resume after a stop, or sender fell behind


class JitterBuffer:
    """Reorders packets by sequence number and releases them on a fixed schedule.

    Pure: time is an argument, so the reference client drives it from its
    audio clock and the tests from plain floats.
    """

    def __init__(self, *, frame_s: float, target_delay_s: float, max_packets: int = 500) -> None:
        if frame_s <= 0:
            raise ValueError(f"frame_s must be positive, got {frame_s}")
        if target_delay_s < 0:
            raise ValueError(f"target_delay_s must not be negative, got {target_delay_s}")
        if max_packets < 1:
            raise ValueError(f"max_packets must be at least 1, got {max_packets}")
        self.frame_s = frame_s
        self.target_delay_s = target_delay_s
        self.max_packets = max_packets
        self.stats = JitterStats()
        self._packets: dict[int, bytes] = {}  # held, keyed by extended sequence
        # History for classifying arrivals, bounded by _prune: every sequence
        # number received (held, played, dropped or late) and every concealed
        # one still counted in stats.lost.
        self._seen: set[int] = set()
        self._missing: set[int] = set()
        self._ssrc: int | None = None
        self._anchor_seq = 0
        self._anchor_time = 0.0
        self._next = 0  # extended sequence of the next slot to return
        self._highest = 0  # highest extended sequence received: the unwrap reference
        self._last_accept = 0.0
        self._started = False  # a slot of the current anchoring was returned

    @property
    def depth(self) -> int:
        """Packets held, waiting for their slot."""
        return len(self._packets)

    def push(self, packet: RtpPacket, now: float) -> None:
        """Take one arrived packet; ``now`` is its arrival time."""
        if self._ssrc is None or packet.ssrc != self._ssrc:
            self._reset(packet, now)
            return
        highest = self._highest
        ext = highest + seq_delta(highest & 0xFFFF, packet.sequence)
        if abs(ext - self._next) > MAX_SEQUENCE_JUMP:
            self._reset(packet, now)
            return
        stats = self.stats
        if ext in self._seen:
            stats.duplicates += 1
            return
        if ext > highest:
            self._highest = ext
        if ext >= self._next:
            if not self._packets and now - self._last_accept > STREAM_STOP_S:
                self._anchor(ext, now)
                stats.reanchors += 1
        elif ext > highest:
            self._anchor(ext, now)
            stats.reanchors += 1
        elif not self._started and ext not in self._missing and self._slot_time(ext) > now:
            self._next = ext
        else:
            stats.late += 1
            self._seen.add(ext)
            if ext in self._missing:
                self._missing.remove(ext)
                stats.lost -= 1
            return
        self._accept(ext, packet.payload, now)

    def pop_due(self, now: float) -> list[bytes | None]:
        """Every slot due by ``now``, in order: its payload, or None to conceal."""
        if self._ssrc is None:
            return []
        out: list[bytes | None] = []
        packets = self._packets
        stats = self.stats
        limit = now + _EPSILON_S
        while True:
            slot = self._next
            due = self._slot_time(slot)
            if due > limit:
                break
            payload = packets.pop(slot, None)
            if payload is None:
                if not packets and due - self._last_accept > STREAM_STOP_S:
                    break  # the stream stopped: pause until a packet re-anchors
                stats.concealed += 1
                if slot not in self._seen and slot not in self._missing:
                    self._missing.add(slot)
                    stats.lost += 1
            else:
                stats.played += 1
            out.append(payload)
            self._next = slot + 1
        if out:
            self._started = True
            self._prune()
        return out

    # --- internals -------------------------------------------------------

    def _slot_time(self, ext: int) -> float:
        return self._anchor_time + (ext - self._anchor_seq) * self.frame_s

    def _anchor(self, ext: int, now: float) -> None:
        self._anchor_seq = ext
        self._anchor_time = now + self.target_delay_s
        self._next = ext
        self._started = False

    def _reset(self, packet: RtpPacket, now: float) -> None:
        if self._ssrc is not None:
            self.stats.resets += 1
            self.stats.dropped += len(self._packets)
        self._packets.clear()
        self._seen.clear()
        self._missing.clear()
        self._ssrc = packet.ssrc
        # Extended numbering restarts at the raw sequence number.
        self._highest = packet.sequence
        self._anchor(packet.sequence, now)
        self._accept(packet.sequence, packet.payload, now)

    def _accept(self, ext: int, payload: bytes, now: float) -> None:
        stats = self.stats
        stats.received += 1
        if ext in self._missing:  # concealed before, played now after a re-anchor
            self._missing.remove(ext)
            stats.lost -= 1
        self._seen.add(ext)
        self._packets[ext] = payload
        self._last_accept = now
        if len(self._packets) > self.max_packets:
            del self._packets[min(self._packets)]
            stats.dropped += 1

    def _prune(self) -> None:
        # Arrivals further than MAX_SEQUENCE_JUMP from the playout reset the
        # buffer, so older history can never be consulted again; the margin
        # covers the playout moving back at a re-anchor. Pruning only past a
        # threshold keeps the cost amortised O(1) per slot.
        if len(self._seen) + len(self._missing) > 5 * MAX_SEQUENCE_JUMP:
            floor = self._next - 2 * MAX_SEQUENCE_JUMP
            self._seen = {ext for ext in self._seen if ext >= floor}
            self._missing = {ext for ext in self._missing if ext >= floor}
