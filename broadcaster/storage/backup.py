"""A backup of everything a server keeps, taken while it runs, and its restore.

What it holds: the database (SQLite's online backup API: a consistent snapshot
while the server goes on writing), the media library's files that snapshot
refers to (the files are written once, by rename, so a copy is never half a
file), and the server secret the loudspeakers' keys are sealed with (without
it a restored database cannot open one key). ``manifest.json`` lists every
file with its size and SHA-256, so a restore checks the backup before it
touches anything.

The snapshot is taken first and the files after: a media item added meanwhile
is not in the snapshot and not needed; one deleted meanwhile is reported as
missing (its row is in the snapshot, its file was gone before the copy).

A restore writes into the directories the configuration names and moves each
media row's path there (the backup may come from another machine). It refuses
to overwrite a database that holds data, or a different secret, unless told to.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broadcaster.storage.db import StorageError
from broadcaster.storage.lock import holder
from broadcaster.storage.migrations import SCHEMA_VERSION

FORMAT = 1
DATABASE = "broadcaster.db"
SECRET = "secret.key"
MEDIA = "media"
MANIFEST = "manifest.json"
COUNTED = ("zones", "channels", "loudspeakers", "users", "media", "programmes", "bulletins", "alerts",
           "broadcast_log", "audit_log", "relays")

Progress = Callable[[str], None]


class BackupError(StorageError):
    """The backup cannot be taken or restored; the message says what to do."""


@dataclass
class Summary:
    directory: Path
    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)  # media rows whose file was gone before the copy


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _counts(conn: sqlite3.Connection) -> dict[str, int]:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in COUNTED if t in tables}


def _fsync_tree(directory: Path) -> None:
    for path in [*directory.rglob("*"), directory]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def take(database: Path, media_dir: Path, secret_file: Path, target: Path,
         progress: Progress = lambda line: None) -> Summary:
    """Back up into ``target``, which must not exist or be empty. Written under a temporary name
    and renamed at the end, so a backup that fails half-way never looks complete."""
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty: back up into a new directory")
    if not database.exists():
        raise BackupError(f"{database}: no database there (storage.path)")
    if not secret_file.exists():
        raise BackupError(f"{secret_file}: no server secret there (storage.secret_file)")
    work = target.with_name(f".{target.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    # Only the service's user may read it: password and token hashes, the sealed keys, the secret.
    work.mkdir(mode=0o700, parents=True)
    (work / MEDIA).mkdir(mode=0o700)
    summary = Summary(target)
    try:
        progress(f"database {database} ...")
        source = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
        copy = sqlite3.connect(work / DATABASE)
        try:
            source.backup(copy, pages=1024, sleep=0.05)  # in steps: the server's writers wait at most a step
            summary.rows = _counts(copy)
            media = [(r[0], r[1]) for r in copy.execute("SELECT id, path FROM media ORDER BY id")]
            version = int(copy.execute("PRAGMA user_version").fetchone()[0])
        finally:
            copy.close()
            source.close()
        os.chmod(work / DATABASE, 0o600)
        progress(f"  {', '.join(f'{n} {t}' for t, n in summary.rows.items())}")
        files: dict[str, dict[str, Any]] = {DATABASE: {}}
        for i, (media_id, stored) in enumerate(media, start=1):
            path = Path(stored)
            if not path.exists():
                summary.missing.append(media_id)
                continue
            shutil.copy2(path, work / MEDIA / path.name)
            files[f"{MEDIA}/{path.name}"] = {"media": media_id}
            if i % 50 == 0 or i == len(media):
                progress(f"media {i}/{len(media)}")
        shutil.copy2(secret_file, work / SECRET)
        os.chmod(work / SECRET, 0o600)
        files[SECRET] = {}
        for name, entry in files.items():
            path = work / name
            entry.update(size=path.stat().st_size, sha256=_sha256(path))
            summary.files += 1
            summary.bytes += entry["size"]
        manifest = {"format": FORMAT, "schema_version": version, "taken_at": time.time(),
                    "media_dir": str(media_dir), "rows": summary.rows, "missing_media": summary.missing,
                    "files": files}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        _fsync_tree(work)
        if target.exists():
            target.rmdir()
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return summary


def read_manifest(source: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{source}: no {MANIFEST}; not a backup made by `broadcaster backup`") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source / MANIFEST}: cannot be read: {exc}") from None
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or not isinstance(manifest.get("files"), dict)):
        raise BackupError(f"{source / MANIFEST}: not a backup manifest of format {FORMAT}")
    if int(manifest.get("schema_version", 0)) > SCHEMA_VERSION:
        raise BackupError(f"{source}: made by a newer version (schema {manifest['schema_version']}, this one knows "
                          f"{SCHEMA_VERSION}); restore it with that version or newer")
    return manifest


def verify(source: Path, manifest: dict[str, Any], progress: Progress = lambda line: None) -> None:
    """Every file the manifest lists, present with its size and digest: checked before anything is written."""
    for name, entry in manifest["files"].items():
        path = (source / name).resolve()
        if source.resolve() not in path.parents:
            raise BackupError(f"{source / MANIFEST}: {name!r} points outside the backup")
        if not path.is_file() or path.stat().st_size != entry.get("size") or _sha256(path) != entry.get("sha256"):
            raise BackupError(f"{path}: missing or changed since the backup was taken (size or SHA-256 differs)")
    progress(f"checked {len(manifest['files'])} files")


def _holds_data(database: Path) -> bool:
    if not database.exists():
        return False
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return "zones" in tables and conn.execute("SELECT COUNT(*) FROM zones").fetchone()[0] > 0
    finally:
        conn.close()


def restore(source: Path, database: Path, media_dir: Path, secret_file: Path, force: bool = False,
            progress: Progress = lambda line: None) -> Summary:
    """Restore a backup into these places. The server must be stopped (the database is replaced)."""
    manifest = read_manifest(source)
    running = holder(database)
    if running is not None:
        raise BackupError(f"a server (pid {running}) is running on {database}: stop it before restoring")
    verify(source, manifest, progress)
    if _holds_data(database) and not force:
        raise BackupError(f"{database} already holds a server's data; stop that server and pass --force to "
                          "replace it, or set storage.path to a new file")
    if secret_file.exists() and secret_file.read_bytes() != (source / SECRET).read_bytes() and not force:
        raise BackupError(f"{secret_file} holds another secret than the backup's: pass --force to replace it "
                          "(its loudspeaker keys were sealed with the backup's)")
    media_dir.mkdir(parents=True, exist_ok=True)
    database.parent.mkdir(parents=True, exist_ok=True)
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    summary = Summary(source, rows=dict(manifest.get("rows", {})), missing=list(manifest.get("missing_media", [])))
    media_files = [n for n in manifest["files"] if n.startswith(f"{MEDIA}/")]
    for i, name in enumerate(media_files, start=1):
        shutil.copy2(source / name, media_dir / Path(name).name)
        if i % 50 == 0 or i == len(media_files):
            progress(f"media {i}/{len(media_files)}")
    staged = database.with_name(database.name + ".restoring")
    shutil.copy2(source / DATABASE, staged)
    os.chmod(staged, 0o600)
    conn = sqlite3.connect(staged)
    try:  # each media row to where its file is now
        for media_id, stored in conn.execute("SELECT id, path FROM media").fetchall():
            conn.execute("UPDATE media SET path = ? WHERE id = ?", (str(media_dir / Path(stored).name), media_id))
        conn.commit()
    finally:
        conn.close()
    for leftover in (database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
        leftover.unlink(missing_ok=True)  # a stopped server's WAL belongs to the database being replaced
    os.replace(staged, database)
    fd = os.open(secret_file.with_name(secret_file.name + ".restoring"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write((source / SECRET).read_bytes())
    os.replace(secret_file.with_name(secret_file.name + ".restoring"), secret_file)
    summary.files = len(manifest["files"])
    return summary
