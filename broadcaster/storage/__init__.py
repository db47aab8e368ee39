"""Storage: the one place that talks SQL.

``db`` (connections, migrations, the thread pools), one repository module
per kind of record (``zones``, ``channels``, ``loudspeakers``, ``users``,
``media``, ``programmes``, ``relays``, ``bulletins``, ``logs``, ``reports``), and here the ``Storage``
object that carries them all: ``storage.db``, ``storage.zones``,
``storage.loudspeakers``, ... Each repository's docstring says which of its
methods are for the loop side (they return Deferreds and run in the pool)
and which are sync (CLI, start-up, tests).

``Storage`` itself keeps only the sync conveniences that start-up, the CLI
and tests need (``is_empty``, ``add_user``, ``new_token``, ``close``).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from broadcaster.storage.alerts import AlertRepository
from broadcaster.storage.bulletins import BulletinRepository
from broadcaster.storage.channels import ChannelRepository
from broadcaster.storage.crypto import KeySealer, check_password, hash_password, hash_token
from broadcaster.storage.db import Conflict, Database, Exists, Page, StorageError
from broadcaster.storage.link import LinkRepository
from broadcaster.storage.logs import SYSTEM, Actor, LogRepository, audit_txn
from broadcaster.storage.loudspeakers import LoudspeakerRepository
from broadcaster.storage.media import MediaRepository
from broadcaster.storage.migrations import MIGRATIONS, SCHEMA_VERSION
from broadcaster.storage.programmes import ProgrammeRepository
from broadcaster.storage.relays import RelayRepository
from broadcaster.storage.reports import ReportRepository
from broadcaster.storage.users import TOKEN_DAYS, UserRepository, add_txn
from broadcaster.storage.zones import ZoneRepository

if TYPE_CHECKING:
    from broadcaster.config import Config

log = logging.getLogger(__name__)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Actor", "Conflict", "Database", "Exists", "KeySealer", "Page",
           "Storage", "StorageError", "check_password", "hash_password", "hash_token", "seed_from_config"]


class Storage:
    def __init__(self, path: str | Path, sealer: KeySealer) -> None:
        self.db = Database(path)
        self.path = self.db.path
        self.sealer = sealer
        self.zones = ZoneRepository(self.db)
        self.channels = ChannelRepository(self.db)
        self.loudspeakers = LoudspeakerRepository(self.db, sealer)
        self.users = UserRepository(self.db)
        self.media = MediaRepository(self.db)
        self.programmes = ProgrammeRepository(self.db)
        self.relays = RelayRepository(self.db)
        self.bulletins = BulletinRepository(self.db)
        self.logs = LogRepository(self.db)
        self.alerts = AlertRepository(self.db, self.logs)
        self.reports = ReportRepository(self.db)
        self.link = LinkRepository(self.db)

    # --- a few sync conveniences: start-up, the CLI, tests --------------------------

    @property
    def version(self) -> int:
        return self.db.version

    def migrate(self, target: int = SCHEMA_VERSION) -> int:
        return self.db.migrate(target)

    def is_empty(self) -> bool:
        return not self.db.query_sync("SELECT 1 FROM zones LIMIT 1")

    def close(self) -> None:
        """Write what is queued, then close; a full disk at this point loses the queue (it is
        logged with its size) rather than stopping the shutdown."""
        try:
            self.logs.flush_sync()
        except sqlite3.Error as exc:
            log.error("storage: %d queued rows could not be written before closing: %s", self.logs.pending(), exc)
        self.db.close()

    def add_user(self, name: str, role: str, zones: list[str], password: str | None = None,
                 permissions: tuple[str, ...] = ()) -> int:
        return self.users.add_sync(name, role, zones, password, permissions=permissions)

    def new_token(self, user: str, label: str = "", days: float = TOKEN_DAYS, now: float | None = None) -> str:
        """A new API token's secret (tests, the CLI)."""
        return str(self.users.new_token_sync(user, label, days, now=now)["token"])


def seed_from_config(storage: Storage, config: Config) -> None:
    """First start: the configuration file's zones, channels and loudspeakers become the database."""
    now = time.time()
    hashed = [hash_password(user.password) for user in config.users]  # scrypt: before the transaction
    with storage.db.transaction() as db:
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
        for user, password_hash in zip(config.users, hashed, strict=True):
            add_txn(db, SYSTEM, user.name, user.role, list(user.zones), None, must_change=True,
                    password_hash=password_hash)
        audit_txn(db, SYSTEM, "seed", str(config.path), None,
                  f"{len(config.zones)} zones, {len(config.channels)} channels, "
                  f"{len(config.loudspeakers)} loudspeakers, {len(config.users)} users")
