"""Failed password checks per address: after a few, an address waits before it
may try again, and its attempts cost nothing (no scrypt) meanwhile.

Pure, with time passed in. A password check is an ``attempt``: counted as a
failure before the check runs (so checks already running count against the
limit: 64 parallel guesses from one address do not all get a scrypt) and
``forgive``n once it succeeded. A success forgives only itself: it never
clears the address's other failures, so someone with one account cannot
interleave their own good sign-ins with guesses at other users' passwords.
A province's commune offices sit behind NAT, so the limit is generous and
short: it stops a flood, not a colleague who mistyped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class LoginGuard:
    max_failures: int = 10   # within window_s, from one address
    window_s: float = 60.0
    max_addresses: int = 10_000  # addresses remembered; the oldest are forgotten first
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def allowed(self, address: str, now: float) -> bool:
        recent = self._recent(address, now)
        return recent is None or len(recent) < self.max_failures

    def failed(self, address: str, now: float) -> None:
        recent = self._recent(address, now)
        if recent is None:
            if len(self._failures) >= self.max_addresses:
                self._failures.pop(next(iter(self._failures)))
            recent = self._failures[address] = deque()
        recent.append(now)

    def attempt(self, address: str, now: float) -> bool:
        """Whether a check may run now; if so it is counted as a failure until ``forgive``n."""
        if not self.allowed(address, now):
            return False
        self.failed(address, now)
        return True

    def forgive(self, address: str, at: float) -> None:
        """The attempt made at ``at`` succeeded: it no longer counts (the others still do)."""
        recent = self._failures.get(address)
        if recent is None:
            return
        try:
            recent.remove(at)
        except ValueError:
            return  # already out of the window
        if not recent:
            del self._failures[address]

    def retry_after_s(self, address: str, now: float) -> float:
        recent = self._recent(address, now)
        return 0.0 if not recent else max(0.0, recent[0] + self.window_s - now)

    def _recent(self, address: str, now: float) -> deque[float] | None:
        recent = self._failures.get(address)
        if recent is None:
            return None
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        if not recent:
            del self._failures[address]
            return None
        return recent
