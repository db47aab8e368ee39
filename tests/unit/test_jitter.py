"""Jitter buffer on simulated arrivals: exact accounting, wraparound, restarts, stops.

Times are binary fractions (frame 1/64 s, nominal delay 1/128 s, polls every
1/256 s) so every sum is exact and the expected slot of every packet can be
stated without rounding slack.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import pytest

from broadcaster.protocols.rtp import RtpPacket
from broadcaster.speaker.jitter import MAX_SEQUENCE_JUMP, STREAM_STOP_S, JitterBuffer, JitterStats

FRAME = 1 / 64
TARGET = 4 * FRAME
D = 1 / 128  # a nominal network delay
POLL = 1 / 256

Arrival = tuple[float, RtpPacket]
Output = list[tuple[float, bytes | None]]


def payload(n: int, tag: int = 0) -> bytes:
    return bytes([tag]) + n.to_bytes(4, "big")


def packet(n: int, *, first: int = 0, ssrc: int = 1, tag: int = 0) -> RtpPacket:
    return RtpPacket(payload_type=111, sequence=(first + n) & 0xFFFF, timestamp=(960 * n) & 0xFFFFFFFF,
                     ssrc=ssrc, payload=payload(n, tag))


def stream(ns: Iterable[int], *, delay: Callable[[int], float] = lambda n: D, start: float = 0.0,
           first: int = 0, ssrc: int = 1, tag: int = 0) -> list[Arrival]:
    """Packet n sent at start + n * FRAME, arriving ``delay(n)`` later."""
    ns = list(ns)
    origin = ns[0] if ns else 0
    return [(start + (n - origin) * FRAME + delay(n), packet(n, first=first, ssrc=ssrc, tag=tag)) for n in ns]


def simulate(buffer: JitterBuffer, arrivals: list[Arrival], until: float | None = None,
             start: float = 0.0) -> Output:
    """Poll every POLL s; packets that arrived by a poll are pushed (in arrival order) before it pops.

    Without ``until`` the simulation ends once every packet has arrived and
    the buffer has played out, before the trailing concealment of a stream
    that stopped.
    """
    pending = sorted(arrivals, key=lambda a: a[0])  # stable: equal times keep list order
    out: Output = []
    i = 0
    step = 0
    while True:
        t = start + step * POLL
        if until is not None and t > until:
            break
        assert t < start + 1000, "simulation did not settle"
        while i < len(pending) and pending[i][0] <= t:
            buffer.push(pending[i][1], pending[i][0])
            i += 1
        out.extend((t, item) for item in buffer.pop_due(t))
        if until is None and i == len(pending) and buffer.depth == 0:
            break
        step += 1
    assert i == len(pending), "simulation ended before every packet arrived"
    return out


def items(out: Output) -> list[bytes | None]:
    return [item for _, item in out]


def new_buffer(**kwargs: int) -> JitterBuffer:
    return JitterBuffer(frame_s=FRAME, target_delay_s=TARGET, **kwargs)


def check_invariants(buffer: JitterBuffer, out: Output) -> None:
    s = buffer.stats
    assert s.played + s.concealed == len(out)
    assert s.played == sum(1 for _, item in out if item is not None)
    assert s.received == s.played + s.dropped + buffer.depth
    assert s.lost >= 0


def test_nothing_before_the_first_packet() -> None:
    buffer = new_buffer()
    assert buffer.pop_due(0.0) == []
    assert buffer.pop_due(100.0) == []
    assert buffer.depth == 0
    assert buffer.stats == JitterStats()


def test_first_packet_anchors_playout() -> None:
    buffer = new_buffer()
    buffer.push(packet(0, first=500), 10.0)
    buffer.push(packet(1, first=500), 10.0 + FRAME)
    assert buffer.depth == 2
    assert buffer.pop_due(10.0 + TARGET - POLL) == []
    assert buffer.pop_due(10.0 + TARGET) == [payload(0)]
    assert buffer.pop_due(10.0 + TARGET + FRAME - POLL) == []
    assert buffer.pop_due(10.0 + TARGET + FRAME) == [payload(1)]
    assert buffer.depth == 0


def test_late_poll_gets_every_due_slot_at_once() -> None:
    buffer = new_buffer()
    for n in range(5):
        buffer.push(packet(n), n * FRAME)
    assert buffer.pop_due(TARGET + 4 * FRAME) == [payload(n) for n in range(5)]


def test_in_order_stream_plays_everything() -> None:
    buffer = new_buffer()
    out = simulate(buffer, stream(range(300)))
    assert items(out) == [payload(n) for n in range(300)]
    assert buffer.stats == JitterStats(received=300, played=300)
    # Each slot is released on the first poll at or after its time, never early.
    for n, (t, _) in enumerate(out):
        assert D + TARGET + n * FRAME <= t < D + TARGET + n * FRAME + POLL


def test_swapped_pairs_within_target_delay_lose_nothing() -> None:
    # Even packets take 3/64 s, odd ones 1/128 s: each pair arrives swapped,
    # the very first pair included (packet 1 anchors, packet 0 comes after).
    buffer = new_buffer()
    out = simulate(buffer, stream(range(200), delay=lambda n: 3 / 64 if n % 2 == 0 else D))
    assert items(out) == [payload(n) for n in range(200)]
    assert buffer.stats == JitterStats(received=200, played=200)


def test_random_jitter_below_target_delay_loses_nothing() -> None:
    rng = random.Random(42)
    delays = {n: rng.randrange(0, 15) / 256 for n in range(500)}  # 0 .. 0.0547 s < TARGET
    buffer = new_buffer()
    out = simulate(buffer, stream(range(500), delay=delays.__getitem__))
    assert items(out) == [payload(n) for n in range(500)]
    assert buffer.stats == JitterStats(received=500, played=500)


def test_dropped_packet_is_exactly_one_concealed_slot() -> None:
    buffer = new_buffer()
    arrivals = [a for a in stream(range(100)) if a[1].sequence != 50]
    out = simulate(buffer, arrivals)
    assert items(out) == [payload(n) if n != 50 else None for n in range(100)]
    assert buffer.stats == JitterStats(received=99, played=99, concealed=1, lost=1)


def test_several_drops_counted_exactly() -> None:
    dropped = {0, 7, 8, 9, 50, 99}  # a lost first packet is no slot: playout anchors on packet 1
    buffer = new_buffer()
    arrivals = [a for a in stream(range(101)) if a[1].sequence not in dropped]
    out = simulate(buffer, arrivals)
    assert items(out) == [payload(n) if n not in dropped else None for n in range(1, 101)]
    assert buffer.stats == JitterStats(received=95, played=95, concealed=5, lost=5)


def test_packet_after_its_slot_is_late_not_lost() -> None:
    buffer = new_buffer()
    late_arrival = 50 * FRAME + 0.25  # its slot is at 50 * FRAME + D + TARGET
    arrivals = stream(range(100), delay=lambda n: 0.25 if n == 50 else D)
    out = simulate(buffer, [a for a in arrivals if a[0] < late_arrival], until=late_arrival - POLL)
    assert items(out)[50] is None
    assert (buffer.stats.lost, buffer.stats.late, buffer.stats.concealed) == (1, 0, 1)
    out += simulate(buffer, [a for a in arrivals if a[0] >= late_arrival], start=late_arrival)
    assert items(out) == [payload(n) if n != 50 else None for n in range(100)]
    assert buffer.stats == JitterStats(received=99, played=99, concealed=1, late=1, lost=0)
    check_invariants(buffer, out)


def test_mixed_losses_and_late_packets() -> None:
    dropped = {10, 30, 31}
    late = {20, 40}
    buffer = new_buffer()
    arrivals = [a for a in stream(range(100), delay=lambda n: 0.5 if n in late else D)
                if a[1].sequence not in dropped]
    out = simulate(buffer, arrivals)
    assert items(out) == [None if n in dropped | late else payload(n) for n in range(100)]
    assert buffer.stats == JitterStats(received=95, played=95, concealed=5, lost=3, late=2)
    s = buffer.stats
    assert s.concealed == s.lost + s.late


def test_packet_before_the_playout_start() -> None:
    buffer = new_buffer()
    buffer.push(packet(5), 0.0)  # anchors: slot 5 at TARGET, slot 3 at TARGET - 2 * FRAME
    buffer.push(packet(3), 0.01)  # its slot is still ahead: playout now starts at 3
    assert buffer.pop_due(TARGET) == [payload(3), None, payload(5)]
    buffer.push(packet(4), TARGET)  # too late: slot 4 passed
    buffer.push(packet(2), TARGET)  # before the start, and its time has passed
    buffer.push(packet(6), TARGET)
    assert buffer.pop_due(TARGET + FRAME) == [payload(6)]
    assert buffer.stats == JitterStats(received=3, played=3, concealed=1, late=2, lost=0)


def test_duplicates_are_counted_and_never_played_twice() -> None:
    buffer = new_buffer()
    arrivals = stream(range(100))
    arrivals += [(t + 1 / 256, p) for t, p in arrivals if 10 <= p.sequence < 20]  # held when copied
    arrivals += [(1.0, packet(5)), (1.0, packet(5))]  # long played
    out = simulate(buffer, arrivals)
    assert items(out) == [payload(n) for n in range(100)]
    assert buffer.stats == JitterStats(received=100, played=100, duplicates=12)
    buffer.push(packet(99), 3.0)  # after the stream stopped: still a duplicate, not a resume
    assert buffer.stats == JitterStats(received=100, played=100, duplicates=13)
    assert buffer.depth == 0


def test_duplicate_of_a_late_packet_is_a_duplicate() -> None:
    buffer = new_buffer()
    arrivals = [a for a in stream(range(100)) if a[1].sequence != 20]
    arrivals += [(1.0, packet(20)), (1.0 + D, packet(20))]
    out = simulate(buffer, arrivals)
    assert items(out) == [payload(n) if n != 20 else None for n in range(100)]
    assert buffer.stats == JitterStats(received=99, played=99, concealed=1, late=1, duplicates=1)


@pytest.mark.parametrize("first", [65500, 65535, 65536 - 150])
def test_sequence_wrap_mid_stream(first: int) -> None:
    buffer = new_buffer()
    out = simulate(buffer, stream(range(300), first=first))
    assert items(out) == [payload(n) for n in range(300)]
    assert buffer.stats == JitterStats(received=300, played=300)


def test_loss_and_reorder_across_the_wrap() -> None:
    first = 65530
    lost = 9  # sequence 3 after the wrap
    buffer = new_buffer()
    arrivals = [a for a in stream(range(20), first=first, delay=lambda n: 3 / 64 if n in (5, 6) else D)
                if a[1].sequence != (first + lost) & 0xFFFF]
    arrivals.append((6 * FRAME + 1 / 256, packet(6, first=first)))  # a duplicate across the wrap
    out = simulate(buffer, arrivals)
    assert items(out) == [payload(n) if n != lost else None for n in range(20)]
    assert buffer.stats == JitterStats(received=19, played=19, concealed=1, lost=1, duplicates=1)


def test_sender_restart_with_a_sequence_jump_re_anchors() -> None:
    buffer = new_buffer()
    old = stream(range(50), first=1000, tag=1)
    restart_at = 50 * FRAME + D
    new = stream(range(50), first=40000, start=50 * FRAME, tag=2)  # same SSRC, random new sequence
    out = simulate(buffer, old + new)
    # Old slots due before the new stream's first packet were played; the
    # rest of the old stream (held then) is discarded as another stream's.
    old_played = [n for n in range(50) if D + TARGET + n * FRAME < restart_at]
    assert items(out) == [payload(n, 1) for n in old_played] + [payload(n, 2) for n in range(50)]
    assert buffer.stats == JitterStats(received=100, played=len(old_played) + 50, dropped=50 - len(old_played),
                                       resets=1)
    first_new = next(t for t, item in out if item == payload(0, 2))
    assert restart_at + TARGET <= first_new < restart_at + TARGET + POLL
    check_invariants(buffer, out)


def test_sender_restart_with_a_new_ssrc_re_anchors_even_if_the_sequence_is_close() -> None:
    buffer = new_buffer()
    old = stream(range(50), first=1000, ssrc=111, tag=1)
    new = stream(range(50), first=1052, ssrc=222, start=50 * FRAME, tag=2)
    out = simulate(buffer, old + new)
    assert buffer.stats.resets == 1
    assert [item for item in items(out) if item is not None and item[0] == 2] == [payload(n, 2) for n in range(50)]
    assert buffer.stats.lost == 0
    check_invariants(buffer, out)


def test_sequence_jump_within_the_limit_is_a_gap_not_a_restart() -> None:
    buffer = new_buffer()
    arrivals = stream(range(10)) + [(10 * FRAME + D, packet(10 + 20))]
    out = simulate(buffer, arrivals)
    assert items(out) == [payload(n) for n in range(10)] + [None] * 20 + [payload(30)]
    assert buffer.stats == JitterStats(received=11, played=11, concealed=20, lost=20)
    assert MAX_SEQUENCE_JUMP == 1000


def test_overflow_drops_the_oldest() -> None:
    buffer = new_buffer(max_packets=10)
    for n in range(30):  # a burst faster than real time
        buffer.push(packet(n), 0.0)
        assert buffer.depth <= 10
    assert buffer.depth == 10
    assert buffer.stats.dropped == 20
    out = buffer.pop_due(TARGET + 29 * FRAME)
    # Dropped packets leave their slots to concealment; they were received, so not lost.
    assert out == [None] * 20 + [payload(n) for n in range(20, 30)]
    assert buffer.stats == JitterStats(received=30, played=10, concealed=20, dropped=20)


def test_overflow_bound_holds_under_a_long_burst() -> None:
    buffer = new_buffer(max_packets=50)
    out: Output = []
    for n in range(900):
        buffer.push(packet(n), n * FRAME / 4)  # four times real time
        assert buffer.depth <= 50
        out.extend((0.0, item) for item in buffer.pop_due(n * FRAME / 4))
    check_invariants(buffer, out)
    assert buffer.stats.dropped > 0


def test_stopped_sender_costs_at_most_a_second_of_concealment() -> None:
    buffer = new_buffer()
    out = simulate(buffer, stream(range(50)), until=30.0)
    # Last packet accepted at 49/64 + D; slot n is due at n/64 + D + TARGET.
    # Concealment continues while a slot is at most STREAM_STOP_S after the
    # last packet: slots 50..109.
    expected_concealed = int((STREAM_STOP_S + 49 * FRAME - TARGET) / FRAME) - 49
    assert expected_concealed == 60
    assert items(out) == [payload(n) for n in range(50)] + [None] * expected_concealed
    assert buffer.stats == JitterStats(received=50, played=50, concealed=60, lost=60)
    assert buffer.pop_due(1000.0) == []


def test_resume_with_continuous_sequence_re_anchors_and_replays() -> None:
    # The sender stopped (e.g. stalled) and resumes where it left off.
    buffer = new_buffer()
    resume = 10.0
    arrivals = stream(range(50)) + stream(range(50, 200), start=resume)
    out = simulate(buffer, arrivals)
    assert items(out) == [payload(n) for n in range(50)] + [None] * 60 + [payload(n) for n in range(50, 200)]
    # Slots 50..109 were concealed before the stop was noticed; their packets
    # came after all and were played, so nothing is lost.
    assert buffer.stats == JitterStats(received=200, played=200, concealed=60, lost=0, reanchors=1)
    first_resumed = next(t for t, item in out if item == payload(50))
    assert resume + D + TARGET <= first_resumed < resume + D + TARGET + POLL


def test_resume_with_a_sequence_gap_re_anchors_without_backlog() -> None:
    buffer = new_buffer()
    resume = 10.0
    arrivals = stream(range(50)) + stream(range(400, 500), start=resume)
    out = simulate(buffer, arrivals)
    assert items(out) == [payload(n) for n in range(50)] + [None] * 60 + [payload(n) for n in range(400, 500)]
    assert buffer.stats == JitterStats(received=150, played=150, concealed=60, lost=60, reanchors=1)
    first_resumed = next(t for t, item in out if item == payload(400))
    assert resume + D + TARGET <= first_resumed < resume + D + TARGET + POLL


def test_short_stall_with_continuous_sequence_does_not_leave_the_stream_late() -> None:
    # A 0.5 s server stall: media time falls behind the playout. Without
    # re-anchoring, every later packet would arrive after its slot.
    buffer = new_buffer()
    arrivals = stream(range(50)) + stream(range(50, 400), start=50 * FRAME + 0.5)
    out = simulate(buffer, arrivals)
    played = items(out)
    gap = played.index(payload(50)) - 50
    assert played == [payload(n) for n in range(50)] + [None] * gap + [payload(n) for n in range(50, 400)]
    assert 0 < gap <= 0.5 / FRAME
    assert buffer.stats == JitterStats(received=400, played=400, concealed=gap, lost=0, late=0, reanchors=1)


def test_late_straggler_after_a_stop_does_not_block_the_resume() -> None:
    # A straggler is not the stream resuming: it must not postpone the stop,
    # or the resumed packets would be scheduled on the old anchor, seconds late.
    buffer = new_buffer()
    arrivals = [a for a in stream(range(50)) if a[1].sequence != 45]
    arrivals += [(5.0, packet(45))] + stream(range(300, 400), start=5.0 + FRAME)
    out = simulate(buffer, arrivals)
    played = items(out)
    assert played == ([payload(n) if n != 45 else None for n in range(50)] + [None] * 60
                      + [payload(n) for n in range(300, 400)])
    assert buffer.stats == JitterStats(received=149, played=149, concealed=61, late=1, lost=60, reanchors=1)
    first_resumed = next(t for t, item in out if item == payload(300))
    assert 5.0 + FRAME + D + TARGET <= first_resumed < 5.0 + FRAME + D + TARGET + POLL


def test_random_network_keeps_invariants() -> None:
    rng = random.Random(20240)
    arrivals: list[Arrival] = []
    sent = 0
    for n in range(3000):
        if rng.random() < 0.05:
            continue  # lost
        delay = rng.choice([D, D, D, rng.random() * 0.2, rng.random() * 0.02])
        arrivals.append((n * FRAME + delay, packet(n, first=60000)))
        sent += 1
        if rng.random() < 0.02:
            arrivals.append((n * FRAME + delay + rng.random() * 0.1, packet(n, first=60000)))
    buffer = new_buffer(max_packets=20)
    out = simulate(buffer, arrivals)
    check_invariants(buffer, out)
    s = buffer.stats
    assert s.received + s.late == sent  # each sent packet is either taken or counted late, once
    assert (s.dropped, s.resets, s.reanchors) == (0, 0, 0)
    assert s.concealed == s.lost + s.late
    played = [int.from_bytes(item[1:], "big") for item in items(out) if item is not None]
    assert played == sorted(set(played))  # in order, never twice
    assert buffer.depth == 0


@pytest.mark.parametrize("kwargs", [
    {"frame_s": 0.0, "target_delay_s": 0.06},
    {"frame_s": 0.02, "target_delay_s": -0.01},
    {"frame_s": 0.02, "target_delay_s": 0.06, "max_packets": 0},
])
def test_rejects_bad_configuration(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        JitterBuffer(**kwargs)
