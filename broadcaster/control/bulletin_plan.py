"""When a bulletin plays: its play plan, validated, and the slots it gives.

Pure: time comes in as Unix seconds and the zone as a ``ZoneInfo``. A plan is
one of, or a mix of:

- ``at``: given local date-times (each once);
- ``times``: local times of day, every day of the validity, narrowed to
  ``weekdays`` (0 = Monday) or ``monthdays`` (1-31) when given;
- ``asap``: once, as soon as it is approved (the desk gives that moment).

Each slot plays the bulletin ``repeat`` times with ``gap_s`` of silence
between (the Laravel platform's 1-10 times, 1-7,200 s). A slot is named by its
planned start, which is what the play record keeps: the same slot is never
played twice, whatever restarts in between. Recurrence is by local wall time,
as the programme schedule's (control/schedule.py), and nothing outside the
bulletin's validity is a slot: a bulletin past its ``until`` never plays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

T = TypeVar("T")
MAX_REPEAT = 10
MAX_GAP_S = 7200.0
MAX_AT = 100
MAX_TIMES = 48
MAX_DAYS_AHEAD = 366 * 2  # a recurring plan is expanded at most this far, whatever the window asked


class PlanError(ValueError):
    """A bad plan; ``field`` names the key (``plan.times``), as the message does."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Plan:
    at: tuple[datetime, ...] = ()
    times: tuple[time, ...] = ()
    weekdays: tuple[int, ...] = ()
    monthdays: tuple[int, ...] = ()
    asap: bool = False
    repeat: int = 1
    gap_s: float = 0.0

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Plan:
        """From the stored or posted JSON; PlanError naming the key."""
        if not isinstance(data, dict):
            raise PlanError("must be an object", "plan")
        unknown = sorted(set(data) - {"at", "times", "weekdays", "monthdays", "asap", "repeat", "gap_s"})
        if unknown:
            raise PlanError("unknown key; expected at, times, weekdays, monthdays, asap, repeat, gap_s",
                            f"plan.{unknown[0]}")
        at = tuple(_local_datetime(v, f"plan.at[{i}]") for i, v in enumerate(_list(data, "at", MAX_AT)))
        times = tuple(_time_of_day(v, f"plan.times[{i}]") for i, v in enumerate(_list(data, "times", MAX_TIMES)))
        weekdays = tuple(_int(v, "plan.weekdays", 0, 6) for v in _list(data, "weekdays", 7))
        monthdays = tuple(_int(v, "plan.monthdays", 1, 31) for v in _list(data, "monthdays", 31))
        asap = data.get("asap", False)
        if not isinstance(asap, bool):
            raise PlanError("must be true or false", "plan.asap")
        repeat = _int(data.get("repeat", 1), "plan.repeat", 1, MAX_REPEAT)
        gap = data.get("gap_s", 0)
        if isinstance(gap, bool) or not isinstance(gap, int | float) or not math.isfinite(gap) \
                or not 0 <= gap <= MAX_GAP_S:
            raise PlanError(f"must be seconds from 0 to {MAX_GAP_S:g}", "plan.gap_s")
        if (weekdays or monthdays) and not times:
            raise PlanError("days narrow 'times'; give the times of day too", "plan.weekdays" if weekdays
                            else "plan.monthdays")
        if not (at or times or asap):
            raise PlanError("give at (date-times), times (times of day) or asap", "plan")
        if weekdays and monthdays:
            raise PlanError("give weekdays or monthdays, not both", "plan.monthdays")
        return cls(tuple(sorted(set(at))), tuple(sorted(set(times))), tuple(sorted(set(weekdays))),
                   tuple(sorted(set(monthdays))), asap, repeat, float(gap))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"repeat": self.repeat, "gap_s": self.gap_s}
        if self.at:
            data["at"] = [a.isoformat(timespec="minutes" if a.second == 0 else "seconds") for a in self.at]
        if self.times:
            data["times"] = [t.isoformat(timespec="minutes" if t.second == 0 else "seconds") for t in self.times]
        if self.weekdays:
            data["weekdays"] = list(self.weekdays)
        if self.monthdays:
            data["monthdays"] = list(self.monthdays)
        if self.asap:
            data["asap"] = True
        return data

    def slots(self, tz: ZoneInfo, start: float, end: float, *, valid_from: float | None = None,
              valid_until: float | None = None, asap_at: float | None = None) -> list[float]:
        """Planned starts in [start, end) and inside the validity [valid_from, valid_until), in order.
        ``asap_at``: when an "asap" bulletin was approved (it plays then, or at valid_from if later)."""
        lo = max(start, valid_from) if valid_from is not None else start
        hi = min(end, valid_until) if valid_until is not None else end
        if hi <= lo:
            return []
        found: set[float] = set()
        if self.asap and asap_at is not None:
            moment = max(asap_at, valid_from) if valid_from is not None else asap_at
            if lo <= moment < hi:
                found.add(moment)
        for local in self.at:
            t = _instant(local, tz)
            if lo <= t < hi:
                found.add(t)
        if self.times:
            first = datetime.fromtimestamp(lo, tz).date() - timedelta(days=1)
            last = min(datetime.fromtimestamp(hi, tz).date(), first + timedelta(days=MAX_DAYS_AHEAD))
            day = first
            while day <= last:
                if self._on(day):
                    for tod in self.times:
                        t = _instant(datetime.combine(day, tod), tz)
                        if lo <= t < hi:
                            found.add(t)
                day += timedelta(days=1)
        return sorted(found)

    def _on(self, day: date) -> bool:
        if self.weekdays:
            return day.weekday() in self.weekdays
        if self.monthdays:
            return day.day in self.monthdays
        return True

    @property
    def recurring(self) -> bool:
        return bool(self.times)


def _instant(local: datetime, tz: ZoneInfo) -> float:
    return local.replace(tzinfo=tz).timestamp()


def _list(data: dict[str, Any], name: str, most: int) -> list[Any]:
    value = data.get(name, [])
    if not isinstance(value, list):
        raise PlanError("must be a list", f"plan.{name}")
    if len(value) > most:
        raise PlanError(f"at most {most} entries", f"plan.{name}")
    return value


def _int(value: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PlanError(f"must be an integer from {lo} to {hi}, not {value!r}", field)
    return value


def _iso(value: Any, parse: Callable[[str], T]) -> T | None:
    """``value`` read by ``parse`` (datetime or time ``fromisoformat``), or None if it is not that."""
    try:
        return parse(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _local_datetime(value: Any, field: str) -> datetime:
    parsed = _iso(value, datetime.fromisoformat)
    if parsed is None:
        raise PlanError(f"must be a local date and time such as 2026-12-02T06:30, not {value!r}", field)
    if parsed.tzinfo is not None:
        raise PlanError("a local date and time, without an offset (the server's schedule.timezone)", field)
    if not 2000 <= parsed.year < 2100:
        raise PlanError(f"{parsed.year} is outside 2000-2099", field)
    return parsed


def _time_of_day(value: Any, field: str) -> time:
    parsed = _iso(value, time.fromisoformat)
    if parsed is None or parsed.tzinfo is not None:
        raise PlanError(f"must be a local time of day such as 06:30, not {value!r}", field)
    return parsed.replace(microsecond=0)
