"""Failed password checks per address: after a few, an address waits before it
may try again, and its attempts cost nothing (no scrypt) meanwhile.

Pure, with time passed in: the studio ingest asks ``allowed`` before it
checks a password and reports how the check went. A province's commune
offices sit behind NAT, so the limit is generous and short: it stops a
flood, not a colleague who mistyped.
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

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

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
