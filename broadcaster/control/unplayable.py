"""Studio streams that turned out unplayable, remembered for a few minutes.

A console set to a format we cannot decode (BUTT on Ogg/Speex, a WAV file
labelled audio/mpeg) only finds out after ``200 OK``, when its bytes arrive;
then it reconnects, again and again. Remembering the failure per (peer
address, mount) lets the next attempt be refused with 415 *before* the 200,
naming the format seen, so the console shows an error instead of looping.
A different declared type or client (the operator changed the settings, or
another console behind the same address) is let through to try.

Pure: time is an argument; at most ``max_entries`` are kept (oldest dropped).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

HOLD_S = 300.0
MAX_ENTRIES = 1024


@dataclass(frozen=True)
class Failure:
    seen: str  # what the stream was, e.g. "WAV (audio/wav)"
    signature: tuple[str, str]  # (declared Content-Type, User-Agent) of the attempt that failed
    at: float


class UnplayableSources:
    def __init__(self, hold_s: float = HOLD_S, max_entries: int = MAX_ENTRIES) -> None:
        self.hold_s = hold_s
        self.max_entries = max_entries
        self._failures: OrderedDict[tuple[str, str], Failure] = OrderedDict()

    def remember(self, peer: str, mount: str, signature: tuple[str, str], seen: str, now: float) -> None:
        key = (peer, mount)
        self._failures.pop(key, None)
        self._failures[key] = Failure(seen, signature, now)
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)

    def refused(self, peer: str, mount: str, signature: tuple[str, str], now: float) -> Failure | None:
        """The failure to refuse this attempt with, if the same console failed here recently."""
        key = (peer, mount)
        failure = self._failures.get(key)
        if failure is None:
            return None
        if now - failure.at > self.hold_s:
            del self._failures[key]
            return None
        return failure if failure.signature == signature else None

    def forget(self, peer: str, mount: str) -> None:
        self._failures.pop((peer, mount), None)

    def __len__(self) -> int:
        return len(self._failures)
