"""Bulletins and their plays.

A transition is a compare-and-set: ``UPDATE ... WHERE id = ? AND state = ?``
in the transaction that writes its audit row, so two approvers pressing at
once approve once and the second gets Conflict, and no transition is ever
stored without its audit row. ``zones``, ``plan`` and ``approved_content``
are JSON text; rows come back decoded (``decode``).

A play is claimed before it is sent to the core (``claim``: one row per
bulletin, slot and channel, UNIQUE), so a restart, a second poll or a
bulletin received twice from the province never plays the same slot twice.

Loop side (Deferred): ``create``, ``get``, ``page``, ``edit``, ``transition``,
``by_origin``, ``claim``, ``play_ended``, ``plays``, ``eboard``.
Sync (start-up, tests): ``on_air_sync``, ``get_sync``, ``played_slots_sync``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred

from broadcaster.storage.db import Conflict, Database, Page, one, page, rows
from broadcaster.storage.logs import Actor, audit_txn

CONTENT_FIELDS = ("title", "summary", "body", "media", "category", "klass", "language", "valid_from",
                  "valid_until", "zones", "plan")


@dataclass(frozen=True)
class BulletinContent:
    """What a bulletin says and when it plays: everything an edit may change, and what the
    approver approves (``approved_content`` keeps it, so an edit shows what changed)."""

    title: str
    summary: str
    body: str
    category: str
    klass: str  # thong-thuong, uu-tien, khan-cap (bulletin_rules.CLASSES)
    language: str
    valid_from: float | None
    valid_until: float | None
    zones: list[str]
    plan: dict[str, Any] = field(default_factory=dict)
    media: str | None = None
    source: str = "local"       # local, province, central
    origin: str | None = None   # the upstream system it came from
    origin_id: str | None = None

    def values(self) -> dict[str, Any]:
        """The content as the columns store it."""
        data = {name: getattr(self, name) for name in CONTENT_FIELDS}
        data["class"] = data.pop("klass")
        data["zones"] = json.dumps(self.zones)
        data["plan"] = json.dumps(self.plan, sort_keys=True)
        return data

    def same_as(self, row: dict[str, Any]) -> bool:
        """Whether a stored (decoded) row already says exactly this."""
        return content_of(row) == {n: getattr(self, n) for n in CONTENT_FIELDS}


def content_of(row: dict[str, Any]) -> dict[str, Any]:
    """The content fields of a decoded row, as BulletinContent names them."""
    return {n: row["class"] if n == "klass" else row[n] for n in CONTENT_FIELDS}


def decode(row: dict[str, Any]) -> dict[str, Any]:
    view = dict(row)
    view["zones"] = json.loads(view["zones"])
    view["plan"] = json.loads(view["plan"])
    view["approved_content"] = json.loads(view["approved_content"]) if view.get("approved_content") else None
    return view


def _get(conn: sqlite3.Connection, bulletin_id: str) -> dict[str, Any] | None:
    row = one(conn, "SELECT * FROM bulletins WHERE id = ?", (bulletin_id,))
    return decode(row) if row else None


def _create(conn: sqlite3.Connection, actor: Actor, bulletin_id: str, content: BulletinContent, state: str,
            now: float, approved_by: str | None = None) -> dict[str, Any]:
    values = {"id": bulletin_id, **content.values(), "source": content.source, "origin": content.origin,
              "origin_id": content.origin_id, "state": state, "created_by": actor.name, "created_at": now}
    if state == "submitted":
        values.update(submitted_by=actor.name, submitted_at=now)
    if approved_by is not None:
        values.update(approved_by=approved_by, approved_at=now, submitted_by=actor.name, submitted_at=now)
    if content.media is not None and one(conn, "SELECT id FROM media WHERE id = ?", (content.media,)) is None:
        raise Conflict(f"media item {content.media!r} no longer exists")
    try:
        conn.execute(f"INSERT INTO bulletins ({', '.join(values)}) VALUES ({','.join('?' * len(values))})",
                     tuple(values.values()))
    except sqlite3.IntegrityError:
        raise Conflict(f"a bulletin from {content.origin} with id {content.origin_id!r} exists") from None
    audit_txn(conn, actor, "bulletin.create", bulletin_id, content.zones[0],
              f"{content.klass} {state} {content.title}" + (f" from {content.origin}:{content.origin_id}"
                                                          if content.origin else ""))
    row = _get(conn, bulletin_id)
    assert row is not None
    return row


def _transition(conn: sqlite3.Connection, actor: Actor, bulletin_id: str, before: str | tuple[str, ...],
                after: str, action: str, changes: dict[str, Any], detail: str) -> dict[str, Any]:
    """Compare-and-set from ``before`` (a state, or any of several): Conflict if the bulletin is no
    longer there."""
    states = (before,) if isinstance(before, str) else before
    current = _get(conn, bulletin_id)
    sets = {"state": after, **changes}
    cursor = conn.execute(f"UPDATE bulletins SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ? "
                          f"AND state IN ({','.join('?' * len(states))})", (*sets.values(), bulletin_id, *states))
    row = _get(conn, bulletin_id)
    if cursor.rowcount == 0 or current is None or row is None:
        if row is None:
            raise Conflict(f"bulletin {bulletin_id!r} no longer exists")
        raise Conflict(f"bulletin {bulletin_id} is {row['state']} now, not {' or '.join(states)}: someone "
                       "changed it meanwhile")
    audit_txn(conn, actor, f"bulletin.{action}", bulletin_id, row["zones"][0],
              f"{current['state']} -> {after}" + (f": {detail}" if detail else ""))
    return row


def _edit(conn: sqlite3.Connection, actor: Actor, bulletin_id: str, before: str, after: str, version: int,
          content: BulletinContent, now: float) -> dict[str, Any]:
    """A new content for the bulletin (its ``version`` goes up by one; Conflict if someone else's edit
    came first). Going back for approval keeps what was approved, for the approver to compare."""
    current = _get(conn, bulletin_id)
    if current is None:
        raise Conflict(f"bulletin {bulletin_id!r} no longer exists")
    if current["version"] != version or current["state"] != before:
        raise Conflict(f"bulletin {bulletin_id} was changed meanwhile (now version {current['version']}, "
                       f"{current['state']}); reload it and edit again")
    if content.media is not None and one(conn, "SELECT id FROM media WHERE id = ?", (content.media,)) is None:
        raise Conflict(f"media item {content.media!r} no longer exists")
    changes: dict[str, Any] = {**content.values(), "version": version + 1, "updated_by": actor.name,
                               "updated_at": now, "speech": None, "next_at": None}
    if before in ("approved", "scheduled"):
        changes.update(approved_content=json.dumps(content_of(current), sort_keys=True), approved_by=None,
                       approved_at=None, submitted_by=actor.name, submitted_at=now)
    return _transition(conn, actor, bulletin_id, before, after, "edit", changes, f"version {version + 1}")


def _visible_sql(visible: Collection[str] | None) -> tuple[str, list[Any]]:
    """Every target zone visible (None: all)."""
    if visible is None:
        return "1=1", []
    zones = sorted(visible)
    return (f"NOT EXISTS (SELECT 1 FROM json_each(bulletins.zones) WHERE value NOT IN "
            f"({','.join('?' * len(zones)) or 'NULL'}))", zones)


def _page(conn: sqlite3.Connection, visible: Collection[str] | None, states: Sequence[str], limit: int,
          offset: int) -> Page:
    where, args = _visible_sql(visible)
    if states:
        where += f" AND state IN ({','.join('?' * len(states))})"
        args += list(states)
    found = page(conn, f"SELECT * FROM bulletins WHERE {where} ORDER BY created_at DESC, id", args, limit, offset)
    return Page([decode(r) for r in found.items], found.total, found.limit, found.offset)


def _on_air(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [decode(r) for r in rows(conn, "SELECT * FROM bulletins WHERE state IN ('approved', 'scheduled') "
                                          "ORDER BY created_at, id")]


def _by_origin(conn: sqlite3.Connection, origin: str, origin_id: str) -> dict[str, Any] | None:
    row = one(conn, "SELECT * FROM bulletins WHERE origin = ? AND origin_id = ?", (origin, origin_id))
    return decode(row) if row else None


def _claim(conn: sqlite3.Connection, bulletin_id: str, slot: float, channels: Sequence[tuple[str, str]],
           now: float) -> bool:
    """Claim a slot on its channels; False if any of them was claimed before (it played, or is playing)."""
    if one(conn, "SELECT 1 FROM bulletin_plays WHERE bulletin = ? AND slot = ? LIMIT 1", (bulletin_id, slot)):
        return False
    conn.executemany("INSERT INTO bulletin_plays (bulletin, slot, channel, zone, started_at) VALUES (?,?,?,?,?)",
                     [(bulletin_id, slot, channel, zone, now) for channel, zone in channels])
    return True


def _play_started(conn: sqlite3.Connection, bulletin_id: str, slot: float, channel: str, at: float,
                  online: int) -> None:
    conn.execute("UPDATE bulletin_plays SET started_at = ?, online = ? WHERE bulletin = ? AND slot = ? AND channel = ?",
                 (at, online, bulletin_id, slot, channel))


def _play_ended(conn: sqlite3.Connection, bulletin_id: str, slot: float, channel: str, at: float, outcome: str,
                acknowledged: int | None) -> None:
    conn.execute("UPDATE bulletin_plays SET ended_at = ?, outcome = ?, acknowledged = COALESCE(?, acknowledged) "
                 "WHERE bulletin = ? AND slot = ? AND channel = ?",
                 (at, outcome, acknowledged, bulletin_id, slot, channel))


def _plays(conn: sqlite3.Connection, bulletin_id: str) -> list[dict[str, Any]]:
    return rows(conn, "SELECT * FROM bulletin_plays WHERE bulletin = ? ORDER BY slot, channel", (bulletin_id,))


def _played_slots(conn: sqlite3.Connection) -> dict[str, set[float]]:
    """Every claimed slot of the bulletins that may still play."""
    found: dict[str, set[float]] = {}
    for r in rows(conn, "SELECT DISTINCT p.bulletin, p.slot FROM bulletin_plays p JOIN bulletins b "
                        "ON b.id = p.bulletin WHERE b.state IN ('approved', 'scheduled')"):
        found.setdefault(r["bulletin"], set()).add(r["slot"])
    return found


def _close_dangling(conn: sqlite3.Connection, now: float) -> int:
    """Plays a crash left open: ended now, as "stopped"."""
    return conn.execute("UPDATE bulletin_plays SET ended_at = MAX(started_at, ?), outcome = 'stopped' "
                        "WHERE ended_at IS NULL", (now,)).rowcount


def _eboard(conn: sqlite3.Connection, zones: Sequence[str], now: float, limit: int) -> list[dict[str, Any]]:
    """Approved text bulletins valid now whose targets include one of ``zones`` (a zone and its
    ancestors: a province bulletin shows on every commune's board); emergency first, then priority,
    newest first."""
    marks = ",".join("?" * len(zones)) or "NULL"
    found = rows(conn, "SELECT * FROM bulletins WHERE state IN ('approved', 'scheduled', 'played') "
                       "AND (valid_from IS NULL OR valid_from <= ?) AND (valid_until IS NULL OR valid_until > ?) "
                       f"AND EXISTS (SELECT 1 FROM json_each(bulletins.zones) WHERE value IN ({marks})) "
                       "AND (body != '' OR summary != '') "
                       "ORDER BY CASE class WHEN 'khan-cap' THEN 0 WHEN 'uu-tien' THEN 1 ELSE 2 END, "
                       "COALESCE(approved_at, created_at) DESC, id LIMIT ?", (now, now, *zones, limit))
    return [decode(r) for r in found]


class BulletinRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, actor: Actor, bulletin_id: str, content: BulletinContent, state: str,
               approved_by: str | None = None, now: float | None = None) -> Deferred[dict[str, Any]]:
        """Conflict if its media was deleted meanwhile, or (origin, origin_id) is already stored."""
        return self.db.run("bulletins.create", _create, actor, bulletin_id, content, state,
                           time.time() if now is None else now, approved_by)

    def get(self, bulletin_id: str) -> Deferred[dict[str, Any] | None]:
        return self.db.read("bulletins.get", _get, bulletin_id)

    def get_sync(self, bulletin_id: str) -> dict[str, Any] | None:
        return self.db.run_sync(_get, bulletin_id)

    def page(self, visible: Collection[str] | None, states: Sequence[str] = (), limit: int = 50,
             offset: int = 0) -> Deferred[Page]:
        """Newest first, those whose every target zone is visible (None: all)."""
        return self.db.read("bulletins.page", _page, visible, tuple(states), limit, offset)

    def by_origin(self, origin: str, origin_id: str) -> Deferred[dict[str, Any] | None]:
        return self.db.read("bulletins.by_origin", _by_origin, origin, origin_id)

    def transition(self, actor: Actor, bulletin_id: str, before: str | tuple[str, ...], after: str, action: str,
                   changes: dict[str, Any] | None = None, detail: str = "") -> Deferred[dict[str, Any]]:
        """Fires with the updated row; Conflict if it is no longer ``before``."""
        return self.db.run("bulletins.transition", _transition, actor, bulletin_id, before, after, action,
                           dict(changes or {}), detail)

    def edit(self, actor: Actor, bulletin_id: str, before: str, after: str, version: int,
             content: BulletinContent, now: float | None = None) -> Deferred[dict[str, Any]]:
        return self.db.run("bulletins.edit", _edit, actor, bulletin_id, before, after, version, content,
                           time.time() if now is None else now)

    def on_air_sync(self) -> list[dict[str, Any]]:
        """Approved and scheduled bulletins (start-up)."""
        return self.db.run_sync(_on_air)

    def played_slots_sync(self) -> dict[str, set[float]]:
        return self.db.run_sync(_played_slots)

    def close_dangling_sync(self, now: float) -> int:
        return self.db.run_sync(_close_dangling, now)

    def claim(self, bulletin_id: str, slot: float, channels: Sequence[tuple[str, str]],
              now: float) -> Deferred[bool]:
        return self.db.run("bulletins.claim", _claim, bulletin_id, slot, tuple(channels), now)

    def play_started(self, bulletin_id: str, slot: float, channel: str, at: float, online: int) -> Deferred[None]:
        return self.db.run("bulletins.play_started", _play_started, bulletin_id, slot, channel, at, online)

    def play_ended(self, bulletin_id: str, slot: float, channel: str, at: float, outcome: str,
                   acknowledged: int | None = None) -> Deferred[None]:
        return self.db.run("bulletins.play_ended", _play_ended, bulletin_id, slot, channel, at, outcome,
                           acknowledged)

    def plays(self, bulletin_id: str) -> Deferred[list[dict[str, Any]]]:
        return self.db.read("bulletins.plays", _plays, bulletin_id)

    def plays_sync(self, bulletin_id: str) -> list[dict[str, Any]]:
        return self.db.run_sync(_plays, bulletin_id)

    def eboard(self, zones: Sequence[str], now: float, limit: int = 50) -> Deferred[list[dict[str, Any]]]:
        return self.db.read("bulletins.eboard", _eboard, tuple(zones), now, limit)

