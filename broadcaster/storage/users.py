"""Users, their zones, API tokens and passwords.

Loop side (Deferred): ``by_token``, ``by_password`` (the scrypt check runs in
the "auth" pool, apart from SQL, so a flood of wrong passwords delays only
logins), ``add``, ``new_token``. Sync (CLI, tests, and studio's worker
thread until it moves): ``by_token_sync``, ``by_password_sync``,
``add_sync``, ``new_token_sync``.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from typing import Any

from twisted.internet.defer import Deferred

from broadcaster.storage.crypto import check_password, dummy_hash, hash_password, hash_token
from broadcaster.storage.db import Conflict, Database, one, rows
from broadcaster.storage.logs import Actor, audit_txn

CLI = Actor("cli")


def _with_zones(conn: sqlite3.Connection, user: dict[str, Any]) -> dict[str, Any]:
    user["zones"] = [r["zone"] for r in rows(conn, "SELECT zone FROM user_zones WHERE user_id = ? ORDER BY zone",
                                             (user["id"],))]
    return user


def _by_token(conn: sqlite3.Connection, token: str) -> dict[str, Any] | None:
    user = one(conn, "SELECT u.id, u.name, u.role FROM tokens t JOIN users u ON u.id = t.user_id "
                     "WHERE t.token_hash = ?", (hash_token(token),))
    return _with_zones(conn, user) if user else None


def _by_name(conn: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    user = one(conn, "SELECT id, name, role, password_hash FROM users WHERE name = ?", (name,))
    return _with_zones(conn, user) if user else None


def _password_matches(user: dict[str, Any] | None, password: str) -> dict[str, Any] | None:
    """An unknown name costs the same as a wrong password: timing does not tell which names exist."""
    stored = user.pop("password_hash") if user else dummy_hash()
    if not check_password(password, stored) or user is None or stored is None:
        return None
    return user


def _add(conn: sqlite3.Connection, actor: Actor, name: str, role: str, zones: list[str],
         password: str | None) -> int:
    cursor = conn.execute("INSERT INTO users (name, role, password_hash, created_at) VALUES (?,?,?,?)",
                          (name, role, hash_password(password) if password else None, time.time()))
    user_id = int(cursor.lastrowid or 0)
    for zone in zones:
        conn.execute("INSERT INTO user_zones (user_id, zone) VALUES (?,?)", (user_id, zone))
    audit_txn(conn, actor, "user.add", name, None, f"role={role} zones={','.join(zones)}")
    return user_id


def _new_token(conn: sqlite3.Connection, actor: Actor, user: str, label: str) -> str:
    row = one(conn, "SELECT id FROM users WHERE name = ?", (user,))
    if row is None:
        raise Conflict(f"no user named {user!r}")
    token = "bct_" + secrets.token_urlsafe(32)
    conn.execute("INSERT INTO tokens (token_hash, user_id, label, created_at) VALUES (?,?,?,?)",
                 (hash_token(token), row["id"], label, time.time()))
    audit_txn(conn, actor, "token.create", user, None, label)
    return token


class UserRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def by_token(self, token: str) -> Deferred[dict[str, Any] | None]:
        """{id, name, role, zones} of the token's user, or None."""
        return self.db.lookup("users.by_token", _by_token, token)

    def by_token_sync(self, token: str) -> dict[str, Any] | None:
        return self.db.run_sync(_by_token, token)

    def by_password(self, name: str, password: str) -> Deferred[dict[str, Any] | None]:
        d = self.db.read("users.by_name", _by_name, name)
        d.addCallback(lambda user: self.db.offload("auth", _password_matches, user, password))
        return d

    def by_password_sync(self, name: str, password: str) -> dict[str, Any] | None:
        """Slow on purpose (scrypt): from a worker thread only."""
        return _password_matches(self.db.run_sync(_by_name, name), password)

    def add(self, name: str, role: str, zones: list[str], password: str | None = None,
            actor: Actor = CLI) -> Deferred[int]:
        return self.db.run("users.add", _add, actor, name, role, zones, password)

    def add_sync(self, name: str, role: str, zones: list[str], password: str | None = None,
                 actor: Actor = CLI) -> int:
        return self.db.run_sync(_add, actor, name, role, zones, password)

    def new_token(self, user: str, label: str = "", actor: Actor = CLI) -> Deferred[str]:
        return self.db.run("users.new_token", _new_token, actor, user, label)

    def new_token_sync(self, user: str, label: str = "", actor: Actor = CLI) -> str:
        return self.db.run_sync(_new_token, actor, user, label)
