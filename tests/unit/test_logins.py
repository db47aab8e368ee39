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


def test_a_success_clears_the_address() -> None:
    guard = LoginGuard(max_failures=2, window_s=60.0)
    guard.failed("a", 0.0)
    guard.succeeded("a")
    guard.failed("a", 1.0)
    assert guard.allowed("a", 1.5)


def test_memory_is_bounded_by_the_number_of_addresses() -> None:
    guard = LoginGuard(max_failures=1, window_s=60.0, max_addresses=100)
    for i in range(1000):
        guard.failed(f"10.0.{i // 256}.{i % 256}", float(i) / 1000)
    assert len(guard._failures) == 100
    assert guard.allowed("10.0.0.0", 1.0), "the oldest addresses were forgotten first"
    assert not guard.allowed("10.0.3.231", 1.0)
