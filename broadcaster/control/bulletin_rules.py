"""The bulletin's life: which transition may happen from which state, by whom.

Pure: no storage, no clock, no reactor. The desk (control/bulletins.py) asks
``check(...)`` before it writes a transition, and storage writes it in the
same transaction as its audit row, re-checking the state it read, so two
approvers pressing at once approve once.

    draft ─submit→ submitted ─approve→ approved ─(planned)→ scheduled ─→ played
      ↑               │  ↑                 │                     │
      └──── edit ─────┘  └──── edit ───────┴─────────────────────┘
                   reject→ rejected ─submit/edit→ submitted
    any state before played ─withdraw→ withdrawn;  past ``valid_until`` → expired

Editing an approved or scheduled bulletin sends it back to submitted: what
was approved is no longer what would be read. The approver may not be the
one who wrote it or last changed it (the four-eyes rule), unless the zone
allows it (``bulletins.self_approval_zones``: a commune with one officer).
"""

from __future__ import annotations

from dataclasses import dataclass

STATES = ("draft", "submitted", "approved", "rejected", "scheduled", "played", "expired", "withdrawn")
FINAL = frozenset({"played", "expired", "withdrawn"})
ON_AIR_STATES = frozenset({"approved", "scheduled"})  # may play (once valid)
CLASSES = ("thong-thuong", "uu-tien", "khan-cap")
# The national classes (Circular 39/2020) onto the mixer's: the commune chooses when for an ordinary
# bulletin; a priority one goes ahead of the commune's own programme; an emergency one at once.
CLASS_PRIORITY = {"thong-thuong": "scheduled", "uu-tien": "announcement", "khan-cap": "emergency"}
SOURCES = ("local", "province", "central")

# action -> the states it may start from, and the state it leads to (None: stays).
TRANSITIONS: dict[str, tuple[frozenset[str], str | None]] = {
    "submit": (frozenset({"draft", "rejected"}), "submitted"),
    "approve": (frozenset({"submitted"}), "approved"),
    "reject": (frozenset({"submitted"}), "rejected"),
    "schedule": (frozenset({"approved"}), "scheduled"),
    "play": (frozenset({"approved", "scheduled"}), "played"),
    "expire": (frozenset({"draft", "submitted", "approved", "rejected", "scheduled"}), "expired"),
    "withdraw": (frozenset({"draft", "submitted", "approved", "rejected", "scheduled"}), "withdrawn"),
    "edit": (frozenset({"draft", "submitted", "approved", "rejected", "scheduled"}), None),
}


class TransitionError(ValueError):
    """Not allowed from this state (``code`` "state") or by this person ("four_eyes"); the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Transition:
    action: str
    before: str
    after: str


def check(action: str, state: str, *, actor: str = "", author: str = "", editor: str | None = None,
          self_approval: bool = False) -> Transition:
    """The transition ``action`` from ``state``, or TransitionError.

    ``author`` wrote the bulletin and ``editor`` changed it last: neither may approve it unless
    ``self_approval``. Rejecting one's own is allowed (it is withdrawing it, with a reason)."""
    if action not in TRANSITIONS:
        raise TransitionError("state", f"unknown action {action!r}")
    allowed, after = TRANSITIONS[action]
    if state not in allowed:
        if state in FINAL:
            raise TransitionError("state", f"the bulletin is {state}; nothing more can happen to it")
        raise TransitionError("state", f"cannot {action} a bulletin that is {state} "
                                       f"(only one that is {' or '.join(sorted(allowed))})")
    if action == "approve" and not self_approval and actor in {author, editor}:
        who = "wrote" if actor == author else "last changed"
        raise TransitionError("four_eyes", f"{actor!r} {who} this bulletin and may not approve it too: "
                                           "another user with bulletin.approve must (the four-eyes rule)")
    if after is None:  # an edit: an approved bulletin goes back for approval
        after = "submitted" if state in ("approved", "scheduled") else state
    return Transition(action, state, after)
