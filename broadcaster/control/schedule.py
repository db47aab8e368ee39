"""The broadcast schedule: which programme plays on which channel, and when.

Pure: no reactor, no database, no wall clock, no audio. Time comes in as Unix
seconds and the zone as a ``ZoneInfo``, so a test is arithmetic and the server
decides how often to ask (``due(now)`` once a tick is enough).

Recurrence is by LOCAL wall time: a daily 06:00 news bulletin stays at 06:00 on
the village clock, so every occurrence is built as a local date plus the
programme's local time of day and converted through ``zoneinfo``; nothing adds
86400 s to a local time. Vietnam has no DST, but the same code is exact for a
zone that has it (then consecutive daily occurrences may be 23 h or 25 h apart).
A local time that does not exist on a spring-forward day (02:30 in Berlin) is
read with the offset before the change (PEP 495, ``fold=0``), so it plays at
03:30; an ambiguous time on a fall-back day plays the first time it is reached.

Every occurrence's length is ``duration_s`` of real (elapsed) time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

RECURRENCES = ("once", "daily", "weekdays", "weekly")
ON_RESTART = ("resume", "restart", "skip")  # what to do with an occurrence already running when the server (re)starts

VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")  # UTC+7 all year; the default zone of a schedule

_DAY = timedelta(days=1)
_WORKING_DAYS = (0, 1, 2, 3, 4)
# Every recurrence repeats with a period of 7 local days, so a week plus a
# week's margin from the later start shows every pattern two recurring
# programmes can form while the UTC offset does not change.
_PATTERN_DAYS = 15
# DST rules are yearly and anchored to a weekday ("last Sunday of March,
# 01:00 UTC"), so the way two weekly patterns meet a transition repeats every
# year. Checking the transitions in the two years after both programmes have
# started therefore covers every later year too.
_DST_HORIZON_DAYS = 2 * 366
# The local-date neighbourhood of a transition in which occurrences can be
# shifted by it, beyond the programmes' own length.
_TRANSITION_REACH_DAYS = 8
# Keys of finished occurrences are kept this long after their end, so a clock
# stepped back (NTP, operator) does not play a programme a second time.
_SEEN_RETENTION_S = 86400.0
MAX_DURATION_S = 86400.0  # a programme is at most a day long: longer is a mistake, and would make the clash
                          # check expand occurrences for centuries
YEARS = (2000, 2100)  # the years a programme may start (and end) in


class ScheduleError(ValueError):
    """An invalid programme. ``field`` names the offending attribute, so the API
    can point the operator at it; the message names it too."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Clash(ScheduleError):
    """The programme would play over another one on a shared channel.

    ``other``, ``channel`` and ``at`` (Unix seconds, the start of the first
    overlap) are kept so the API can show the conflict without parsing the
    message.
    """

    def __init__(self, message: str, *, other: Programme, channel: str, at: float) -> None:
        super().__init__(message)
        self.other = other
        self.channel = channel
        self.at = at


