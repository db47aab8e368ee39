"""The schedule's pure core: occurrences by local wall time, exact clash detection,
and due() playing each occurrence once, including after a restart."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from broadcaster.control.schedule import Clash, Occurrence, Programme, Schedule, ScheduleError

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
BERLIN = ZoneInfo("Europe/Berlin")
CHANNEL = "xa-an-binh"


def unix(text: str, tz: ZoneInfo = HCM) -> float:
    """Unix seconds of a local wall time such as "2026-12-01 06:00"."""
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def local(unix_s: float, tz: ZoneInfo = HCM) -> str:
    return f"{datetime.fromtimestamp(unix_s, tz):%Y-%m-%d %H:%M}"


def prog(pid: str, start: str, minutes: float = 30, *, title: str | None = None,
         channels: tuple[str, ...] = (CHANNEL,), **kwargs: Any) -> Programme:
    return Programme(id=pid, title=title or f"Chương trình {pid}", channels=channels,
                     start=datetime.fromisoformat(start), duration_s=minutes * 60, **kwargs)


def starts(schedule: Schedule, first: str, last: str, tz: ZoneInfo = HCM) -> list[str]:
    """Local start times of the occurrences overlapping [first, last)."""
    return [local(o.start, tz) for o in schedule.occurrences(unix(first, tz), unix(last, tz))]


# Instants worked out by hand (days since 1970-01-01 times 86400, plus the UTC time of day), so that the
# expected values below do not rest on zoneinfo reading time the same way the scheduler does.
# 2026-12-01 06:00 +07:00 = 2026-11-30 23:00Z (day 20787).
DEC_1_0600_HCM = 20787 * 86400 + 23 * 3600
# 2026-12-01 23:30 +07:00 = 16:30Z (day 20788).
DEC_1_2330_HCM = 20788 * 86400 + 16 * 3600 + 30 * 60
# Berlin: 2026-03-28 06:00 CET (+01:00) = 05:00Z (day 20540); 2026-03-29 06:00 CEST (+02:00) = 04:00Z (day 20541);
# 2026-03-29 02:30 does not exist there and is played at 03:30 CEST = 01:30Z.
MAR_28_0600_BERLIN = 20540 * 86400 + 5 * 3600
MAR_29_0600_BERLIN = 20541 * 86400 + 4 * 3600
MAR_29_0330_BERLIN = 20541 * 86400 + 1 * 3600 + 30 * 60


def test_the_helpers_agree_with_hand_computed_instants() -> None:
    assert unix("2026-12-01 06:00") == DEC_1_0600_HCM == 1796079600
    assert local(DEC_1_0600_HCM) == "2026-12-01 06:00"
    assert unix("2026-03-28 06:00", BERLIN) == MAR_28_0600_BERLIN
    assert unix("2026-03-29 06:00", BERLIN) == MAR_29_0600_BERLIN
    assert local(MAR_29_0330_BERLIN, BERLIN) == "2026-03-29 03:30"


def schedule_of(*programmes: Programme, tz: ZoneInfo = HCM, grace_s: float = 2.0) -> Schedule:
    schedule = Schedule(tz, grace_s=grace_s)
    for programme in programmes:
        schedule.add(programme)
    return schedule


# -- occurrences ------------------------------------------------------------


def test_once_plays_once() -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 06:00"))
    assert starts(schedule, "2026-11-25 00:00", "2026-12-31 00:00") == ["2026-12-01 06:00"]
    [occurrence] = schedule.occurrences(0, unix("2030-01-01 00:00"))
    assert (occurrence.start, occurrence.end) == (DEC_1_0600_HCM, DEC_1_0600_HCM + 1800)
    assert occurrence.key == ("p-1", DEC_1_0600_HCM)


def test_daily_plays_every_day_at_the_same_local_time() -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 06:00", recurrence="daily"))
    assert starts(schedule, "2026-11-30 00:00", "2026-12-04 00:00") == [
        "2026-12-01 06:00", "2026-12-02 06:00", "2026-12-03 06:00"]


def test_weekdays_skip_saturday_and_sunday() -> None:
    # 2026-12-01 is a Tuesday; the 5th and 6th are the weekend.
    schedule = schedule_of(prog("p-1", "2026-12-01 17:00", recurrence="weekdays"))
    assert starts(schedule, "2026-12-01 00:00", "2026-12-09 00:00") == [
        "2026-12-01 17:00", "2026-12-02 17:00", "2026-12-03 17:00", "2026-12-04 17:00",
        "2026-12-07 17:00", "2026-12-08 17:00"]


def test_weekly_on_monday_and_thursday() -> None:
    # Start on a Tuesday: the first occurrence is the Thursday after.
    schedule = schedule_of(prog("p-1", "2026-12-01 19:00", recurrence="weekly", weekdays=(0, 3)))
    assert starts(schedule, "2026-11-23 00:00", "2026-12-15 00:00") == [
        "2026-12-03 19:00", "2026-12-07 19:00", "2026-12-10 19:00", "2026-12-14 19:00"]


def test_until_is_the_last_start_date_inclusive() -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 23:30", 60, recurrence="daily", until=date(2026, 12, 3)))
    assert starts(schedule, "2026-11-01 00:00", "2027-01-01 00:00") == [
        "2026-12-01 23:30", "2026-12-02 23:30", "2026-12-03 23:30"]
    # The last one still plays in full past midnight.
    assert starts(schedule, "2026-12-04 00:00", "2026-12-05 00:00") == ["2026-12-03 23:30"]


def test_programme_crossing_midnight_shows_on_both_days_and_clashes_after_midnight() -> None:
    late = prog("p-1", "2026-12-01 23:30", 60, title="Nhạc đêm")
    schedule = schedule_of(late)
    assert starts(schedule, "2026-12-01 00:00", "2026-12-02 00:00") == ["2026-12-01 23:30"]
    assert starts(schedule, "2026-12-02 00:00", "2026-12-03 00:00") == ["2026-12-01 23:30"]
    with pytest.raises(Clash) as caught:
        schedule.add(prog("p-2", "2026-12-02 00:15", 30))
    assert "at 2026-12-02 00:15 (Asia/Ho_Chi_Minh)" in str(caught.value)
    schedule.add(prog("p-3", "2026-12-02 00:30", 30))  # starts as the late one ends


def test_occurrences_are_sorted_across_programmes_and_window_is_half_open() -> None:
    schedule = schedule_of(prog("b", "2026-12-01 06:00", recurrence="daily"),
                           prog("a", "2026-12-01 05:00", recurrence="daily"))
    assert [(o.programme.id, local(o.start)) for o in schedule.occurrences(
        unix("2026-12-01 05:00"), unix("2026-12-02 05:00"))] == [
        ("a", "2026-12-01 05:00"), ("b", "2026-12-01 06:00")]
    # Ends exactly at the window start: not overlapping.
    assert starts(schedule, "2026-12-01 05:30", "2026-12-01 06:00") == []
    assert schedule.occurrences(unix("2026-12-01 06:10"), unix("2026-12-01 06:10")) == []


def test_next_after() -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 06:00", recurrence="weekly", weekdays=(0,)),
                           prog("p-2", "2026-12-24 20:00"))
    following = schedule.next_after(unix("2026-12-01 00:00"))
    assert following is not None and local(following.start) == "2026-12-07 06:00"
    # Strictly after: the one starting now is not "next".
    following = schedule.next_after(unix("2026-12-07 06:00"))
    assert following is not None and local(following.start) == "2026-12-14 06:00"
    following = schedule.next_after(unix("2026-12-21 06:00"))
    assert following is not None and following.programme.id == "p-2"
    schedule.remove("p-1")
    assert schedule.next_after(unix("2026-12-25 00:00")) is None
    assert Schedule().next_after(0.0) is None


def test_next_after_finds_a_programme_starting_months_later() -> None:
    schedule = schedule_of(prog("p-1", "2027-06-01 06:00", recurrence="daily"))
    following = schedule.next_after(unix("2026-12-01 00:00"))
    assert following is not None and local(following.start) == "2027-06-01 06:00"


# -- clashes ------------------------------------------------------------------


def test_back_to_back_does_not_clash() -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 06:00", recurrence="daily"),
                           prog("p-2", "2026-12-01 06:30", recurrence="daily"))
    assert [p.id for p in schedule.programmes] == ["p-1", "p-2"]


def test_clash_message_names_title_id_channel_and_local_time() -> None:
    news = prog("p-12", "2026-11-01 06:00", 30, title="Bản tin sáng", recurrence="daily")
    schedule = schedule_of(news)
    with pytest.raises(Clash) as caught:
        schedule.add(prog("p-13", "2026-12-01 05:45", 30, title="Nhạc sáng",
                          channels=("xa-khac", CHANNEL)))
    assert str(caught.value) == ("programme 'Nhạc sáng' (p-13) clashes with 'Bản tin sáng' (p-12) on channel "
                                 "xa-an-binh at 2026-12-01 06:00 (Asia/Ho_Chi_Minh)")
    assert caught.value.other == news and caught.value.channel == CHANNEL
    assert caught.value.at == unix("2026-12-01 06:00")
    assert isinstance(caught.value, ScheduleError) and isinstance(caught.value, ValueError)
    assert schedule.get("p-13") is None


def test_earliest_clash_is_reported_among_several() -> None:
    schedule = schedule_of(prog("late", "2026-12-03 06:00"), prog("early", "2026-12-02 06:00"))
    with pytest.raises(Clash) as caught:
        schedule.add(prog("p-1", "2026-12-01 06:00", recurrence="daily"))
    assert caught.value.other.id == "early"


def test_different_channels_never_clash() -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 06:00", channels=("xa-a",), recurrence="daily"),
                           prog("p-2", "2026-12-01 06:00", channels=("xa-b", "xa-c"), recurrence="daily"))
    assert len(schedule.occurrences(unix("2026-12-01 06:00"), unix("2026-12-01 06:01"))) == 2


def test_weekly_patterns_clash_only_on_a_shared_day() -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 06:00", recurrence="weekly", weekdays=(0, 3)))
    schedule.add(prog("p-2", "2026-12-01 06:00", recurrence="weekly", weekdays=(1, 4)))
    schedule.add(prog("p-3", "2026-12-05 06:00", recurrence="weekdays", until=date(2026, 12, 5)))  # only a Saturday
    with pytest.raises(Clash) as caught:
        schedule.add(prog("p-4", "2026-12-01 06:15", recurrence="weekly", weekdays=(5, 3)))
    assert "p-1" in str(caught.value) and "2026-12-03 06:15" in str(caught.value)


def test_until_ends_a_clash() -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 06:00", recurrence="daily", until=date(2026, 12, 9)))
    schedule.add(prog("p-2", "2026-12-10 06:00", recurrence="daily"))
    with pytest.raises(Clash):
        schedule.add(prog("p-3", "2026-12-09 06:00"))


def test_replacing_a_programme_by_id_does_not_clash_with_itself() -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 06:00", recurrence="daily"), prog("p-2", "2026-12-01 07:00"))
    schedule.add(prog("p-1", "2026-12-01 06:10", recurrence="daily"))
    assert [p.id for p in schedule.programmes] == ["p-1", "p-2"]
    assert starts(schedule, "2026-12-01 00:00", "2026-12-01 12:00") == ["2026-12-01 06:10", "2026-12-01 07:00"]
    # A replacement that clashes leaves the old version in place.
    with pytest.raises(Clash):
        schedule.add(prog("p-1", "2026-12-01 06:50", recurrence="daily"))
    assert schedule.get("p-1") == prog("p-1", "2026-12-01 06:10", recurrence="daily")


def test_remove_and_get() -> None:
    programme = prog("p-1", "2026-12-01 06:00")
    schedule = schedule_of(programme)
    assert schedule.get("p-1") is programme
    assert schedule.remove("p-1") is programme
    assert schedule.remove("p-1") is None and schedule.get("p-1") is None
    schedule.add(prog("p-2", "2026-12-01 06:00"))  # the slot is free again


# -- due() ----------------------------------------------------------------------


def test_due_returns_each_occurrence_exactly_once() -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 06:00", recurrence="daily"))
    assert schedule.due(unix("2026-12-01 05:59")) == []
    [first] = schedule.due(unix("2026-12-01 06:00"))
    assert local(first.start) == "2026-12-01 06:00"
    for t in ("2026-12-01 06:00", "2026-12-01 06:00:01", "2026-12-01 06:29:59", "2026-12-01 06:30"):
        assert schedule.due(unix(t)) == []
    [second] = schedule.due(unix("2026-12-02 06:00:00.5"))
    assert local(second.start) == "2026-12-02 06:00" and second.key != first.key
    assert schedule.due(unix("2026-12-02 06:00:01")) == []


def test_due_across_midnight() -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 23:30", 60, recurrence="daily"))
    [occurrence] = schedule.due(unix("2026-12-01 23:30:01"))
    assert (occurrence.start, occurrence.end) == (DEC_1_2330_HCM, DEC_1_2330_HCM + 3600)
    for t in ("2026-12-01 23:59:59", "2026-12-02 00:00", "2026-12-02 00:29:59"):
        assert schedule.due(unix(t)) == []
    # A restarted server sees the same occurrence after midnight and resumes it.
    restarted = schedule_of(prog("p-1", "2026-12-01 23:30", 60, recurrence="daily"))
    [resumed] = restarted.due(unix("2026-12-02 00:10"))
    assert (resumed.start, resumed.end, resumed.key) == (DEC_1_2330_HCM, DEC_1_2330_HCM + 3600,
                                                         ("p-1", DEC_1_2330_HCM))
    assert unix("2026-12-02 00:10") - resumed.start == 40 * 60  # the resume offset
    [following] = schedule.due(unix("2026-12-02 23:30"))
    assert local(following.start) == "2026-12-02 23:30"


def test_due_returns_simultaneous_occurrences_on_different_channels_in_order() -> None:
    schedule = schedule_of(prog("b", "2026-12-01 06:00", channels=("xa-b",)),
                           prog("a", "2026-12-01 06:00", channels=("xa-a",)))
    assert [o.programme.id for o in schedule.due(unix("2026-12-01 06:00"))] == ["a", "b"]


@pytest.mark.parametrize("on_restart", ["resume", "restart"])
def test_restart_mid_programme_returns_the_running_occurrence(on_restart: str) -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 06:00", on_restart=on_restart))
    now = unix("2026-12-01 06:10")
    [occurrence] = schedule.due(now)
    assert now - occurrence.start == 600  # the caller's resume offset
    assert occurrence.programme.on_restart == on_restart
    assert schedule.due(now + 1) == []


def test_restart_mid_programme_skips_a_skip_programme_until_its_next_occurrence() -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 06:00", recurrence="daily", on_restart="skip"))
    assert schedule.due(unix("2026-12-01 06:10")) == []
    assert schedule.due(unix("2026-12-01 06:11")) == []
    [following] = schedule.due(unix("2026-12-02 06:00:01"))
    assert local(following.start) == "2026-12-02 06:00"


def test_a_skip_programme_seen_within_grace_plays() -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 06:00", on_restart="skip"), grace_s=2.0)
    assert len(schedule.due(unix("2026-12-01 06:00:02"))) == 1
    late = schedule_of(prog("p-1", "2026-12-01 06:00", on_restart="skip"), grace_s=2.0)
    assert late.due(unix("2026-12-01 06:00:02.5")) == []


def test_a_moved_programme_plays_again_but_an_unchanged_replacement_does_not() -> None:
    schedule = schedule_of(prog("p-1", "2026-12-01 06:00", 60))
    assert len(schedule.due(unix("2026-12-01 06:00"))) == 1
    schedule.add(prog("p-1", "2026-12-01 06:00", 60, title="Sửa tên"))
    assert schedule.due(unix("2026-12-01 06:05")) == []
    schedule.add(prog("p-1", "2026-12-01 06:10", 60))
    assert [local(o.start) for o in schedule.due(unix("2026-12-01 06:10"))] == ["2026-12-01 06:10"]


# -- DST ----------------------------------------------------------------------------


def test_daily_stays_at_local_time_across_dst_changes() -> None:
    schedule = schedule_of(prog("p-1", "2026-03-27 06:00", recurrence="daily"), tz=BERLIN)
    spring = schedule.occurrences(unix("2026-03-27 00:00", BERLIN), unix("2026-03-31 00:00", BERLIN))
    assert [local(o.start, BERLIN) for o in spring] == [
        "2026-03-27 06:00", "2026-03-28 06:00", "2026-03-29 06:00", "2026-03-30 06:00"]
    assert [b.start - a.start for a, b in zip(spring, spring[1:], strict=False)] == [86400, 23 * 3600, 86400]
    assert (spring[1].start, spring[2].start) == (MAR_28_0600_BERLIN, MAR_29_0600_BERLIN)
    autumn = schedule.occurrences(unix("2026-10-24 00:00", BERLIN), unix("2026-10-26 12:00", BERLIN))
    assert [local(o.start, BERLIN) for o in autumn] == ["2026-10-24 06:00", "2026-10-25 06:00", "2026-10-26 06:00"]
    assert [b.start - a.start for a, b in zip(autumn, autumn[1:], strict=False)] == [25 * 3600, 86400]
    following = schedule.next_after(unix("2026-03-28 07:00", BERLIN))
    assert following is not None and following.start == unix("2026-03-29 06:00", BERLIN)


def test_a_clash_that_only_happens_on_the_spring_forward_day_is_found() -> None:
    # 01:30 + 1 h ends at 02:30 on every day but 2026-03-29, when it ends at 03:30.
    night = prog("p-1", "2026-03-01 01:30", 60, recurrence="daily")
    morning = prog("p-2", "2026-03-01 03:00", 30, recurrence="daily")
    schedule_of(night, morning, tz=HCM)
    with pytest.raises(Clash) as caught:
        schedule_of(night, morning, tz=BERLIN)
    assert str(caught.value).endswith("at 2026-03-29 03:00 (Europe/Berlin)")
    # Starting after this year's change, next year's is found ...
    with pytest.raises(Clash) as caught:
        schedule_of(prog("p-1", "2026-05-01 01:30", 60, recurrence="daily"),
                    prog("p-2", "2026-05-01 03:00", 30, recurrence="daily"), tz=BERLIN)
    assert str(caught.value).endswith("at 2027-03-28 03:00 (Europe/Berlin)")
    # ... unless one of them ends before it.
    schedule_of(prog("p-1", "2026-05-01 01:30", 60, recurrence="daily", until=date(2027, 3, 27)),
                prog("p-2", "2026-05-01 03:00", 30, recurrence="daily"), tz=BERLIN)


def test_a_local_time_skipped_by_dst_plays_an_hour_later() -> None:
    schedule = schedule_of(prog("p-1", "2026-03-28 02:30", recurrence="daily"), tz=BERLIN)
    assert starts(schedule, "2026-03-28 00:00", "2026-03-31 00:00", BERLIN) == [
        "2026-03-28 02:30", "2026-03-29 03:30", "2026-03-30 02:30"]
    skipped = schedule.occurrences(unix("2026-03-29 00:00", BERLIN), unix("2026-03-29 12:00", BERLIN))
    assert [o.start for o in skipped] == [MAR_29_0330_BERLIN]


def test_a_daily_programme_longer_than_the_spring_forward_day_is_refused() -> None:
    long_day = prog("p-1", "2026-03-01 00:00", 23.5 * 60, recurrence="daily")
    schedule_of(long_day)  # every day in Vietnam is 24 h
    with pytest.raises(ScheduleError) as caught:
        schedule_of(long_day, tz=BERLIN)
    assert caught.value.field == "duration_s" and "2026-03-30 00:00" in str(caught.value)


# -- validation -------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "field"), [
    ({"recurrence": "weekly"}, "weekdays"),
    ({"recurrence": "weekly", "weekdays": (7,)}, "weekdays"),
    ({"recurrence": "daily", "weekdays": (0,)}, "weekdays"),
    ({"duration_s": 0}, "duration_s"),
    ({"duration_s": -5.0}, "duration_s"),
    ({"duration_s": float("nan")}, "duration_s"),
    ({"recurrence": "monthly"}, "recurrence"),
    ({"until": date(2026, 11, 30)}, "until"),
    ({"on_restart": "later"}, "on_restart"),
    ({"channels": ()}, "channels"),
    ({"id": ""}, "id"),
    ({"start": datetime(2026, 12, 1, 6, tzinfo=HCM)}, "start"),
    ({"recurrence": "daily", "duration_s": 86401}, "duration_s"),
    ({"recurrence": "weekly", "weekdays": (0, 1), "duration_s": 2 * 86400}, "duration_s"),
])
def test_validation_names_the_field(changes: dict[str, Any], field: str) -> None:
    fields: dict[str, Any] = {"id": "p-1", "title": "T", "channels": (CHANNEL,),
                              "start": datetime(2026, 12, 1, 6), "duration_s": 1800.0}
    programme = Programme(**(fields | changes))
    with pytest.raises(ScheduleError) as caught:
        programme.validate()
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}:")
    schedule = Schedule()
    with pytest.raises(ScheduleError):
        schedule.add(programme)
    assert schedule.programmes == []


def test_valid_programmes_pass() -> None:
    prog("p-1", "2026-12-01 06:00", recurrence="weekly", weekdays=(0, 6), until=date(2026, 12, 1)).validate()
    prog("p-2", "2026-12-01 06:00", 24 * 60, recurrence="daily").validate()


# -- property: add() agrees with a brute-force search ---------------------------------


def active_minutes(programme: Programme, tz: ZoneInfo, first: date, days: int) -> set[int]:
    """Unix minutes during which the programme plays, computed independently of
    the scheduler (every local date of the window, checked one by one)."""
    minutes: set[int] = set()
    for n in range(days):
        day = first + timedelta(days=n)
        if day < programme.start.date() or (programme.until is not None and day > programme.until):
            continue
        if ((programme.recurrence == "once" and day != programme.start.date())
                or (programme.recurrence == "weekdays" and day.weekday() >= 5)
                or (programme.recurrence == "weekly" and day.weekday() not in programme.weekdays)):
            continue
        start = int(datetime.combine(day, programme.start.time(), tz).timestamp())
        minutes.update(range(start // 60, (start + int(programme.duration_s)) // 60))
    return minutes


def random_programme(rng: random.Random, pid: str, first: date, *, hours: tuple[int, ...],
                     last_until: date | None) -> Programme:
    recurrence = rng.choice(["once", "daily", "weekdays", "weekly"])
    start = datetime.combine(first + timedelta(days=rng.randrange(6)), datetime.min.time()) + timedelta(
        hours=rng.choice(hours), minutes=rng.choice([0, 15, 30, 45]))
    until = None
    if last_until is not None:
        until = min(last_until, start.date() + timedelta(days=rng.randrange(11)))
    elif rng.random() < 0.4:
        until = start.date() + timedelta(days=rng.randrange(11))
    channels = tuple(rng.sample(["a", "b", "c"], rng.randint(1, 2))) if rng.random() < 0.3 else ("a",)
    weekdays = tuple(rng.sample(range(7), rng.randint(1, 3))) if recurrence == "weekly" else ()
    minutes = rng.choice([15, 30, 45, 60, 90, 120, 180, 240])
    return Programme(id=pid, title=pid, channels=channels, start=start, duration_s=minutes * 60,
                     recurrence=recurrence, weekdays=weekdays, until=until)


@pytest.mark.parametrize(("tz", "first", "hours", "bounded", "trials"), [
    # Fixed offset: a clash, if any, repeats within a week of the later start,
    # so 15 days of brute force are the whole truth even for open-ended
    # programmes. Evenings, so that many cross midnight.
    (HCM, date(2026, 11, 28), (20, 21, 22, 23), False, 300),
    # DST: clashes can be specific to the change, so keep every programme
    # inside the brute-forced window and crowd them around the change (02:00
    # to 03:00 on 2026-03-29, 03:00 to 02:00 on 2026-10-25). Clashes that only
    # the spring change causes are rare, hence more trials.
    (BERLIN, date(2026, 3, 22), (1, 2, 3), True, 1000),
    (BERLIN, date(2026, 10, 18), (1, 2, 3), True, 300),
])
def test_add_raises_clash_iff_brute_force_finds_an_overlap(tz: ZoneInfo, first: date, hours: tuple[int, ...],
                                                           bounded: bool, trials: int) -> None:
    rng = random.Random(20261201)
    days = 15
    outcomes = {True: 0, False: 0}
    dst_only = 0  # clashes that a fixed UTC offset would not have
    fixed = ZoneInfo("Etc/GMT-1")
    for trial in range(trials):
        last_until = first + timedelta(days=days - 2) if bounded else None
        a = random_programme(rng, f"a{trial}", first, hours=hours, last_until=last_until)
        b = random_programme(rng, f"b{trial}", first, hours=hours, last_until=last_until)
        shared = set(a.channels) & set(b.channels)
        overlap = active_minutes(a, tz, first, days) & active_minutes(b, tz, first, days) if shared else set()
        for existing, new in ((a, b), (b, a)):
            schedule = schedule_of(existing, tz=tz)
            if overlap:
                with pytest.raises(Clash) as caught:
                    schedule.add(new)
                assert caught.value.at == min(overlap) * 60, (existing, new)
                assert caught.value.channel in shared
            else:
                schedule.add(new)
        outcomes[bool(overlap)] += 1
        if overlap and not active_minutes(a, fixed, first, days) & active_minutes(b, fixed, first, days):
            dst_only += 1
    assert min(outcomes.values()) > trials // 10, outcomes  # both answers are exercised
    if first.month == 3:
        assert dst_only > 0


def test_the_fall_back_hour_can_separate_two_programmes() -> None:
    # 01:30 CEST + 2 h is 02:30 CET on 2026-10-25: over before 03:00 that night only.
    night = prog("p-1", "2026-10-25 01:30", 120)
    morning = prog("p-2", "2026-10-25 03:00", 30)
    schedule_of(night, morning, tz=BERLIN)
    with pytest.raises(Clash):
        schedule_of(night, morning, tz=HCM)
    with pytest.raises(Clash) as caught:  # the next night, an ordinary one
        schedule_of(prog("p-1", "2026-10-26 01:30", 120), prog("p-2", "2026-10-26 03:00", 30), tz=BERLIN)
    assert caught.value.at == unix("2026-10-26 03:00", BERLIN)


def test_occurrences_of_separately_built_schedules_are_equal_values() -> None:
    # What a restart relies on: a schedule rebuilt from the same programme (a new Programme object) yields
    # occurrences equal to, hashing like, and keyed like the ones played before, and a moved one does not.
    before = schedule_of(prog("p-1", "2026-12-01 06:00", recurrence="daily"))
    after = schedule_of(prog("p-1", "2026-12-01 06:00", recurrence="daily"))
    window = (unix("2026-12-01 00:00"), unix("2026-12-03 00:00"))
    first, second = before.occurrences(*window), after.occurrences(*window)
    assert first[0].programme is not second[0].programme
    assert first == second and set(first) == set(second) and len(set(first) | set(second)) == 2
    assert [o.key for o in second] == [("p-1", DEC_1_0600_HCM), ("p-1", DEC_1_0600_HCM + 86400)]
    moved = schedule_of(prog("p-1", "2026-12-01 06:05", recurrence="daily")).occurrences(*window)
    assert not set(moved) & set(first) and moved[0].key == ("p-1", DEC_1_0600_HCM + 300)
    assert Occurrence(first[0].programme, DEC_1_0600_HCM, DEC_1_0600_HCM + 1800) == first[0]


@pytest.mark.parametrize("kwargs, field", [
    ({"minutes": 1e11 / 60}, "duration_s"),            # the poison programme of issue 9: centuries of clash checks
    ({"minutes": 24 * 60 + 1}, "duration_s"),          # longer than a day
    ({"start": "1969-12-31T23:00:00"}, "start"),
    ({"start": "2100-01-01T05:00:00"}, "start"),
    ({"recurrence": "daily", "until": date(2100, 1, 1)}, "until"),
])
def test_programmes_stay_inside_the_schedule_horizon(kwargs: dict[str, Any], field: str) -> None:
    start = kwargs.pop("start", "2026-12-01T05:00:00")
    minutes = kwargs.pop("minutes", 30)
    with pytest.raises(ScheduleError) as info:
        Schedule(HCM).add(prog("p", start, minutes, **kwargs))
    assert info.value.field == field


def test_a_day_long_programme_is_still_accepted() -> None:
    schedule = Schedule(HCM)
    schedule.add(prog("p", "2026-12-01T00:00:00", 24 * 60))
    assert schedule.get("p") is not None
