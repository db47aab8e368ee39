"""The media library: uploaded, normalised audio files.

Loop side (Deferred): ``page``, ``get``, ``get_many``, ``add``, ``delete``.
Sync (control/programmes until it moves, tests): ``paths_sync``.

An item a programme plays is not deleted: ``delete`` raises ``MediaInUse``
naming the programmes, checked in the same transaction as the delete (and a
programme's insert checks its media in its own), so neither can slip past the
other.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet.defer import Deferred

from broadcaster.storage.db import Conflict, Database, Page, one, page, rows, zone_filter
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


class MediaInUse(Conflict):
    """The item is in programmes' playlists; ``programmes`` has their id, title and zones."""

    def __init__(self, media_id: str, programmes: list[dict[str, Any]]) -> None:
        names = ", ".join(f"{p['id']} ({p['title']})" for p in programmes)
        super().__init__(f"media item {media_id!r} is played by programmes {names}")
        self.media_id = media_id
        self.programmes = programmes


def programmes_using(conn: sqlite3.Connection, media_id: str) -> list[dict[str, Any]]:
    """Programmes whose playlist holds the item: id, title, zones (a list), by id. A row whose JSON
    cannot be read but names the item is counted as a user: better kept than a bulletin broken."""
    found = []
    for row in rows(conn, "SELECT id, title, zones, media FROM programmes WHERE instr(media, ?) > 0 ORDER BY id",
                    (json.dumps(media_id),)):
        try:
            playlist, zones = json.loads(row["media"]), json.loads(row["zones"])
        except ValueError:
            playlist, zones = [media_id], []
        if not isinstance(zones, list):
            zones = []
        if not isinstance(playlist, list) or media_id in playlist:
            found.append({"id": row["id"], "title": row["title"], "zones": [str(z) for z in zones]})
    return found


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
    programmes = programmes_using(conn, media_id)
    if programmes:
        raise MediaInUse(media_id, programmes)
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
        """Fires with the deleted row (its path: the caller removes the file), or None. MediaInUse
        (a Conflict) if a programme plays it; nothing is deleted then."""
        return self.db.run("media.delete", _delete, actor, media_id)