@dataclass(frozen=True)
class Programme:
    """One entry of the schedule, as the operator entered it.

    ``start`` is a naive LOCAL wall time: its date is the first local date an
    occurrence may start on and its time of day is when every occurrence
    starts. For "weekdays" and "weekly" occurrences fall only on matching
    days, so a weekly Mon+Thu programme whose ``start`` is a Tuesday first
    plays on the Thursday. ``until`` is the last local date an occurrence may
    start on (inclusive), so a programme ending that night still plays in full.
    ``priority`` is carried for the mixer and not interpreted here.
    """

    id: str
    title: str
    channels: tuple[str, ...]
    start: datetime
    duration_s: float
    recurrence: str = "once"
    weekdays: tuple[int, ...] = ()
    until: date | None = None
    priority: int = 20
    on_restart: str = "resume"
    relay: str | None = None  # relays this library item instead of playing media (control/relays.py)

    def validate(self) -> None:
        """Raise ScheduleError naming the first bad field.

        Checked here rather than when occurrences are computed because a
        stored programme that cannot be expanded would only fail at air time.
        A recurring programme may not be longer than the shortest gap between
        two of its days; ``Schedule.add`` also checks the rare DST day on which
        that gap is an hour shorter.
        """
        if not isinstance(self.id, str) or not self.id:
            raise ScheduleError("id: must be a non-empty string", "id")
        if not isinstance(self.title, str):
            raise ScheduleError("title: must be a string", "title")
        if (not isinstance(self.channels, tuple) or not self.channels
                or not all(isinstance(c, str) and c for c in self.channels)):
            raise ScheduleError("channels: must be a non-empty tuple of channel ids", "channels")
        if not isinstance(self.start, datetime):
            raise ScheduleError("start: must be a datetime", "start")
        if self.start.tzinfo is not None:
            raise ScheduleError("start: must be a naive local wall time (the schedule carries the zone)", "start")
        if not YEARS[0] <= self.start.year < YEARS[1]:
            raise ScheduleError(f"start: {self.start.year} is outside {YEARS[0]}–{YEARS[1] - 1}", "start")
        if (isinstance(self.duration_s, bool) or not isinstance(self.duration_s, int | float)
                or not math.isfinite(self.duration_s) or not 0 < self.duration_s <= MAX_DURATION_S):
            raise ScheduleError(f"duration_s: must be a number of seconds above 0 and at most {MAX_DURATION_S:g} "
                                f"(a day), not {self.duration_s!r}", "duration_s")
        if self.recurrence not in RECURRENCES:
            raise ScheduleError(f"recurrence: {self.recurrence!r} is not one of {', '.join(RECURRENCES)}",
                                "recurrence")
        if not isinstance(self.weekdays, tuple) or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 6 for d in self.weekdays):
            raise ScheduleError("weekdays: must be a tuple of days 0=Monday..6=Sunday", "weekdays")
        if self.recurrence == "weekly" and not self.weekdays:
            raise ScheduleError("weekdays: a weekly programme needs at least one day (0=Monday..6=Sunday)",
                                "weekdays")
        if self.recurrence != "weekly" and self.weekdays:
            raise ScheduleError(f"weekdays: only a weekly programme takes days, not a {self.recurrence} one",
                                "weekdays")
        if self.until is not None:
            if not isinstance(self.until, date) or isinstance(self.until, datetime):
                raise ScheduleError("until: must be a date (the last local date an occurrence may start on)",
                                    "until")
            if self.until.year >= YEARS[1]:
                raise ScheduleError(f"until: {self.until.year} is after {YEARS[1] - 1}", "until")
            if self.until < self.start.date():
                raise ScheduleError(f"until: {self.until.isoformat()} is before the start "
                                    f"{self.start.date().isoformat()}", "until")
        if self.on_restart not in ON_RESTART:
            raise ScheduleError(f"on_restart: {self.on_restart!r} is not one of {', '.join(ON_RESTART)}",
                                "on_restart")
        gap_days = _shortest_gap_days(self)
        if gap_days is not None and self.duration_s > gap_days * 86400:
            raise ScheduleError(f"duration_s: {self.duration_s:g} s is longer than the {gap_days} day(s) between "
                                f"two {self.recurrence} occurrences", "duration_s")

    def plays_on(self, day: date) -> bool:
        """Whether an occurrence starts on this local date (start and until included)."""
        if day < self.start.date() or (self.until is not None and day > self.until):
            return False
        if self.recurrence == "once":
            return day == self.start.date()
        if self.recurrence == "weekdays":
            return day.weekday() in _WORKING_DAYS
        if self.recurrence == "weekly":
            return day.weekday() in self.weekdays
        return True


@dataclass(frozen=True)
class Occurrence:
    """One airing of a programme, in Unix seconds; ``end`` is exclusive."""

    programme: Programme
    start: float
    end: float

    @property
    def key(self) -> tuple[str, float]:
        """Identity for "already started": stable while the programme is re-added
        unchanged, different once its time moves, so a moved programme plays."""
        return (self.programme.id, self.start)


