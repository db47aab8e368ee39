"""Loudspeakers: registration, edits, keys.

A device's key is stored sealed (KeySealer); ``device``/``device_sync``
return ONE loudspeaker with its key opened, so an edit re-reads one device,
never the whole fleet. ``devices_sync`` opens them all, once, at start-up.

Loop side (Deferred): ``register``, ``get``, ``update``, ``rotate_key``,
``delete``, ``page``, ``device``. Sync (start-up, tests): ``devices_sync``,
``device_sync``, ``get_sync``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from twisted.internet.defer import Deferred

from broadcaster.storage.crypto import KeySealer
from broadcaster.storage.db import Database, Exists, Page, one, page, rows, zone_filter
from broadcaster.storage.logs import Actor, audit_txn

log = logging.getLogger(__name__)

COLUMNS = "id, name, zone, channel, volume, created_at, lat, lon"
EDITABLE = ("channel", "volume", "name", "lat", "lon")


@dataclass(frozen=True)
class StoredDevice:
    """What the subscription table needs of a loudspeaker, key in clear."""

    id: str
    zone: str
    channel: str
    key: bytes
    volume: int


def _get(conn: sqlite3.Connection, device_id: str) -> dict[str, Any] | None:
    return one(conn, f"SELECT {COLUMNS} FROM loudspeakers WHERE id = ?", (device_id,))


def _page(conn: sqlite3.Connection, visible: Collection[str] | None, zone: str | None, channel: str | None,
          limit: int, offset: int) -> Page:
    where, args = zone_filter("zone", visible)
    filters, extra = [where], list(args)
    for column, value in (("zone", zone), ("channel", channel)):
        if value:
            filters.append(f"{column} = ?")
            extra.append(value)
    return page(conn, f"SELECT {COLUMNS} FROM loudspeakers WHERE {' AND '.join(filters)} ORDER BY id",
                extra, limit, offset)


def _delete(conn: sqlite3.Connection, actor: Actor, device_id: str) -> bool:
    row = _get(conn, device_id)
    if row is None:
        return False
    conn.execute("DELETE FROM loudspeakers WHERE id = ?", (device_id,))
    audit_txn(conn, actor, "loudspeaker.delete", device_id, row["zone"])
    return True


def _update(conn: sqlite3.Connection, actor: Actor, device_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    row = _get(conn, device_id)
    if row is None or not changes:
        return row
    conn.execute(f"UPDATE loudspeakers SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?",
                 (*changes.values(), device_id))
    audit_txn(conn, actor, "loudspeaker.update", device_id, row["zone"], json.dumps(changes, ensure_ascii=False))
    return _get(conn, device_id)


class LoudspeakerRepository:
    def __init__(self, db: Database, sealer: KeySealer) -> None:
        self.db = db
        self.sealer = sealer

    # --- reads ---------------------------------------------------------------------

    def get(self, device_id: str) -> Deferred[dict[str, Any] | None]:
        """id, name, zone, channel, volume, created_at; None if there is no such loudspeaker."""
        return self.db.read("loudspeakers.get", _get, device_id)

    def get_sync(self, device_id: str) -> dict[str, Any] | None:
        return self.db.run_sync(_get, device_id)

    def page(self, visible: Collection[str] | None, limit: int, offset: int, zone: str | None = None,
             channel: str | None = None) -> Deferred[Page]:
        return self.db.read("loudspeakers.page", _page, visible, zone, channel, limit, offset)

    def _open(self, row: dict[str, Any]) -> StoredDevice | None:
        try:
            key = self.sealer.open(row["id"], row["key_sealed"])
        except InvalidTag:
            log.error("loudspeaker %s: its stored key does not open with this server's secret", row["id"])
            return None
        return StoredDevice(id=row["id"], zone=row["zone"], channel=row["channel"], key=key, volume=row["volume"])

    def _device(self, conn: sqlite3.Connection, device_id: str) -> StoredDevice | None:
        row = one(conn, "SELECT id, zone, channel, key_sealed, volume FROM loudspeakers WHERE id = ?", (device_id,))
        return self._open(row) if row else None

    def device(self, device_id: str) -> Deferred[StoredDevice | None]:
        """ONE loudspeaker with its key opened (None if gone or its key does not open)."""
        return self.db.read("loudspeakers.device", self._device, device_id)

    def device_sync(self, device_id: str) -> StoredDevice | None:
        return self.db.run_sync(self._device, device_id)

    def devices_sync(self) -> list[StoredDevice]:
        """Every loudspeaker, keys opened: start-up only (it is the slow one)."""
        found = self.db.run_sync(rows, "SELECT id, zone, channel, key_sealed, volume FROM loudspeakers ORDER BY id")
        return [d for d in (self._open(r) for r in found) if d is not None]

    # --- writes ----------------------------------------------------------------------

    def _register(self, conn: sqlite3.Connection, actor: Actor, device_id: str, zone: str, channel: str,
                  name: str, volume: int, key: str, lat: float | None, lon: float | None) -> dict[str, Any]:
        if _get(conn, device_id) is not None:
            raise Exists(f"loudspeaker {device_id!r} is already registered")
        conn.execute("INSERT INTO loudspeakers (id, name, zone, channel, key_sealed, volume, created_at, lat, lon) "
                     "VALUES (?,?,?,?,?,?,?,?,?)", (device_id, name, zone, channel,
                                                    self.sealer.seal(device_id, key.encode("utf-8")), volume,
                                                    time.time(), lat, lon))
        audit_txn(conn, actor, "loudspeaker.register", device_id, zone, f"channel={channel}")
        row = _get(conn, device_id)
        assert row is not None
        return row

    def register(self, actor: Actor, device_id: str, zone: str, channel: str, key: str, name: str = "",
                 volume: int = 80, lat: float | None = None, lon: float | None = None) -> Deferred[dict[str, Any]]:
        """Fires with the stored row; Exists if the id is taken, Conflict if zone or channel are gone.
        ``lat``/``lon``: where it stands (the console's map), or None."""
        return self.db.run("loudspeakers.register", self._register, actor, device_id, zone, channel, name, volume,
                           key, lat, lon)

    def update(self, actor: Actor, device_id: str, changes: dict[str, Any]) -> Deferred[dict[str, Any] | None]:
        """Set some of channel, volume, name, lat, lon; fires with the row after (None if there is no
        such loudspeaker)."""
        return self.db.run("loudspeakers.update", _update, actor, device_id, changes)

    def _rotate(self, conn: sqlite3.Connection, actor: Actor, device_id: str, key: str) -> bool:
        row = _get(conn, device_id)
        if row is None:
            return False
        conn.execute("UPDATE loudspeakers SET key_sealed = ? WHERE id = ?",
                     (self.sealer.seal(device_id, key.encode("utf-8")), device_id))
        audit_txn(conn, actor, "loudspeaker.rotate_key", device_id, row["zone"])
        return True

    def rotate_key(self, actor: Actor, device_id: str, key: str) -> Deferred[bool]:
        """Store a new key; fires with False if there is no such loudspeaker."""
        return self.db.run("loudspeakers.rotate_key", self._rotate, actor, device_id, key)

    def delete(self, actor: Actor, device_id: str) -> Deferred[bool]:
        return self.db.run("loudspeakers.delete", _delete, actor, device_id)
