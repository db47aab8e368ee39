"""Scheduled programmes: playlists of media (or a relay) on target zones.

Rows keep ``zones``, ``media`` and ``weekdays`` as JSON text; the
repository returns them decoded as lists (``decode``), except ``all_sync``
which gives raw rows for ``control.programmes.programme_from_row``.

Loop side (Deferred): ``list_visible``, ``get``, ``add``, ``replace``, ``delete``.
Sync (start-up, control until it moves): ``all_sync``, ``get_sync``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet.defer import Deferred

from broadcaster.storage.db import Conflict, Database, one, rows
from broadcaster.storage.logs import Actor, audit_txn


@dataclass(frozen=True)
class NewProgramme:
    id: str
    title: str
    zones: list[str]
    media: list[str]
    start_local: str
    duration_s: float
    recurrence: str
    weekdays: list[int]
    until: str | None
    priority: int
    on_restart: str
    on_preempt: str
    relay: str | None = None  # a relay of the library instead of media


def decode(row: dict[str, Any]) -> dict[str, Any]:
    view = dict(row)
    for name in ("zones", "media", "weekdays"):
        view[name] = json.loads(view[name])
    return view


def _all(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return rows(conn, "SELECT * FROM programmes ORDER BY created_at, id")


def _visible(conn: sqlite3.Connection, visible: Collection[str] | None) -> list[dict[str, Any]]:
    found = [decode(r) for r in rows(conn, "SELECT * FROM programmes ORDER BY start_local, id")]
    if visible is None:
        return found
    allowed = set(visible)
    return [r for r in found if set(r["zones"]) <= allowed]


def _get(conn: sqlite3.Connection, programme_id: str) -> dict[str, Any] | None:
    row = one(conn, "SELECT * FROM programmes WHERE id = ?", (programme_id,))
    return decode(row) if row else None


def _check_references(conn: sqlite3.Connection, item: NewProgramme) -> None:
    wanted = sorted(set(item.media))
    stored = {r["id"] for r in rows(conn, f"SELECT id FROM media WHERE id IN ({','.join('?' * len(wanted))})",
                                    wanted)} if wanted else set()
    missing = [m for m in item.media if m not in stored]
    if missing:  # deleted since the caller looked: the playlist would fail when it plays
        raise Conflict(f"media item {missing[0]!r} no longer exists")
    if item.relay is not None and one(conn, "SELECT id FROM relays WHERE id = ?", (item.relay,)) is None:
        raise Conflict(f"relay {item.relay!r} no longer exists")


def _values(item: NewProgramme) -> dict[str, Any]:
    values: dict[str, Any] = asdict(item)
    for name in ("zones", "media", "weekdays"):
        values[name] = json.dumps(values[name])
    return values


def _add(conn: sqlite3.Connection, actor: Actor, item: NewProgramme) -> dict[str, Any]:
    _check_references(conn, item)
    values = _values(item)
    values.update(created_by=actor.name, created_at=time.time())
    conn.execute(f"INSERT INTO programmes ({', '.join(values)}) VALUES ({','.join('?' * len(values))})",
                 tuple(values.values()))
    audit_txn(conn, actor, "programme.create", item.id, item.zones[0],
              f"{item.title} {item.recurrence} {item.start_local}")
    row = _get(conn, item.id)
    assert row is not None
    return row


def _replace(conn: sqlite3.Connection, actor: Actor, item: NewProgramme) -> dict[str, Any] | None:
    if _get(conn, item.id) is None:
        return None
    _check_references(conn, item)
    values = _values(item)
    del values["id"]
    conn.execute(f"UPDATE programmes SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                 (*values.values(), item.id))
    audit_txn(conn, actor, "programme.update", item.id, item.zones[0],
              f"{item.title} {item.recurrence} {item.start_local}")
    return _get(conn, item.id)


def _delete(conn: sqlite3.Connection, actor: Actor, programme_id: str) -> dict[str, Any] | None:
    row = _get(conn, programme_id)
    if row is None:
        return None
    conn.execute("DELETE FROM programmes WHERE id = ?", (programme_id,))
    audit_txn(conn, actor, "programme.delete", programme_id, row["zones"][0], row["title"])
    return row


class ProgrammeRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def all_sync(self) -> list[dict[str, Any]]:
        """Raw rows (JSON text columns) in creation order, for programme_from_row."""
        return self.db.run_sync(_all)

    def list_visible(self, visible: Collection[str] | None) -> Deferred[list[dict[str, Any]]]:
        """Decoded rows whose every zone is visible (None: all), by start time."""
        return self.db.read("programmes.list", _visible, visible)

    def get(self, programme_id: str) -> Deferred[dict[str, Any] | None]:
        return self.db.read("programmes.get", _get, programme_id)

    def get_sync(self, programme_id: str) -> dict[str, Any] | None:
        return self.db.run_sync(_get, programme_id)

    def add(self, actor: Actor, item: NewProgramme) -> Deferred[dict[str, Any]]:
        """Fires with the stored (decoded) row. Conflict if a media item of its playlist is not
        stored (deleted meanwhile): checked in the insert's transaction."""
        return self.db.run("programmes.add", _add, actor, item)

    def replace(self, actor: Actor, item: NewProgramme) -> Deferred[dict[str, Any] | None]:
        """Every field of programme ``item.id`` (its author and creation time kept); fires with the
        row after, or None if there is no such programme. Conflict as for ``add``."""
        return self.db.run("programmes.replace", _replace, actor, item)

    def delete(self, actor: Actor, programme_id: str) -> Deferred[dict[str, Any] | None]:
        """Fires with the deleted (decoded) row, or None."""
        return self.db.run("programmes.delete", _delete, actor, programme_id)
