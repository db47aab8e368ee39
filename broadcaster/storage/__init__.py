"""Storage: the one place that talks SQL.

SQLite from the standard library: WAL mode (readers never block the writer),
foreign keys on, numbered migrations applied at start (``PRAGMA
user_version`` holds the number applied). Every write goes through one
connection under one lock, so there is exactly one writer. Admin changes are
small and run synchronously; the broadcast log and loudspeaker sessions,
which the audio path produces, are queued in memory and written in batches
off the reactor thread (``flush``), so a slow disk never delays a frame.

Device keys are needed in clear to check HMACs, so they are stored
encrypted (AES-GCM) under a server secret kept in a separate file; API
tokens and passwords are stored only as hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broadcaster.config import Config

MIGRATIONS: list[str] = [
    # 1: the base schema.
    """
    CREATE TABLE zones (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        parent TEXT REFERENCES zones(id) ON DELETE RESTRICT
    );
    CREATE TABLE channels (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        zone TEXT NOT NULL REFERENCES zones(id) ON DELETE RESTRICT,
        public INTEGER NOT NULL DEFAULT 1,
        multicast_group TEXT,
        multicast_port INTEGER,
        multicast_ttl INTEGER,
        loop_path TEXT,
        loop_gain_db REAL NOT NULL DEFAULT 0
    );
    CREATE TABLE loudspeakers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL DEFAULT '',
        zone TEXT NOT NULL REFERENCES zones(id) ON DELETE RESTRICT,
        channel TEXT NOT NULL REFERENCES channels(id) ON DELETE RESTRICT,
        key_sealed BLOB NOT NULL,
        volume INTEGER NOT NULL DEFAULT 80,
        created_at REAL NOT NULL
    );
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
        password_hash TEXT,
        created_at REAL NOT NULL
    );
    CREATE TABLE user_zones (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        zone TEXT NOT NULL REFERENCES zones(id) ON DELETE CASCADE,
        PRIMARY KEY (user_id, zone)
    );
    CREATE TABLE tokens (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        label TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    CREATE TABLE media (
        id TEXT PRIMARY KEY,
        zone TEXT NOT NULL REFERENCES zones(id) ON DELETE RESTRICT,
        title TEXT NOT NULL,
        filename TEXT NOT NULL,
        path TEXT NOT NULL,
        duration_s REAL NOT NULL,
        loudness_lufs REAL,
        original_lufs REAL,
        sha256 TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        uploaded_by TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE broadcast_log (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        zone TEXT NOT NULL,
        kind TEXT NOT NULL,
        item TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        started_by TEXT NOT NULL,
        outcome TEXT
    );
    CREATE INDEX broadcast_log_time ON broadcast_log (started_at);
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        zone TEXT,
        remote TEXT,
        detail TEXT
    );
    """,
    # 2: loudspeaker online sessions (the source of availability figures), a
    #    server heartbeat to close what a crash left open, notes on log entries.
    """
    CREATE TABLE speaker_sessions (
        id INTEGER PRIMARY KEY,
        loudspeaker TEXT NOT NULL,
        zone TEXT NOT NULL,
        channel TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL
    );
    CREATE INDEX speaker_sessions_time ON speaker_sessions (started_at);
    ALTER TABLE broadcast_log ADD COLUMN detail TEXT NOT NULL DEFAULT '';
    CREATE TABLE meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
    """,
    # 3: scheduled programmes (playlists of media on target zones).
    """
    CREATE TABLE programmes (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        zones TEXT NOT NULL,
        media TEXT NOT NULL,
        start_local TEXT NOT NULL,
        duration_s REAL NOT NULL,
        recurrence TEXT NOT NULL,
        weekdays TEXT NOT NULL DEFAULT '[]',
        until TEXT,
        priority INTEGER NOT NULL DEFAULT 20,
        on_restart TEXT NOT NULL DEFAULT 'resume',
        on_preempt TEXT NOT NULL DEFAULT 'pause',
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class StorageError(Exception):
    """The database cannot be used (newer schema, unreadable secret)."""


class Conflict(Exception):
    """A write would break a uniqueness or reference rule; the message says which."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        hash_password(password)  # same cost as a real check
        return False
    _, salt, _ = stored.split("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)


_DUMMY_HASH = hash_password("no such user")


class KeySealer:
    """AES-GCM under the server secret; the device id is the associated data,
    so a sealed key copied onto another device's row does not open."""

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(secret)

    @classmethod
    def from_file(cls, path: Path) -> KeySealer:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
        try:
            secret = bytes.fromhex(path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise StorageError(f"{path}: cannot read the server secret (64 hex characters): {exc}") from exc
        if len(secret) != 32:
            raise StorageError(f"{path}: the server secret must be 64 hex characters")
        return cls(secret)

    def seal(self, device_id: str, key: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, key, device_id.encode("utf-8"))

    def open(self, device_id: str, sealed: bytes) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], device_id.encode("utf-8"))


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "total": self.total, "limit": self.limit, "offset": self.offset}


