"""Bulletin play plans and their slots (control/bulletin_plan.py), on local wall time."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from broadcaster.control.bulletin_plan import Plan, PlanError

VN = ZoneInfo("Asia/Ho_Chi_Minh")


def t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=VN).timestamp()


def local(ts: float) -> str:
    return datetime.fromtimestamp(ts, VN).strftime("%Y-%m-%d %H:%M")


def test_given_times_play_once_each_in_order() -> None:
    plan = Plan.parse({"at": ["2026-12-03T17:00", "2026-12-02T06:30"]})
    assert [local(s) for s in plan.slots(VN, t("2026-12-01T00:00"), t("2026-12-31T00:00"))] == [
        "2026-12-02 06:30", "2026-12-03 17:00"]


def test_times_of_day_repeat_daily_within_the_validity_only() -> None:
    plan = Plan.parse({"times": ["06:00", "17:30"]})
    slots = plan.slots(VN, t("2026-12-01T00:00"), t("2026-12-31T00:00"), valid_from=t("2026-12-02T12:00"),
                       valid_until=t("2026-12-04T06:00"))
    assert [local(s) for s in slots] == ["2026-12-02 17:30", "2026-12-03 06:00", "2026-12-03 17:30"]


def test_weekly_days_narrow_the_times() -> None:
    plan = Plan.parse({"times": ["06:00"], "weekdays": [0, 3]})  # Monday and Thursday
    slots = plan.slots(VN, t("2026-11-30T00:00"), t("2026-12-14T00:00"))
    assert [local(s) for s in slots] == ["2026-11-30 06:00", "2026-12-03 06:00", "2026-12-07 06:00",
                                         "2026-12-10 06:00"]


def test_monthly_days_narrow_the_times_and_a_31st_skips_short_months() -> None:
    plan = Plan.parse({"times": ["07:00"], "monthdays": [1, 31]})
    slots = plan.slots(VN, t("2027-01-15T00:00"), t("2027-04-02T00:00"))
    assert [local(s) for s in slots] == ["2027-01-31 07:00", "2027-02-01 07:00", "2027-03-01 07:00",
                                         "2027-03-31 07:00", "2027-04-01 07:00"]


def test_asap_plays_at_approval_or_when_it_becomes_valid() -> None:
    plan = Plan.parse({"asap": True})
    approved = t("2026-12-02T08:00")
    assert plan.slots(VN, approved - 60, approved + 3600, asap_at=approved) == [approved]
    later = t("2026-12-02T09:00")
    assert plan.slots(VN, approved - 60, later + 60, valid_from=later, asap_at=approved) == [later]
    assert plan.slots(VN, approved - 60, later + 60, valid_until=approved, asap_at=approved) == []


def test_nothing_past_until_is_a_slot() -> None:
    plan = Plan.parse({"at": ["2026-12-02T06:30", "2026-12-05T06:30"]})
    assert [local(s) for s in plan.slots(VN, t("2026-12-01T00:00"), t("2027-01-01T00:00"),
                                         valid_until=t("2026-12-05T06:30"))] == ["2026-12-02 06:30"]


def test_the_plan_round_trips_through_its_json() -> None:
    plan = Plan.parse({"times": ["06:00", "17:30:15"], "weekdays": [4, 0], "repeat": 3, "gap_s": 30})
    assert Plan.parse(plan.to_json()) == plan
    assert plan.to_json() == {"times": ["06:00", "17:30:15"], "weekdays": [0, 4], "repeat": 3, "gap_s": 30.0}


@pytest.mark.parametrize(("data", "field"), [
    ({}, "plan"),
    ({"times": ["25:00"]}, "plan.times[0]"),
    ({"at": ["2026-12-02T06:30+07:00"]}, "plan.at[0]"),
    ({"at": ["tomorrow"]}, "plan.at[0]"),
    ({"at": ["1999-12-02T06:30"]}, "plan.at[0]"),
    ({"asap": True, "repeat": 11}, "plan.repeat"),
    ({"asap": True, "repeat": 0}, "plan.repeat"),
    ({"asap": True, "gap_s": 7201}, "plan.gap_s"),
    ({"asap": True, "gap_s": float("nan")}, "plan.gap_s"),
    ({"weekdays": [1]}, "plan.weekdays"),
    ({"times": ["06:00"], "weekdays": [7]}, "plan.weekdays"),
    ({"times": ["06:00"], "weekdays": [1], "monthdays": [1]}, "plan.monthdays"),
    ({"asap": "yes"}, "plan.asap"),
    ({"asap": True, "every": 2}, "plan.every"),
    ({"times": ["06:00"] * 49}, "plan.times"),
])
def test_a_bad_plan_names_its_key(data: dict[str, object], field: str) -> None:
    with pytest.raises(PlanError) as raised:
        Plan.parse(data)
    assert raised.value.field == field and str(raised.value).startswith(field)


def test_an_endless_daily_plan_is_expanded_only_as_far_as_asked() -> None:
    plan = Plan.parse({"times": ["06:00"]})
    assert len(plan.slots(VN, t("2026-12-01T00:00"), t("2126-12-01T00:00"))) <= 366 * 2 + 2
