"""Zones: the province → commune → hamlet tree.

Loop side (Deferred): ``all``, ``page``, ``create``. Sync (start-up, CLI,
tests): ``all_sync``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any

from twisted.internet.defer import Deferred

from broadcaster.storage.db import Database, Page, page, rows, zone_filter
from broadcaster.storage.logs import Actor, audit_txn

COLUMNS = "id, name, kind, parent"


def _all(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return rows(conn, f"SELECT {COLUMNS} FROM zones ORDER BY id")


def _page(conn: sqlite3.Connection, visible: Collection[str] | None, limit: int, offset: int) -> Page:
    where, args = zone_filter("id", visible)
    return page(conn, f"SELECT {COLUMNS} FROM zones WHERE {where} ORDER BY id", args, limit, offset)


def _create(conn: sqlite3.Connection, actor: Actor, zone_id: str, name: str, kind: str,
            parent: str | None) -> dict[str, Any]:
    conn.execute("INSERT INTO zones (id, name, kind, parent) VALUES (?,?,?,?)", (zone_id, name, kind, parent))
    audit_txn(conn, actor, "zone.create", zone_id, zone_id)
    return {"id": zone_id, "name": name, "kind": kind, "parent": parent}


class ZoneRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def all(self) -> Deferred[list[dict[str, Any]]]:
        """Every zone (id, name, kind, parent): what ZoneTree.from_rows takes."""
        return self.db.read("zones.all", _all)

    def all_sync(self) -> list[dict[str, Any]]:
        return self.db.run_sync(_all)

    def page(self, visible: Collection[str] | None, limit: int, offset: int) -> Deferred[Page]:
        return self.db.read("zones.page", _page, visible, limit, offset)

    def create(self, actor: Actor, zone_id: str, name: str, kind: str, parent: str | None) -> Deferred[dict[str, Any]]:
        """Raises Conflict (in the Deferred) if the id is taken or the parent is gone."""
        return self.db.run("zones.create", _create, actor, zone_id, name, kind, parent)
