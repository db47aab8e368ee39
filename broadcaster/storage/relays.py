"""The relay library: upstream radio (VOV1, the provincial station) by name and URL, per zone.

A relay stored on a zone may be played on that zone's channels and below it
(a province's relays serve every commune). Loop side (Deferred): ``visible``,
``get``, ``add``, ``delete``. A relay a programme still plays is not deleted.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from twisted.internet.defer import Deferred

from broadcaster.storage.db import Conflict, Database, one, rows
from broadcaster.storage.logs import Actor, audit_txn

COLUMNS = "id, zone, name, url, created_by, created_at"


def _in_zones(conn: sqlite3.Connection, zones: list[str] | None) -> list[dict[str, Any]]:
    if zones is None:
        return rows(conn, f"SELECT {COLUMNS} FROM relays ORDER BY zone, name, id")
    if not zones:
        return []
    return rows(conn, f"SELECT {COLUMNS} FROM relays WHERE zone IN ({','.join('?' * len(zones))}) "
                      "ORDER BY zone, name, id", zones)


def _get(conn: sqlite3.Connection, relay_id: str) -> dict[str, Any] | None:
    return one(conn, f"SELECT {COLUMNS} FROM relays WHERE id = ?", (relay_id,))


def _add(conn: sqlite3.Connection, actor: Actor, relay_id: str, zone: str, name: str, url: str) -> dict[str, Any]:
    conn.execute("INSERT INTO relays (id, zone, name, url, created_by, created_at) VALUES (?,?,?,?,?,?)",
                 (relay_id, zone, name, url, actor.name, time.time()))
    audit_txn(conn, actor, "relay.create", relay_id, zone, f"{name} {url}")
    row = _get(conn, relay_id)
    assert row is not None
    return row


def _delete(conn: sqlite3.Connection, actor: Actor, relay_id: str) -> dict[str, Any] | None:
    row = _get(conn, relay_id)
    if row is None:
        return None
    using = one(conn, "SELECT id, title FROM programmes WHERE relay = ? LIMIT 1", (relay_id,))
    if using is not None:
        raise Conflict(f"programme {using['id']!r} ({using['title']}) relays it; delete that first")
    conn.execute("DELETE FROM relays WHERE id = ?", (relay_id,))
    audit_txn(conn, actor, "relay.delete", relay_id, row["zone"], row["name"])
    return row


class RelayRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def in_zones(self, zones: list[str] | None) -> Deferred[list[dict[str, Any]]]:
        """The relays stored on these zones (None: all)."""
        return self.db.read("relays.list", _in_zones, zones)

    def get(self, relay_id: str) -> Deferred[dict[str, Any] | None]:
        return self.db.read("relays.get", _get, relay_id)

    def get_sync(self, relay_id: str) -> dict[str, Any] | None:
        return self.db.run_sync(_get, relay_id)

    def add(self, actor: Actor, relay_id: str, zone: str, name: str, url: str) -> Deferred[dict[str, Any]]:
        return self.db.run("relays.add", _add, actor, relay_id, zone, name, url)

    def delete(self, actor: Actor, relay_id: str) -> Deferred[dict[str, Any] | None]:
        """Conflict (in the Deferred) while a programme relays it."""
        return self.db.run("relays.delete", _delete, actor, relay_id)