class Storage:
    def __init__(self, path: str | Path, sealer: KeySealer) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.sealer = sealer
        self._lock = threading.RLock()
        self._queue_lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self.migrate()

    # --- plumbing ----------------------------------------------------------

    @property
    def version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self, target: int = SCHEMA_VERSION) -> int:
        """Apply the migrations after the file's version, each in its own transaction."""
        with self._lock:
            current = self.version
            if current > SCHEMA_VERSION:
                raise StorageError(f"{self.path}: schema version {current} is newer than this server "
                                   f"({SCHEMA_VERSION}); upgrade broadcaster")
            for number in range(current + 1, target + 1):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for statement in MIGRATIONS[number - 1].split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version={number}")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            return self.version

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All-or-nothing: a failed request leaves nothing half-stored."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK")
                raise Conflict(str(exc)) from exc
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(row) for row in self._db.execute(sql, tuple(args))]

    def page(self, sql: str, args: Iterable[Any], limit: int, offset: int) -> Page:
        args = tuple(args)
        with self._lock:
            total = int(self._db.execute(f"SELECT COUNT(*) FROM ({sql})", args).fetchone()[0])
            rows = [dict(r) for r in self._db.execute(f"{sql} LIMIT ? OFFSET ?", (*args, limit, offset))]
        return Page(rows, total, limit, offset)

    def is_empty(self) -> bool:
        return not self.query("SELECT 1 FROM zones LIMIT 1")

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()

    # --- queued writes from the audio path ----------------------------------

    def enqueue(self, sql: str, args: tuple[Any, ...]) -> None:
        """A write that must not wait: applied at the next flush, in order. Takes only
        the queue's own lock, never the database's, so the audio path never waits on a commit."""
        with self._queue_lock:
            self._pending.append((sql, args))

    def flush(self) -> int:
        """Write the queued statements in one transaction; safe from any thread."""
        with self._queue_lock:
            pending, self._pending = self._pending, []
        if not pending:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in pending:
                    self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                with self._queue_lock:
                    self._pending[:0] = pending  # keep them for the next try: no log entry is lost
                raise
        return len(pending)

    # --- audit ---------------------------------------------------------------

    def audit(self, db: sqlite3.Connection, actor: str, action: str, target: str, zone: str | None,
              remote: str | None, detail: str = "") -> None:
        db.execute("INSERT INTO audit_log (at, actor, action, target, zone, remote, detail) VALUES (?,?,?,?,?,?,?)",
                   (time.time(), actor, action, target, zone, remote, detail))

    # --- users and tokens ------------------------------------------------------

    def add_user(self, name: str, role: str, zones: list[str], password: str | None = None) -> int:
        with self.transaction() as db:
            cursor = db.execute("INSERT INTO users (name, role, password_hash, created_at) VALUES (?,?,?,?)",
                                (name, role, hash_password(password) if password else None, time.time()))
            user_id = int(cursor.lastrowid or 0)
            for zone in zones:
                db.execute("INSERT INTO user_zones (user_id, zone) VALUES (?,?)", (user_id, zone))
            self.audit(db, "cli", "user.add", name, None, None, f"role={role} zones={','.join(zones)}")
        return user_id

    def new_token(self, user: str, label: str = "") -> str:
        token = "bct_" + secrets.token_urlsafe(32)
        with self.transaction() as db:
            row = db.execute("SELECT id FROM users WHERE name = ?", (user,)).fetchone()
            if row is None:
                raise Conflict(f"no user named {user!r}")
            db.execute("INSERT INTO tokens (token_hash, user_id, label, created_at) VALUES (?,?,?,?)",
                       (hash_token(token), row["id"], label, time.time()))
            self.audit(db, "cli", "token.create", user, None, None, label)
        return token

    def user_by_token(self, token: str) -> dict[str, Any] | None:
        rows = self.query("SELECT u.id, u.name, u.role FROM tokens t JOIN users u ON u.id = t.user_id "
                          "WHERE t.token_hash = ?", (hash_token(token),))
        return self._with_zones(rows[0]) if rows else None

    def user_by_password(self, name: str, password: str) -> dict[str, Any] | None:
        """Slow on purpose (scrypt): call from a worker thread. An unknown name costs
        the same as a wrong password, so timing does not reveal which names exist."""
        rows = self.query("SELECT id, name, role, password_hash FROM users WHERE name = ?", (name,))
        stored = rows[0].pop("password_hash") if rows else _DUMMY_HASH
        if not check_password(password, stored) or not rows or stored is None:
            return None
        return self._with_zones(rows[0])

    def _with_zones(self, user: dict[str, Any]) -> dict[str, Any]:
        user["zones"] = [r["zone"] for r in self.query("SELECT zone FROM user_zones WHERE user_id = ?",
                                                       (user["id"],))]
        return user


def seed_from_config(storage: Storage, config: Config) -> None:
    """First start: the configuration file's zones, channels and loudspeakers become the database."""
    now = time.time()
    with storage.transaction() as db:
        for zone in config.zones:
            db.execute("INSERT INTO zones (id, name, kind, parent) VALUES (?,?,?,?)",
                       (zone.id, zone.name, zone.kind, zone.parent))
        for c in config.channels:
            m = c.multicast
            db.execute("INSERT INTO channels (id, name, zone, public, multicast_group, multicast_port, multicast_ttl, "
                       "loop_path, loop_gain_db) VALUES (?,?,?,?,?,?,?,?,?)",
                       (c.id, c.name, c.zone, int(c.public), m.group if m else None, m.port if m else None,
                        m.ttl if m else None, str(c.loop) if c.loop else None, c.loop_gain_db))
        for s in config.loudspeakers:
            db.execute("INSERT INTO loudspeakers (id, zone, channel, key_sealed, created_at) VALUES (?,?,?,?,?)",
                       (s.id, s.zone, s.channel, storage.sealer.seal(s.id, s.key.encode("utf-8")), now))
        storage.audit(db, "system", "seed", config.path, None, None,
                      f"{len(config.zones)} zones, {len(config.channels)} channels, "
                      f"{len(config.loudspeakers)} loudspeakers")
