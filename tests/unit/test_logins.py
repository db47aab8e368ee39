"""Failed logins per address, on a fake clock."""

from broadcaster.control.logins import LoginGuard


def test_an_address_is_held_back_after_its_failures_and_released_by_time() -> None:
    guard = LoginGuard(max_failures=3, window_s=60.0)
    for t in (0.0, 1.0, 2.0):
        assert guard.allowed("10.0.0.1", t)
        guard.failed("10.0.0.1", t)
    assert not guard.allowed("10.0.0.1", 3.0)
    assert guard.retry_after_s("10.0.0.1", 3.0) == 57.0  # when the oldest failure leaves the window
    assert guard.allowed("10.0.0.2", 3.0), "other addresses are not affected"
    assert guard.allowed("10.0.0.1", 60.5), "the first failure has left the window"


def test_a_success_forgives_only_itself() -> None:
    """One good sign-in of one's own does not wipe the guesses made at other users' passwords."""
    guard = LoginGuard(max_failures=3, window_s=60.0)
    guard.failed("a", 0.0)
    guard.failed("a", 1.0)
    assert guard.attempt("a", 2.0)
    guard.forgive("a", 2.0)  # that one was right
    assert guard.attempt("a", 3.0), "two failures still count, one more may be tried"
    assert not guard.attempt("a", 4.0), "the third is the attempt still running: counted until forgiven"


def test_attempts_still_running_count_against_the_limit() -> None:
    guard = LoginGuard(max_failures=3, window_s=60.0)
    started = [guard.attempt("a", 0.0) for _ in range(10)]  # ten parallel checks from one address
    assert started == [True, True, True] + [False] * 7
    guard.forgive("a", 0.0)
    assert guard.attempt("a", 0.5)
    guard.forgive("b", 0.0)  # an address with nothing recorded: nothing to do
    guard.forgive("a", 123.0)  # an attempt already out of the window: nothing to do


def test_memory_is_bounded_by_the_number_of_addresses() -> None:
    guard = LoginGuard(max_failures=1, window_s=60.0, max_addresses=100)
    for i in range(1000):
        guard.failed(f"10.0.{i // 256}.{i % 256}", float(i) / 1000)
    assert len(guard._failures) == 100
    assert guard.allowed("10.0.0.0", 1.0), "the oldest addresses were forgotten first"
    assert not guard.allowed("10.0.3.231", 1.0)
