"""FrameClock is told the time: deadlines are drift-free, late ticks are caught up or counted,
and an instant maps to the frame that covers it."""

from broadcaster.core.clock import FrameClock

START = 1000.0  # a start that is not zero


def started(frame_s: float = 0.02, max_catchup: int = 5) -> FrameClock:
    clock = FrameClock(frame_s, max_catchup=max_catchup)
    clock.start(START)
    return clock


def test_ticks_at_exact_deadlines() -> None:
    frame = 1 / 64  # exact in binary, so the sums carry no rounding
    clock = started(frame)
    ran = []
    for i in range(501):
        ran += clock.due(START + i * frame)
    assert [t for t, _ in ran] == list(range(501))
    assert all(deadline == START + tick * frame for tick, deadline in ran)


def test_nothing_is_due_before_the_next_deadline() -> None:
    clock = started()
    assert [t for t, _ in clock.due(START)] == [0]
    assert clock.due(START + 0.0199) == []
    assert [t for t, _ in clock.due(START + 0.02)] == [1]
    assert clock.next_deadline == START + 0.04


def test_irregular_wakeups_do_not_accumulate_drift() -> None:
    clock = started()
    now, ran = START, []
    # The loop wakes late by a varying 0..15 ms each time; deadlines stay on the grid.
    for i in range(1000):
        now += 0.02 + (i % 4) * 0.005 if i % 2 else 0.02 - 0.004
        ran += clock.due(now)
    assert abs(len(ran) - (int((now - START) / 0.02) + 1)) <= 1
    assert all(abs(deadline - (START + tick * 0.02)) < 1e-9 for tick, deadline in ran)
    assert clock.missed == 0


def test_a_stall_is_caught_up_within_the_limit() -> None:
    clock = started(max_catchup=5)
    assert [t for t, _ in clock.due(START + 0.02 * 4)] == [0, 1, 2, 3, 4]  # one wakeup 80 ms late
    assert clock.missed == 0


def test_a_long_stall_skips_and_counts_ticks() -> None:
    clock = started(max_catchup=5)
    clock.due(START)
    ran = clock.due(START + 1.0)  # 50 frames behind
    assert [t for t, _ in ran] == [46, 47, 48, 49, 50]  # caught up to the present, not replaying the past
    assert clock.missed == 45
    assert [t for t, _ in clock.due(START + 1.02)] == [51]


def test_an_instant_maps_to_the_frame_covering_it() -> None:
    clock = started(0.02)
    assert clock.frame_of(START) == 0
    assert clock.frame_of(START + 0.019) == 0
    assert clock.frame_of(START + 0.02) == 1
    assert clock.frame_of(START + 3600.0) == 180000
    assert clock.frame_of(START - 0.001) == -1


def test_not_started_runs_nothing() -> None:
    clock = FrameClock(0.02)
    assert clock.due(START) == []
