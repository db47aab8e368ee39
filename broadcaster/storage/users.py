"""Users, their zones, API tokens and passwords.

Loop side (Deferred): ``by_token``, ``by_password`` (the scrypt check runs in
the "auth" pool, apart from SQL, so a flood of wrong passwords delays only
logins), ``add``, ``new_token``, ``tokens``, ``revoke_token``,
``token_used``; the admin's ``listing``, ``update``, ``delete`` and
``end_sessions`` (api/users.py). Sync (CLI, tests): the same with ``_sync``.

The province keeps at least one admin: an update or removal that would leave
none is refused (``LastAdmin``) inside the same write transaction, so two
admins demoting each other at once cannot both succeed.

A token is a secret shown once (``bct_...``, stored only as its SHA-256) and a
public id (``tok_...``) it is listed and revoked by. It expires (``expires_at``);
an expired or revoked token is refused like one never made. ``last_used_at``
is written at most once a minute per token (``TOUCH_EVERY_S``), off the
request: a busy console does not make a write per call.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from typing import Any

from twisted.internet.defer import Deferred

from broadcaster.storage.crypto import check_password, dummy_hash, hash_password, hash_token
from broadcaster.storage.db import Conflict, Database, Exists, Page, one, page, rows
from broadcaster.storage.logs import Actor, audit_txn

CLI = Actor("cli")
TOKEN_DAYS = 90.0       # the default lifetime (config: api.token_days)
TOUCH_EVERY_S = 60.0    # last_used_at's resolution
MAX_TOKENS = 50         # per user: a login cannot grow the tokens table (and the audit log) without end
MAX_SESSIONS = 10       # console sign-ins kept per user (a phone, an office PC, ...): the oldest ends first


class LastAdmin(Conflict):
    """The change would leave the province without an admin."""


def _with_zones(conn: sqlite3.Connection, user: dict[str, Any]) -> dict[str, Any]:
    user["zones"] = [r["zone"] for r in rows(conn, "SELECT zone FROM user_zones WHERE user_id = ? ORDER BY zone",
                                             (user["id"],))]
    return user


def _by_token(conn: sqlite3.Connection, token: str, now: float) -> dict[str, Any] | None:
    user = one(conn, "SELECT u.id, u.name, u.role, u.permissions, u.must_change_password, t.id AS token_id, "
                     "t.last_used_at AS token_used_at, t.expires_at AS token_expires_at, t.session "
                     "FROM tokens t JOIN users u ON u.id = t.user_id "
                     "WHERE t.token_hash = ?", (hash_token(token),))
    if user is None:
        return None
    if user["token_expires_at"] is not None and user["token_expires_at"] <= now:
        return {"expired": True, "token_id": user["token_id"]}  # nobody's: not a login
    return _with_zones(conn, user)


def _by_name(conn: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    user = one(conn, "SELECT id, name, role, permissions, must_change_password, password_hash FROM users "
                     "WHERE name = ?", (name,))
    return _with_zones(conn, user) if user else None


def _password_matches(user: dict[str, Any] | None, password: str) -> dict[str, Any] | None:
    """An unknown name costs the same as a wrong password: timing does not tell which names exist."""
    stored = user.pop("password_hash") if user else dummy_hash()
    if not check_password(password, stored) or user is None or stored is None:
        return None
    return user


def add_txn(conn: sqlite3.Connection, actor: Actor, name: str, role: str, zones: list[str],
         password: str | None, permissions: tuple[str, ...] = (), must_change: bool = False,
         password_hash: str | None = None) -> int:
    """``password_hash``: one hashed already (the seed hashes before its transaction)."""
    if one(conn, "SELECT id FROM users WHERE name = ?", (name,)) is not None:
        raise Exists(f"a user named {name!r} exists")
    if password and password_hash is None:
        password_hash = hash_password(password)
    cursor = conn.execute("INSERT INTO users (name, role, password_hash, created_at, permissions, "
                          "must_change_password) VALUES (?,?,?,?,?,?)",
                          (name, role, password_hash, time.time(),
                           json.dumps(sorted(set(permissions))), int(must_change)))
    user_id = int(cursor.lastrowid or 0)
    for zone in zones:
        conn.execute("INSERT INTO user_zones (user_id, zone) VALUES (?,?)", (user_id, zone))
    audit_txn(conn, actor, "user.add", name, None, f"role={role} zones={','.join(zones)}"
              + (f" permissions={','.join(sorted(set(permissions)))}" if permissions else ""))
    return user_id


def _new_token(conn: sqlite3.Connection, actor: Actor, user: str, label: str, days: float,
               now: float) -> dict[str, Any]:
    row = one(conn, "SELECT id FROM users WHERE name = ?", (user,))
    if row is None:
        raise Conflict(f"no user named {user!r}")
    held = conn.execute("SELECT COUNT(*) FROM tokens WHERE user_id = ? AND session = 0 "
                        "AND (expires_at IS NULL OR expires_at > ?)", (row["id"], now)).fetchone()[0]
    if held >= MAX_TOKENS:
        raise Conflict(f"{user} has {held} tokens, the most a user may hold; revoke one first")
    token = "bct_" + secrets.token_urlsafe(32)
    token_id = "tok_" + secrets.token_hex(6)
    conn.execute("INSERT INTO tokens (token_hash, id, user_id, label, created_at, expires_at) VALUES (?,?,?,?,?,?)",
                 (hash_token(token), token_id, row["id"], label, now, now + days * 86400))
    audit_txn(conn, actor, "token.create", user, None, f"{token_id} {label}".strip())
    return {**_token_row(conn, token_id), "token": token}


_TOKEN_COLUMNS = ("SELECT t.id, u.name AS user, t.label, t.created_at, t.expires_at, t.last_used_at, t.session "
                  "FROM tokens t JOIN users u ON u.id = t.user_id")


def _new_session(conn: sqlite3.Connection, actor: Actor, user_id: int, name: str, hours: float,
                 now: float) -> dict[str, Any]:
    """A console sign-in: a token that lives in a cookie. A user keeps at most MAX_SESSIONS (the
    oldest end first), and expired ones are removed here, so signing in again and again grows nothing."""
    conn.execute("DELETE FROM tokens WHERE user_id = ? AND session = 1 AND expires_at <= ?", (user_id, now))
    conn.execute("DELETE FROM tokens WHERE id IN (SELECT id FROM tokens WHERE user_id = ? AND session = 1 "
                 "ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?)", (user_id, MAX_SESSIONS - 1))
    token = "bcs_" + secrets.token_urlsafe(32)
    token_id = "tok_" + secrets.token_hex(6)
    conn.execute("INSERT INTO tokens (token_hash, id, user_id, label, created_at, expires_at, session) "
                 "VALUES (?,?,?,?,?,?,1)", (hash_token(token), token_id, user_id, "console session", now,
                                            now + hours * 3600))
    audit_txn(conn, actor, "session.start", name, None, token_id)
    return {**_token_row(conn, token_id), "token": token}


def _end_session(conn: sqlite3.Connection, actor: Actor, token_id: str) -> None:
    row = one(conn, f"{_TOKEN_COLUMNS} WHERE t.id = ? AND t.session = 1", (token_id,))
    if row is not None:
        conn.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
        audit_txn(conn, actor, "session.end", row["user"], None, token_id)


def _set_password(conn: sqlite3.Connection, actor: Actor, name: str, password_hash: str,
                  must_change: bool, keep_token: str | None) -> bool:
    """A new password (hashed off the database's thread). Every console session of the user ends but
    ``keep_token`` (the one changing it), so a stolen session does not outlive a reset."""
    row = one(conn, "SELECT id FROM users WHERE name = ?", (name,))
    if row is None:
        return False
    conn.execute("UPDATE users SET password_hash = ?, must_change_password = ? WHERE id = ?",
                 (password_hash, int(must_change), row["id"]))
    conn.execute("DELETE FROM tokens WHERE user_id = ? AND session = 1 AND id IS NOT ?", (row["id"], keep_token))
    audit_txn(conn, actor, "user.password", name, None, "reset: to be changed at sign-in" if must_change else "")
    return True


def _token_row(conn: sqlite3.Connection, token_id: str) -> dict[str, Any]:
    row = one(conn, f"{_TOKEN_COLUMNS} WHERE t.id = ?", (token_id,))
    assert row is not None
    return row


def _tokens(conn: sqlite3.Connection, user: str | None, limit: int, offset: int) -> Page:
    if user is None:
        return page(conn, f"{_TOKEN_COLUMNS} ORDER BY t.created_at DESC, t.id", (), limit, offset)
    return page(conn, f"{_TOKEN_COLUMNS} WHERE u.name = ? ORDER BY t.created_at DESC, t.id", (user,), limit, offset)


def _revoke(conn: sqlite3.Connection, actor: Actor, token_id: str, owner: str | None) -> bool:
    """Whether a token was revoked: one of ``owner``'s (any user's when None)."""
    row = one(conn, f"{_TOKEN_COLUMNS} WHERE t.id = ?", (token_id,))
    if row is None or (owner is not None and row["user"] != owner):
        return False
    conn.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
    audit_txn(conn, actor, "token.revoke", row["user"], None, f"{token_id} {row['label']}".strip())
    return True


def _touch(conn: sqlite3.Connection, token_id: str, now: float) -> None:
    conn.execute("UPDATE tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                 (now, token_id, now - TOUCH_EVERY_S))


_USER_COLUMNS = (
    "SELECT u.id, u.name, u.role, u.permissions, u.must_change_password, u.created_at, "
    "(SELECT COUNT(*) FROM tokens t WHERE t.user_id = u.id AND t.session = 0 "
    " AND (t.expires_at IS NULL OR t.expires_at > ?)) AS tokens, "
    "(SELECT COUNT(*) FROM tokens t WHERE t.user_id = u.id AND t.session = 1 "
    " AND (t.expires_at IS NULL OR t.expires_at > ?)) AS sessions FROM users u")


def _listed(conn: sqlite3.Connection, user: dict[str, Any]) -> dict[str, Any]:
    user = _with_zones(conn, user)
    user["permissions"] = json.loads(user["permissions"] or "[]")
    user["must_change_password"] = bool(user["must_change_password"])
    user.pop("id")
    return user


def _listing(conn: sqlite3.Connection, now: float, limit: int, offset: int) -> Page:
    found = page(conn, f"{_USER_COLUMNS} ORDER BY u.name", (now, now), limit, offset)
    return Page([_listed(conn, u) for u in found.items], found.total, limit, offset)


def _one(conn: sqlite3.Connection, name: str, now: float) -> dict[str, Any] | None:
    user = one(conn, f"{_USER_COLUMNS} WHERE u.name = ?", (now, now, name))
    return _listed(conn, user) if user else None


def _keeps_an_admin(conn: sqlite3.Connection, user_id: int) -> None:
    left = conn.execute("SELECT COUNT(*) FROM users WHERE role = 'admin' AND id != ?", (user_id,)).fetchone()[0]
    if not left:
        raise LastAdmin("the province needs at least one admin: make another user admin first")


def _update(conn: sqlite3.Connection, actor: Actor, name: str, role: str | None, zones: list[str] | None,
            permissions: tuple[str, ...] | None, now: float) -> dict[str, Any] | None:
    """Change what is given (None: kept); the user's row after, or None if there is none."""
    row = one(conn, "SELECT id, role FROM users WHERE name = ?", (name,))
    if row is None:
        return None
    changed: list[str] = []
    if role is not None and role != row["role"]:
        if row["role"] == "admin":
            _keeps_an_admin(conn, row["id"])
        conn.execute("UPDATE users SET role = ? WHERE id = ?", (role, row["id"]))
        changed.append(f"role={role}")
    if zones is not None:
        conn.execute("DELETE FROM user_zones WHERE user_id = ?", (row["id"],))
        for zone in sorted(set(zones)):
            conn.execute("INSERT INTO user_zones (user_id, zone) VALUES (?,?)", (row["id"], zone))
        changed.append(f"zones={','.join(sorted(set(zones)))}")
    if permissions is not None:
        conn.execute("UPDATE users SET permissions = ? WHERE id = ?",
                     (json.dumps(sorted(set(permissions))), row["id"]))
        changed.append(f"permissions={','.join(sorted(set(permissions)))}")
    if changed:
        audit_txn(conn, actor, "user.update", name, None, " ".join(changed))
    return _one(conn, name, now)


