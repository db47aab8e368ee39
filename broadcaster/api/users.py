"""/api/v1/users: the province's admin manages who may sign in, with what role, where.

Admin only (Action.PROVINCE). A password an admin sets (a new user, a reset)
is one the user must change at its next sign-in, and a reset ends the user's
console sessions. Nobody removes themselves, and no change leaves the
province without an admin (storage.users.LastAdmin, checked in the write's
own transaction). Every change is in the audit log (storage writes it with
the change). A user's API tokens are listed and revoked by api/tokens.py.
"""

from __future__ import annotations

from typing import Any

from broadcaster.api.call import ApiError, Call, Param, Reply, Route
from broadcaster.api.models import Page, SessionsEnded, User, UserCreate, UserPassword, UserUpdate
from broadcaster.control.auth import Action
from broadcaster.storage.users import LastAdmin

NAME = Param("name", "the user's sign-in name", where="path", required=True)


def _check_zones(call: Call, role: str, zones: list[str]) -> None:
    unknown = [z for z in zones if z not in call.app.zones]
    if unknown:
        raise ApiError(400, "bad_reference", f"zones: no zone {unknown[0]!r}")
    if role != "admin" and not zones:
        raise ApiError(400, "bad_value", f"zones: a {role} needs at least one zone (it sees nothing outside them)")


async def list_users(call: Call) -> Reply:
    call.authorize(Action.PROVINCE)
    limit, offset = call.paging()
    found = await call.storage.users.listing(limit, offset, call.app.wall())
    return 200, Page[User].model_validate(found.as_dict())


async def get_user(call: Call) -> Reply:
    call.authorize(Action.PROVINCE)
    return 200, User.model_validate(await _existing(call, call.params["name"]))


async def _existing(call: Call, name: str) -> dict[str, Any]:
    user = await call.storage.users.one(name, call.app.wall())
    if user is None:
        raise ApiError(404, "not_found", f"no user {name!r}")
    return user


async def create_user(call: Call) -> Reply:
    call.authorize(Action.PROVINCE)
    body = call.body(UserCreate)
    _check_zones(call, body.role, body.zones)
    await call.storage.users.add(body.name, body.role, sorted(set(body.zones)), body.password, call.actor,
                                 tuple(body.permissions), must_change=True)
    return 201, User.model_validate(await _existing(call, body.name))


async def update_user(call: Call) -> Reply:
    call.authorize(Action.PROVINCE)
    body = call.body(UserUpdate)
    name = call.params["name"]
    current = await _existing(call, name)
    role = body.role or str(current["role"])
    zones = body.zones if body.zones is not None else list(current["zones"])
    _check_zones(call, role, zones)
    try:
        user = await call.storage.users.update(
            name, call.actor, body.role, body.zones,
            tuple(body.permissions) if body.permissions is not None else None, call.app.wall())
    except LastAdmin as exc:
        raise ApiError(409, "last_admin", str(exc)) from None
    if user is None:
        raise ApiError(404, "not_found", f"no user {name!r}")
    return 200, User.model_validate(user)


async def reset_password(call: Call) -> Reply:
    call.authorize(Action.PROVINCE)
    body = call.body(UserPassword)
    name = call.params["name"]
    if name == call.principal.name:
        raise ApiError(409, "own_password", "change your own password with POST /api/v1/me/password")
    if not await call.storage.users.set_password(name, body.password, call.actor, must_change=True):
        raise ApiError(404, "not_found", f"no user {name!r}")
    return 200, User.model_validate(await _existing(call, name))


async def end_sessions(call: Call) -> Reply:
    call.authorize(Action.PROVINCE)
    name = call.params["name"]
    ended = await call.storage.users.end_sessions(name, call.actor)
    if ended is None:
        raise ApiError(404, "not_found", f"no user {name!r}")
    return 200, SessionsEnded(ended=ended)


async def delete_user(call: Call) -> Reply:
    call.authorize(Action.PROVINCE)
    name = call.params["name"]
    if name == call.principal.name:
        raise ApiError(409, "oneself", "an admin cannot remove themselves; another admin can")
    try:
        removed = await call.storage.users.delete(name, call.actor)
    except LastAdmin as exc:
        raise ApiError(409, "last_admin", str(exc)) from None
    if not removed:
        raise ApiError(404, "not_found", f"no user {name!r}")
    return 204, None


ROUTES = [
    Route("GET", "/api/v1/users", list_users, "Every user (admin): role, zones, permissions, tokens and sessions",
          Page[User], paged=True, errors=(403,)),
    Route("POST", "/api/v1/users", create_user, "Add a user (admin); it must change the password at first sign-in",
          User, 201, UserCreate, errors=(403, 409)),
    Route("GET", "/api/v1/users/{name}", get_user, "One user (admin)", User, errors=(403, 404), query=(NAME,)),
    Route("PATCH", "/api/v1/users/{name}", update_user, "Change a user's role, zones or permissions (admin); "
          "the last admin stays one (409 last_admin)", User, 200, UserUpdate, errors=(403, 404, 409),
          query=(NAME,)),
    Route("POST", "/api/v1/users/{name}/password", reset_password, "Reset a user's password (admin): its console "
          "sessions end and it must change the password at its next sign-in", User, 200, UserPassword,
          errors=(403, 404, 409), query=(NAME,)),
    Route("DELETE", "/api/v1/users/{name}/sessions", end_sessions, "Sign a user out everywhere (admin): every "
          "console session ends (API tokens stay: DELETE /api/v1/tokens/{id})", SessionsEnded,
          errors=(403, 404), query=(NAME,)),
    Route("DELETE", "/api/v1/users/{name}", delete_user, "Remove a user (admin; not oneself, not the last admin); "
          "its tokens and sessions end", None, 204, errors=(403, 404, 409), query=(NAME,)),
]
