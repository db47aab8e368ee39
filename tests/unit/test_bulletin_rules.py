"""The bulletin's states and the four-eyes rule (control/bulletin_rules.py)."""

from __future__ import annotations

import pytest

from broadcaster.control.bulletin_rules import FINAL, STATES, TRANSITIONS, TransitionError, check


def test_the_way_to_air_is_draft_submitted_approved_scheduled_played() -> None:
    state = "draft"
    for action, after in (("submit", "submitted"), ("approve", "approved"), ("schedule", "scheduled"),
                          ("play", "played")):
        t = check(action, state, actor="chair", author="editor")
        assert (t.before, t.after) == (state, after)
        state = t.after


def test_a_rejected_bulletin_is_submitted_again_after_its_edit() -> None:
    assert check("reject", "submitted", actor="chair", author="editor").after == "rejected"
    assert check("edit", "rejected").after == "rejected"
    assert check("submit", "rejected").after == "submitted"


@pytest.mark.parametrize("state", ["approved", "scheduled"])
def test_editing_an_approved_bulletin_sends_it_back_for_approval(state: str) -> None:
    assert check("edit", state).after == "submitted"


def test_the_author_may_not_approve_their_own_bulletin() -> None:
    with pytest.raises(TransitionError) as raised:
        check("approve", "submitted", actor="editor", author="editor")
    assert raised.value.code == "four_eyes" and "another user" in str(raised.value)


def test_nor_may_whoever_changed_it_last() -> None:
    with pytest.raises(TransitionError) as raised:
        check("approve", "submitted", actor="chair", author="editor", editor="chair")
    assert raised.value.code == "four_eyes" and "last changed" in str(raised.value)


def test_a_zone_that_allows_it_lets_the_author_approve() -> None:
    assert check("approve", "submitted", actor="editor", author="editor", self_approval=True).after == "approved"


@pytest.mark.parametrize("state", sorted(FINAL))
@pytest.mark.parametrize("action", sorted(TRANSITIONS))
def test_nothing_happens_to_a_played_expired_or_withdrawn_bulletin(state: str, action: str) -> None:
    with pytest.raises(TransitionError) as raised:
        check(action, state, actor="chair", author="editor")
    assert raised.value.code == "state" and state in str(raised.value)


def test_only_a_submitted_bulletin_is_approved_and_the_refusal_says_which_states_may() -> None:
    for state in set(STATES) - {"submitted"}:
        with pytest.raises(TransitionError) as raised:
            check("approve", state, actor="chair", author="editor")
        assert raised.value.code == "state"
    with pytest.raises(TransitionError, match="only one that is submitted"):
        check("approve", "draft", actor="chair", author="editor")


def test_every_state_but_the_final_ones_may_be_withdrawn_or_expire() -> None:
    for state in set(STATES) - FINAL:
        assert check("withdraw", state).after == "withdrawn"
        assert check("expire", state).after == "expired"
