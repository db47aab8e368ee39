"""Channels: a mix bus each, in a zone.

Loop side (Deferred): ``all``, ``ids_page``, ``create``. Sync (start-up,
tests): ``all_sync``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any

from twisted.internet.defer import Deferred

from broadcaster.storage.db import Database, Page, page, rows, zone_filter
from broadcaster.storage.logs import Actor, audit_txn


def _all(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return rows(conn, "SELECT * FROM channels ORDER BY id")


def _ids_page(conn: sqlite3.Connection, visible: Collection[str] | None, limit: int, offset: int) -> Page:
    where, args = zone_filter("zone", visible)
    return page(conn, f"SELECT id FROM channels WHERE {where} ORDER BY id", args, limit, offset)


def _create(conn: sqlite3.Connection, actor: Actor, channel_id: str, name: str, zone: str, public: bool) -> None:
    conn.execute("INSERT INTO channels (id, name, zone, public) VALUES (?,?,?,?)",
                 (channel_id, name, zone, int(public)))
    audit_txn(conn, actor, "channel.create", channel_id, zone)


class ChannelRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def all(self) -> Deferred[list[dict[str, Any]]]:
        """Every channel row (all columns), by id: what app.channel_config takes."""
        return self.db.read("channels.all", _all)

    def all_sync(self) -> list[dict[str, Any]]:
        return self.db.run_sync(_all)

    def ids_page(self, visible: Collection[str] | None, limit: int, offset: int) -> Deferred[Page]:
        """A page of channel ids (items are {"id": ...}) in the visible zones."""
        return self.db.read("channels.ids_page", _ids_page, visible, limit, offset)

    def create(self, actor: Actor, channel_id: str, name: str, zone: str, public: bool = True) -> Deferred[None]:
        return self.db.run("channels.create", _create, actor, channel_id, name, zone, public)