class Schedule:
    """The programmes of one server, in one time zone.

    ``grace_s`` is how late ``due()`` may first see an occurrence and still
    treat it as starting on time; beyond that it is a catch-up after a restart
    and the programme's ``on_restart`` decides.
    """

    def __init__(self, tz: ZoneInfo = VIETNAM, grace_s: float = 2.0) -> None:
        self.tz = tz
        self.grace_s = grace_s
        self._programmes: dict[str, Programme] = {}
        self._seen: dict[tuple[str, float], float] = {}  # Occurrence.key -> end, for due()
        self._offset_changes_by_year: dict[int, tuple[date, ...]] = {}

    # -- the programme list ------------------------------------------------

    @property
    def programmes(self) -> list[Programme]:
        """In the order first added (a replacement keeps its place)."""
        return list(self._programmes.values())

    def get(self, programme_id: str) -> Programme | None:
        return self._programmes.get(programme_id)

    def remove(self, programme_id: str) -> Programme | None:
        return self._programmes.pop(programme_id, None)

    def add(self, programme: Programme) -> None:
        """Validate and store, or raise without changing anything.

        Raises Clash for the earliest overlap with another programme sharing a
        channel (back-to-back is fine: ``end`` is exclusive). Re-adding an id
        replaces that programme, and the check ignores the old version, so
        moving a programme by ten minutes does not clash with itself.
        """
        programme.validate()
        self._check_self_overlap(programme)
        first: tuple[float, Programme, str] | None = None
        for other in self._programmes.values():
            if other.id == programme.id:
                continue
            channel = next((c for c in programme.channels if c in other.channels), None)
            if channel is None:
                continue
            overlap = self._first_overlap(programme, other)
            if overlap is not None and (first is None or (overlap, other.id) < (first[0], first[1].id)):
                first = (overlap, other, channel)
        if first is not None:
            at, other, channel = first
            raise Clash(f"programme '{programme.title}' ({programme.id}) clashes with '{other.title}' ({other.id}) "
                        f"on channel {channel} at {self._local_text(at)}", other=other, channel=channel, at=at)
        self._programmes[programme.id] = programme

    # -- occurrences -------------------------------------------------------

    def occurrences(self, start: float, end: float) -> list[Occurrence]:
        """Every occurrence overlapping [start, end), sorted by start (then id).

        Cost is linear in the number of local days spanned, so ask for a
        window (a day, a week), not for all time.
        """
        if end <= start:
            return []
        found = [o for o in self._candidates(start, end) if o.start < end and o.end > start]
        return sorted(found, key=_order)

    def due(self, now: float) -> list[Occurrence]:
        """Occurrences running at ``now`` that no earlier call returned.

        Each occurrence is returned once, however often this is called while it
        runs, so the caller can start playback on every result. One first seen
        more than ``grace_s`` after its start was missed, normally because the
        server was down: it is returned for "resume" (the caller plays from
        ``now - start``) and "restart" (from 0), and silently marked seen for
        "skip". Occurrences that started and ended between two calls are not
        returned: a bulletin is not worth playing after its time.
        """
        result = []
        for occurrence in sorted((o for o in self._candidates(now, now) if o.start <= now < o.end), key=_order):
            if occurrence.key in self._seen:
                continue
            self._seen[occurrence.key] = occurrence.end
            late = now - occurrence.start > self.grace_s
            if late and occurrence.programme.on_restart == "skip":
                continue
            result.append(occurrence)
        horizon = now - _SEEN_RETENTION_S
        for key in [k for k, end in self._seen.items() if end < horizon]:
            del self._seen[key]
        return result

    def next_after(self, now: float) -> Occurrence | None:
        """The next occurrence starting strictly after ``now``, across all
        programmes (ties broken by id), or None when nothing is left to play."""
        best: Occurrence | None = None
        today = self._local_date(now)
        for programme in self._programmes.values():
            # Any recurrence has an occurrence within 7 local days; one more on
            # each side absorbs a UTC offset change.
            first = max(programme.start.date(), _shift(today, -1))
            for day in _days(first, _shift(first, 10)):
                if programme.plays_on(day):
                    occurrence = self._occurrence(programme, day)
                    if occurrence.start > now:
                        if best is None or _order(occurrence) < _order(best):
                            best = occurrence
                        break
        return best

    # -- internals ---------------------------------------------------------

    def _occurrence(self, programme: Programme, day: date) -> Occurrence:
        local = datetime.combine(day, programme.start.time()).replace(tzinfo=self.tz)
        start = local.timestamp()
        return Occurrence(programme, start, start + programme.duration_s)

    def _on_dates(self, programme: Programme, first: date, last: date) -> list[Occurrence]:
        """The programme's occurrences starting on local dates first..last, in order."""
        first = max(first, programme.start.date())
        if programme.until is not None:
            last = min(last, programme.until)
        if programme.recurrence == "once":
            day = programme.start.date()
            return [self._occurrence(programme, day)] if first <= day <= last else []
        return [self._occurrence(programme, d) for d in _days(first, last) if programme.plays_on(d)]

    def _candidates(self, start: float, end: float) -> Iterator[Occurrence]:
        """Occurrences that may overlap [start, end]; callers filter exactly.

        An occurrence never starts before its own local date (a time skipped by
        an offset change moves later, not earlier), so none dated after
        ``end``'s date can start by ``end``. Earlier dates are widened by each
        programme's length and a day, because a change can move a start across
        midnight. ``due()`` runs this every tick, so the range is kept tight.
        """
        last = self._local_date(end)
        for programme in self._programmes.values():
            first = _shift(self._local_date(start - programme.duration_s), -1)
            yield from self._on_dates(programme, first, last)

    def _first_overlap(self, a: Programme, b: Programme) -> float | None:
        """Unix time at which the first overlap of a and b begins, or None.

        Exact: see ``_check_windows`` for why the finite windows suffice.
        """
        for first, last in self._check_windows(a, b):
            xs, ys = self._on_dates(a, first, last), self._on_dates(b, first, last)
            i = j = 0
            # Each list is sorted and free of self-overlap, so walking both
            # like a merge meets the earliest overlapping pair first.
            while i < len(xs) and j < len(ys):
                if xs[i].end <= ys[j].start:
                    i += 1
                elif ys[j].end <= xs[i].start:
                    j += 1
                else:
                    return max(xs[i].start, ys[j].start)
        return None

    def _check_self_overlap(self, programme: Programme) -> None:
        """A daily programme of 23.5 h fits every day but a spring-forward one
        (23 h long in a DST zone); catch that before it plays over itself."""
        if programme.recurrence == "once":
            return
        for first, last in self._check_windows(programme, programme):
            occurrences = self._on_dates(programme, first, last)
            for earlier, later in zip(occurrences, occurrences[1:], strict=False):
                if later.start < earlier.end:
                    raise ScheduleError(f"duration_s: occurrences would overlap each other at "
                                        f"{self._local_text(later.start)}", "duration_s")

    def _check_windows(self, a: Programme, b: Programme) -> list[tuple[date, date]]:
        """Local-date ranges of occurrence starts that decide whether a and b clash.

        A "once" programme can only meet the other around its own date. Two
        recurring ones repeat with a period of 7 local days, so while the UTC
        offset is constant every pattern they form shows within
        ``_PATTERN_DAYS`` of the later start (a clash found later means the
        same days one or two weeks earlier clash too). Only a DST change can
        make an otherwise clean week clash (01:30 + 1 h ends at 03:30 on the
        spring-forward day), so the neighbourhood of each change in the next
        ``_DST_HORIZON_DAYS`` is checked as well; for a zone without DST
        (Asia/Ho_Chi_Minh) that list is empty.
        """
        pad = math.ceil(max(a.duration_s, b.duration_s) / 86400) + 1
        onces = [p.start.date() for p in (a, b) if p.recurrence == "once"]
        if onces:
            return _merge([(_shift(d, -pad), _shift(d, pad)) for d in onces])
        first = max(a.start.date(), b.start.date())
        last = _shift(first, _DST_HORIZON_DAYS)
        for until in (a.until, b.until):
            if until is not None:
                last = min(last, until)
        windows = [(_shift(first, -pad), _shift(first, _PATTERN_DAYS + pad))]
        reach = _TRANSITION_REACH_DAYS + pad
        for change in self._offset_changes(_shift(first, -reach), _shift(last, pad)):
            windows.append((_shift(change, -reach), _shift(change, reach)))
        return _merge(windows)

    def _offset_changes(self, first: date, last: date) -> list[date]:
        """Local dates (within a day) on which the zone's UTC offset changes."""
        changes: list[date] = []
        for year in range(first.year, last.year + 1):
            changes.extend(d for d in self._offset_changes_in(year) if first <= d <= last)
        return changes

    def _offset_changes_in(self, year: int) -> tuple[date, ...]:
        cached = self._offset_changes_by_year.get(year)
        if cached is None:
            days = list(_days(date(year, 1, 1), _shift(date(year, 12, 31), 1)))
            offsets = [datetime.combine(d, datetime.min.time(), self.tz).utcoffset() for d in days]
            cached = tuple(d for d, before, after in zip(days, offsets, offsets[1:], strict=False) if before != after)
            self._offset_changes_by_year[year] = cached
        return cached

    def _local_date(self, unix_s: float) -> date:
        return datetime.fromtimestamp(unix_s, self.tz).date()

    def _local_text(self, unix_s: float) -> str:
        return f"{datetime.fromtimestamp(unix_s, self.tz):%Y-%m-%d %H:%M} ({self.tz.key})"


def _order(occurrence: Occurrence) -> tuple[float, str]:
    return (occurrence.start, occurrence.programme.id)


def _shortest_gap_days(programme: Programme) -> int | None:
    """Fewest local days between two consecutive occurrences (None for once)."""
    if programme.recurrence == "once":
        return None
    if programme.recurrence == "weekly":
        days = sorted(set(programme.weekdays))
        return min((b - a) % 7 or 7 for a, b in zip(days, days[1:] + days[:1], strict=True))
    return 1


def _shift(day: date, days: int) -> date:
    """``day + days``, clamped to the calendar so far-future horizons cannot overflow."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        if day == date.max:
            return
        day += _DAY


def _merge(windows: Iterable[tuple[date, date]]) -> list[tuple[date, date]]:
    """Sort date ranges and join those that touch, so no day is examined twice
    and the first overlap found is the earliest."""
    merged: list[tuple[date, date]] = []
    for first, last in sorted(windows):
        if merged and first <= _shift(merged[-1][1], 1):
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged
