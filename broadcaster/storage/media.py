"""The media library: uploaded, normalised audio files.

Loop side (Deferred): ``page``, ``get``, ``get_many``, ``add``, ``delete``.
Sync (control/programmes until it moves, tests): ``paths_sync``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet.defer import Deferred

from broadcaster.storage.db import Database, Page, one, page, rows, zone_filter
from broadcaster.storage.logs import Actor, audit_txn

COLUMNS = ("id, zone, title, filename, duration_s, loudness_lufs, original_lufs, sha256, size_bytes, "
           "uploaded_by, created_at")


@dataclass(frozen=True)
class NewMedia:
    id: str
    zone: str
    title: str
    filename: str
    path: str
    duration_s: float
    loudness_lufs: float | None
    original_lufs: float | None
    sha256: str
    size_bytes: int


def _page(conn: sqlite3.Connection, visible: Collection[str] | None, limit: int, offset: int) -> Page:
    where, args = zone_filter("zone", visible)
    return page(conn, f"SELECT {COLUMNS} FROM media WHERE {where} ORDER BY created_at DESC, id", args, limit, offset)


def _get(conn: sqlite3.Connection, media_id: str) -> dict[str, Any] | None:
    return one(conn, f"SELECT {COLUMNS}, path FROM media WHERE id = ?", (media_id,))


def _get_many(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    found = rows(conn, f"SELECT {COLUMNS}, path FROM media WHERE id IN ({','.join('?' * len(ids))})", ids)
    return {r["id"]: r for r in found}


def _add(conn: sqlite3.Connection, actor: Actor, item: NewMedia) -> dict[str, Any]:
    values = asdict(item)
    values.update(uploaded_by=actor.name, created_at=time.time())
    conn.execute(f"INSERT INTO media ({', '.join(values)}) VALUES ({','.join('?' * len(values))})",
                 tuple(values.values()))
    audit_txn(conn, actor, "media.upload", item.id, item.zone, item.title)
    row = _get(conn, item.id)
    assert row is not None
    return row


def _delete(conn: sqlite3.Connection, actor: Actor, media_id: str) -> dict[str, Any] | None:
    row = _get(conn, media_id)
    if row is None:
        return None
    conn.execute("DELETE FROM media WHERE id = ?", (media_id,))
    audit_txn(conn, actor, "media.delete", media_id, row["zone"])
    return row


class MediaRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def page(self, visible: Collection[str] | None, limit: int, offset: int) -> Deferred[Page]:
        """Newest first; items have no file path."""
        return self.db.read("media.page", _page, visible, limit, offset)

    def get(self, media_id: str) -> Deferred[dict[str, Any] | None]:
        """The row with its file path, or None."""
        return self.db.read("media.get", _get, media_id)

    def get_many(self, ids: Sequence[str]) -> Deferred[dict[str, dict[str, Any]]]:
        """Rows (with paths) by id, for those that exist."""
        return self.db.read("media.get_many", _get_many, list(ids))

    def paths_sync(self, ids: Sequence[str]) -> dict[str, str]:
        return {k: v["path"] for k, v in self.db.run_sync(_get_many, list(ids)).items()}

    def add(self, actor: Actor, item: NewMedia) -> Deferred[dict[str, Any]]:
        """Store the row (the file is already written); fires with the row, path included."""
        return self.db.run("media.add", _add, actor, item)

    def delete(self, actor: Actor, media_id: str) -> Deferred[dict[str, Any] | None]:
        """Fires with the deleted row (its path: the caller removes the file), or None. Conflict if a
        stored row still refers to it."""
        return self.db.run("media.delete", _delete, actor, media_id)
