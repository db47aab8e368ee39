"""The users API (issue 13) against the whole server in memory: admin only, a new or reset
password must be changed at sign-in, a reset and "sign out everywhere" end console sessions,
nobody removes themselves, the last admin stays, and every change is audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broadcaster.storage import Actor
from broadcaster.storage.users import _new_session
from tests.integration.memory import Server

PASSWORD = "mat-khau-moi-1"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    return Server(tmp_path)


def sign_in(server: Server, name: str, password: str) -> dict[str, Any] | None:
    """As POST /api/v1/session does: the password checked, then a console session started."""
    users = server.app.storage.users
    user = users.by_password_sync(name, password)
    if user is not None:
        server.app.storage.db.run_sync(_new_session, Actor(name), user["id"], name, 1.0, server.wall())
    return user


def audit(server: Server) -> list[dict[str, object]]:
    return server.app.storage.db.query_sync("SELECT action, actor, target, detail FROM audit_log "
                                            "WHERE action LIKE 'user.%' OR action = 'session.end' ORDER BY id")


def test_an_admin_creates_a_user_who_must_change_the_password(server: Server) -> None:
    status, user = server.http("POST", "/api/v1/users", {"name": "editor", "role": "viewer", "zones": ["commune-a"],
                                                         "permissions": ["bulletin.create"], "password": PASSWORD})
    assert status == 201, user
    assert user["must_change_password"] is True and user["permissions"] == ["bulletin.create"]
    assert user["zones"] == ["commune-a"] and user["tokens"] == 0 and user["sessions"] == 0
    signed = sign_in(server, "editor", PASSWORD)
    assert signed is not None and signed["must_change_password"]
    listed = server.http("GET", "/api/v1/users")[1]
    assert [u["name"] for u in listed["items"]] == ["admin", "editor", "op-a"] and listed["total"] == 3
    assert next(u for u in listed["items"] if u["name"] == "editor")["sessions"] == 1
    assert {"action": "user.add", "actor": "admin", "target": "editor",
            "detail": "role=viewer zones=commune-a permissions=bulletin.create"} in audit(server)


def test_bad_users_are_refused_by_name(server: Server) -> None:
    cases = [({"name": "x", "role": "viewer", "zones": ["commune-a"], "password": "short"}, 400, "password"),
             ({"name": "x", "role": "viewer", "zones": [], "password": PASSWORD}, 400, "at least one zone"),
             ({"name": "x", "role": "viewer", "zones": ["nowhere"], "password": PASSWORD}, 400, "nowhere"),
             ({"name": "x y", "role": "viewer", "zones": ["commune-a"], "password": PASSWORD}, 400, "name"),
             ({"name": "x", "role": "king", "zones": ["commune-a"], "password": PASSWORD}, 400, "role"),
             ({"name": "x", "role": "viewer", "zones": ["commune-a"], "permissions": ["alert.send"],
               "password": PASSWORD}, 400, "permissions"),
             ({"name": "op-a", "role": "viewer", "zones": ["commune-a"], "password": PASSWORD}, 409, "op-a")]
    for body, status, word in cases:
        got, reply = server.http("POST", "/api/v1/users", body)
        assert got == status and word in reply["error"]["message"], (body, reply)
    assert server.http("GET", "/api/v1/users")[1]["total"] == 2


def test_only_an_admin_manages_users(server: Server) -> None:
    for method, path, body in (("GET", "/api/v1/users", None), ("GET", "/api/v1/users/admin", None),
                               ("POST", "/api/v1/users", {"name": "x", "role": "admin", "password": PASSWORD}),
                               ("PATCH", "/api/v1/users/op-a", {"role": "admin"}),
                               ("POST", "/api/v1/users/admin/password", {"password": PASSWORD}),
                               ("DELETE", "/api/v1/users/admin/sessions", None),
                               ("DELETE", "/api/v1/users/admin", None)):
        status, reply = server.http(method, path, body, who="op-a")
        assert status == 403 and reply["error"]["code"] == "forbidden", (method, path)
    assert server.http("GET", "/api/v1/users/admin")[1]["role"] == "admin"


def test_roles_zones_and_permissions_change_and_take_effect_at_once(server: Server) -> None:
    status, user = server.http("PATCH", "/api/v1/users/op-a", {"role": "viewer", "zones": ["commune-b"],
                                                               "permissions": ["bulletin.approve"]})
    assert status == 200 and user["role"] == "viewer" and user["zones"] == ["commune-b"]
    assert user["permissions"] == ["bulletin.approve"]
    me = server.http("GET", "/api/v1/me", who="op-a")[1]
    assert me["role"] == "viewer" and me["zones"] == ["commune-b"]
    assert server.http("PATCH", "/api/v1/users/op-a", {"zones": []})[0] == 400
    assert server.http("PATCH", "/api/v1/users/nobody", {"role": "viewer"})[0] == 404
    assert any(a["action"] == "user.update" and a["target"] == "op-a" for a in audit(server))


def test_a_reset_ends_sessions_and_must_be_changed(server: Server) -> None:
    server.http("POST", "/api/v1/users", {"name": "clerk", "role": "viewer", "zones": ["commune-a"],
                                          "password": PASSWORD})
    server.app.storage.users.set_password_sync("clerk", PASSWORD)  # as if the user had changed it
    assert not sign_in(server, "clerk", PASSWORD)["must_change_password"]  # type: ignore[index]
    status, user = server.http("POST", "/api/v1/users/clerk/password", {"password": "another-one-2"})
    assert status == 200 and user["must_change_password"] is True and user["sessions"] == 0
    assert sign_in(server, "clerk", PASSWORD) is None
    assert sign_in(server, "clerk", "another-one-2")["must_change_password"]  # type: ignore[index]
    assert server.http("POST", "/api/v1/users/admin/password", {"password": "another-one-2"})[0] == 409
    assert server.http("POST", "/api/v1/users/clerk/password", {"password": "short"})[0] == 400
    ended = server.http("DELETE", "/api/v1/users/clerk/sessions")[1]
    assert ended == {"ended": 1}
    assert server.http("GET", "/api/v1/users/clerk")[1]["sessions"] == 0


def test_nobody_removes_themselves_and_the_last_admin_stays(server: Server) -> None:
    status, reply = server.http("DELETE", "/api/v1/users/admin")
    assert status == 409 and reply["error"]["code"] == "oneself"
    status, reply = server.http("PATCH", "/api/v1/users/admin", {"role": "operator", "zones": ["commune-a"]})
    assert status == 409 and reply["error"]["code"] == "last_admin"
    server.http("POST", "/api/v1/users", {"name": "second", "role": "admin", "password": PASSWORD})
    assert server.http("PATCH", "/api/v1/users/second", {"role": "viewer", "zones": ["commune-a"]})[0] == 200
    assert server.http("PATCH", "/api/v1/users/second", {"role": "admin"})[0] == 200
    # op-a's token goes with it
    assert server.http("DELETE", "/api/v1/users/op-a")[0] == 204
    assert server.http("GET", "/api/v1/me", who="op-a")[0] == 401
    assert server.http("DELETE", "/api/v1/users/op-a")[0] == 404
    assert server.http("PATCH", "/api/v1/users/admin", {"role": "viewer", "zones": ["commune-a"]})[0] == 200
    assert {"action": "user.delete", "actor": "admin", "target": "op-a",
            "detail": "role=operator tokens and sessions ended: 1"} in audit(server)
