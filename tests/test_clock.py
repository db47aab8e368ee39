"""FrameClock on a fake reactor clock: deadlines are drift-free and late ticks are caught up or counted."""

from twisted.internet.task import Clock

from broadcaster.core.clock import FrameClock

Ticks = list[tuple[int, float, float]]


def recording_clock(frame_s: float = 0.02, max_catchup: int = 5) -> tuple[Clock, FrameClock, Ticks]:
    reactor = Clock()
    reactor.advance(1000.0)  # a start that is not zero
    clock = FrameClock(reactor, frame_s, max_catchup=max_catchup)
    ticks: Ticks = []
    clock.add_handler(lambda tick, deadline: ticks.append((tick, deadline, reactor.seconds())))
    return reactor, clock, ticks


def test_ticks_at_exact_deadlines() -> None:
    frame = 1 / 64  # exact in binary, so the fake clock's sums carry no rounding
    reactor, clock, ticks = recording_clock(frame)
    clock.start()
    reactor.advance(0)  # the first tick is due at once
    for _ in range(500):
        reactor.advance(frame)
    assert [t[0] for t in ticks] == list(range(501))
    for tick, deadline, ran_at in ticks:
        assert abs(deadline - (1000.0 + tick * frame)) < 1e-9
        assert abs(ran_at - deadline) < 1e-6


def test_irregular_wakeups_do_not_accumulate_drift() -> None:
    reactor, clock, ticks = recording_clock()
    clock.start()
    # The reactor wakes late by a varying 0..15 ms each time; deadlines stay on the grid.
    for i in range(1000):
        reactor.advance(0.02 + (i % 4) * 0.005 if i % 2 else 0.02 - 0.004)
    elapsed = reactor.seconds() - 1000.0
    assert abs(len(ticks) - (int(elapsed / 0.02) + 1)) <= 1
    assert all(abs(deadline - (1000.0 + tick * 0.02)) < 1e-9 for tick, deadline, _ in ticks)
    assert clock.missed == 0


def test_a_stall_is_caught_up_within_the_limit() -> None:
    reactor, clock, ticks = recording_clock(max_catchup=5)
    clock.start()
    reactor.advance(0.02 * 4)  # one wakeup 80 ms late: ticks 0..4 all run
    assert [t[0] for t in ticks] == [0, 1, 2, 3, 4]
    assert clock.missed == 0


def test_a_long_stall_skips_and_counts_ticks() -> None:
    reactor, clock, ticks = recording_clock(max_catchup=5)
    clock.start()
    ticks.clear()
    reactor.advance(1.0)  # 50 frames behind
    assert len(ticks) == 5
    assert clock.missed == 46
    assert ticks[-1][0] == 50  # caught up to the present, not replaying the past
    reactor.advance(0.02)
    assert ticks[-1][0] == 51


def test_a_failing_handler_does_not_stop_the_clock() -> None:
    reactor, clock, ticks = recording_clock()

    def broken(tick: int, deadline: float) -> None:
        raise RuntimeError("boom")

    clock.add_handler(broken)
    clock.start()
    for _ in range(3):
        reactor.advance(0.02)
    assert len(ticks) == 4
    clock.stop()
    reactor.advance(1.0)
    assert len(ticks) == 4