def _delete(conn: sqlite3.Connection, actor: Actor, name: str) -> bool:
    """Whether the user was removed; its tokens and sessions go with it (ON DELETE CASCADE)."""
    row = one(conn, "SELECT id, role FROM users WHERE name = ?", (name,))
    if row is None:
        return False
    if row["role"] == "admin":
        _keeps_an_admin(conn, row["id"])
    held = conn.execute("SELECT COUNT(*) FROM tokens WHERE user_id = ?", (row["id"],)).fetchone()[0]
    conn.execute("DELETE FROM users WHERE id = ?", (row["id"],))
    audit_txn(conn, actor, "user.delete", name, None, f"role={row['role']} tokens and sessions ended: {held}")
    return True


def _end_sessions(conn: sqlite3.Connection, actor: Actor, name: str) -> int | None:
    """How many console sessions of the user ended; None if there is no such user."""
    row = one(conn, "SELECT id FROM users WHERE name = ?", (name,))
    if row is None:
        return None
    ended = conn.execute("DELETE FROM tokens WHERE user_id = ? AND session = 1", (row["id"],)).rowcount
    audit_txn(conn, actor, "session.end", name, None, f"all {ended} ended by an admin")
    return int(ended)


class UserRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def by_token(self, token: str, now: float | None = None) -> Deferred[dict[str, Any] | None]:
        """{id, name, role, zones, token_id, token_used_at, token_expires_at} of the token's user;
        {"expired": True, "token_id"} for one that expired; None for one unknown or revoked."""
        return self.db.lookup("users.by_token", _by_token, token, time.time() if now is None else now)

    def by_token_sync(self, token: str, now: float | None = None) -> dict[str, Any] | None:
        return self.db.run_sync(_by_token, token, time.time() if now is None else now)

    def token_used(self, token_id: str, now: float) -> Deferred[None]:
        return self.db.run("users.token_used", _touch, token_id, now)

    def by_password(self, name: str, password: str) -> Deferred[dict[str, Any] | None]:
        d = self.db.read("users.by_name", _by_name, name)
        d.addCallback(lambda user: self.db.offload("auth", _password_matches, user, password))
        return d

    def by_password_sync(self, name: str, password: str) -> dict[str, Any] | None:
        """Slow on purpose (scrypt): from a worker thread only."""
        return _password_matches(self.db.run_sync(_by_name, name), password)

    def add(self, name: str, role: str, zones: list[str], password: str | None = None,
            actor: Actor = CLI, permissions: tuple[str, ...] = (), must_change: bool = False) -> Deferred[int]:
        """Exists if the name is taken. scrypt runs in the auth pool, the write in storage's."""
        if not password:
            return self.db.run("users.add", add_txn, actor, name, role, zones, None, permissions, must_change)
        hashed = self.db.offload("auth", hash_password, password)
        return hashed.addCallback(lambda value: self.db.run("users.add", add_txn, actor, name, role, zones, None,
                                                            permissions, must_change, value))

    def listing(self, limit: int, offset: int, now: float | None = None) -> Deferred[Page]:
        """Every user by name, with zones, permissions and how many live tokens and sessions it holds."""
        return self.db.read("users.listing", _listing, time.time() if now is None else now, limit, offset)

    def one(self, name: str, now: float | None = None) -> Deferred[dict[str, Any] | None]:
        return self.db.read("users.one", _one, name, time.time() if now is None else now)

    def update(self, name: str, actor: Actor, role: str | None = None, zones: list[str] | None = None,
               permissions: tuple[str, ...] | None = None, now: float | None = None) -> Deferred[dict[str, Any] | None]:
        """The user's row after the change; None if there is no such user; LastAdmin if it would leave none."""
        return self.db.run("users.update", _update, actor, name, role, zones, permissions,
                           time.time() if now is None else now)

    def delete(self, name: str, actor: Actor) -> Deferred[bool]:
        return self.db.run("users.delete", _delete, actor, name)

    def end_sessions(self, name: str, actor: Actor) -> Deferred[int | None]:
        return self.db.run("users.end_sessions", _end_sessions, actor, name)

    def add_sync(self, name: str, role: str, zones: list[str], password: str | None = None,
                 actor: Actor = CLI, permissions: tuple[str, ...] = (), must_change: bool = False) -> int:
        """``permissions``: granted beyond the role's (control.auth.PERMISSIONS); ``must_change``: the
        password was chosen by someone else (the demo's), so the console asks for a new one first."""
        return self.db.run_sync(add_txn, actor, name, role, zones, password, permissions, must_change)

    def new_token(self, user: str, label: str = "", days: float = TOKEN_DAYS, actor: Actor = CLI,
                  now: float | None = None) -> Deferred[dict[str, Any]]:
        """The new token's row, with its secret (``token``): the only time it is seen."""
        return self.db.run("users.new_token", _new_token, actor, user, label, days,
                           time.time() if now is None else now)

    def new_token_sync(self, user: str, label: str = "", days: float = TOKEN_DAYS, actor: Actor = CLI,
                       now: float | None = None) -> dict[str, Any]:
        return self.db.run_sync(_new_token, actor, user, label, days, time.time() if now is None else now)

    def new_session(self, user: dict[str, Any], hours: float, actor: Actor, now: float) -> Deferred[dict[str, Any]]:
        """``user``: as by_password found it. The row has the cookie's secret (``token``)."""
        return self.db.run("users.new_session", _new_session, actor, user["id"], user["name"], hours, now)

    def end_session(self, token_id: str, actor: Actor) -> Deferred[None]:
        return self.db.run("users.end_session", _end_session, actor, token_id)

    def set_password(self, name: str, password: str, actor: Actor, must_change: bool = False,
                     keep_token: str | None = None) -> Deferred[bool]:
        """Whether the user exists. scrypt runs in the auth pool, the write in storage's."""
        hashed = self.db.offload("auth", hash_password, password)
        return hashed.addCallback(lambda value: self.db.run("users.set_password", _set_password, actor, name,
                                                            value, must_change, keep_token))

    def set_password_sync(self, name: str, password: str, actor: Actor = CLI, must_change: bool = False) -> bool:
        return self.db.run_sync(_set_password, actor, name, hash_password(password), must_change, None)

    def tokens(self, user: str | None, limit: int, offset: int) -> Deferred[Page]:
        """Newest first; ``user`` None lists everyone's. Secrets are never stored, so never listed."""
        return self.db.read("users.tokens", _tokens, user, limit, offset)

    def tokens_sync(self, user: str | None, limit: int = 500, offset: int = 0) -> Page:
        return self.db.run_sync(_tokens, user, limit, offset)

    def revoke_token(self, token_id: str, owner: str | None, actor: Actor = CLI) -> Deferred[bool]:
        return self.db.run("users.revoke_token", _revoke, actor, token_id, owner)

    def revoke_token_sync(self, token_id: str, owner: str | None = None, actor: Actor = CLI) -> bool:
        return self.db.run_sync(_revoke, actor, token_id, owner)
