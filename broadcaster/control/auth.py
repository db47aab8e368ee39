"""Who may do what, where: the one scope check every API route goes through.

Roles: ``admin`` may do everything; ``operator`` may read and change what
lies inside its zones (loudspeakers, media, broadcasts) but nothing
province-wide; ``viewer`` may only read inside its zones. A zone scope covers
the whole subtree below it, so a commune operator sees its hamlets.

Permissions name the bulletin work apart from the roles, because the people
differ: a commune's editor writes bulletins and its chairman approves them,
and neither runs the loudspeakers. ``bulletin.create`` (write, edit, submit,
withdraw) and ``bulletin.approve`` (approve, reject) come with the operator
role and may be granted to a viewer (``broadcaster user add --permission``);
they hold within the user's zones like everything else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

ROLES = ("admin", "operator", "viewer")
PERMISSIONS = ("bulletin.create", "bulletin.approve")
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(PERMISSIONS), "operator": frozenset(PERMISSIONS), "viewer": frozenset()}


class Action(Enum):
    READ = "read"
    WRITE = "write"      # inside the caller's zones
    PROVINCE = "province"  # structure: zones, channels, users (admin only)
    BULLETIN_CREATE = "bulletin.create"    # write, edit, submit and withdraw bulletins in the caller's zones
    BULLETIN_APPROVE = "bulletin.approve"  # approve or reject them


class Forbidden(Exception):
    """The caller is authenticated but not allowed; the message says why."""


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    zones: tuple[str, ...] = ()
    remote: str | None = None
    token: str | None = None  # the public id of the API token it came with
    token_expires_at: float | None = None
    granted: frozenset[str] = frozenset()  # permissions beyond the role's (PERMISSIONS)
    session: bool = False  # signed in to the console (a cookie), not an API token
    must_change_password: bool = False  # the console asks for a new password before anything else

    @classmethod
    def from_row(cls, row: dict[str, Any], remote: str | None = None) -> Principal:
        granted = row.get("permissions") or ()
        if isinstance(granted, str):
            granted = json.loads(granted)
        return cls(name=row["name"], role=row["role"], zones=tuple(row.get("zones", ())), remote=remote,
                   token=row.get("token_id"), token_expires_at=row.get("token_expires_at"),
                   granted=frozenset(p for p in granted if p in PERMISSIONS), session=bool(row.get("session")),
                   must_change_password=bool(row.get("must_change_password")))

    @property
    def permissions(self) -> frozenset[str]:
        return ROLE_PERMISSIONS.get(self.role, frozenset()) | self.granted


@dataclass
class ZoneTree:
    parents: dict[str, str | None] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, Any]]) -> ZoneTree:
        tree = cls()
        for row in rows:
            tree.parents[row["id"]] = row["parent"]
            tree.kinds[row["id"]] = row["kind"]
            tree.names[row["id"]] = row["name"]
        return tree

    def __contains__(self, zone: object) -> bool:
        return zone in self.parents

    def ancestors(self, zone: str) -> list[str]:
        """The zone itself, then its parent, up to the root."""
        chain: list[str] = []
        current: str | None = zone
        while current is not None and current not in chain:
            chain.append(current)
            current = self.parents.get(current)
        return chain

    def within(self, zone: str, scopes: Iterable[str]) -> bool:
        scope_set = set(scopes)
        return any(z in scope_set for z in self.ancestors(zone))

    def subtree(self, zone: str) -> set[str]:
        return {z for z in self.parents if zone in self.ancestors(z)}

    def commune_of(self, zone: str) -> str:
        """The commune or ward a zone belongs to (itself if it is one), else the zone."""
        for z in self.ancestors(zone):
            if self.kinds.get(z) in ("commune", "ward"):
                return z
        return zone


def authorize(principal: Principal, action: Action, zones: Iterable[str], tree: ZoneTree) -> None:
    """Raise Forbidden unless the principal may perform action on every zone given."""
    if principal.role == "admin":
        return
    if action is Action.PROVINCE:
        raise Forbidden(f"{principal.role} {principal.name!r} may not change the province's structure")
    if action in (Action.BULLETIN_CREATE, Action.BULLETIN_APPROVE):
        if action.value not in principal.permissions:
            raise Forbidden(f"{principal.role} {principal.name!r} lacks the permission {action.value}")
    elif action is Action.WRITE and principal.role != "operator":
        raise Forbidden(f"{principal.role} {principal.name!r} has read-only access")
    for zone in zones:
        if not tree.within(zone, principal.zones):
            raise Forbidden(f"zone {zone!r} is outside {principal.name!r}'s zones ({', '.join(principal.zones)})")


def visible_zones(principal: Principal, tree: ZoneTree) -> set[str] | None:
    """Zones a caller may read; None means all (admin)."""
    if principal.role == "admin":
        return None
    result: set[str] = set()
    for scope in principal.zones:
        result |= tree.subtree(scope)
    return result
