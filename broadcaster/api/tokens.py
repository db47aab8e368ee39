"""/api/v1/tokens: a user's API tokens. Everyone may list, make and revoke their
own; an admin anyone's. Another user's token is answered as missing (404), the
same as one that never was, so ids tell nothing. A token made by an operator or
viewer expires no later than the token or console session it was made with, and a user holds at most
storage.users.MAX_TOKENS."""

from __future__ import annotations

from broadcaster.api.call import ApiError, Call, Param, Reply, Route
from broadcaster.api.models import Page, Token, TokenCreate, TokenCreated

USER = Param("user", "whose tokens (admin only); default the caller's own, 'all' for everyone's (admin)")


def _admin(call: Call) -> bool:
    return call.principal.role == "admin"


async def list_tokens(call: Call) -> Reply:
    limit, offset = call.paging()
    user: str | None = call.query.get("user") or call.principal.name
    if (user == "all" or user != call.principal.name) and not _admin(call):
        raise ApiError(403, "forbidden", "only an admin lists another user's tokens")
    page = await call.storage.users.tokens(None if user == "all" else user, limit, offset)
    return 200, Page[Token].model_validate(page.as_dict())


async def create_token(call: Call) -> Reply:
    body = call.body(TokenCreate)
    user = body.user or call.principal.name
    if user != call.principal.name and not _admin(call):
        raise ApiError(403, "forbidden", "only an admin makes a token for another user")
    most = call.app.config.api.token_days
    if body.days is not None and body.days > most:
        raise ApiError(400, "bad_value", f"days: at most {most} (api.token_days)")
    now = call.app.wall()
    days: float = body.days or most
    own = call.principal.token_expires_at
    if not _admin(call) and own is not None:
        # A token cannot outlive the one that made it: a leaked token (or a stolen console
        # session), revoked or expired, leaves no fresh one behind that lasts longer. Long-lived
        # tokens come from the CLI or an admin.
        days = min(days, max(0.0, own - now) / 86400)
    row = await call.storage.users.new_token(user, body.label, days, call.actor, now)
    return 201, TokenCreated.model_validate(row)


async def revoke_token(call: Call) -> Reply:
    token_id = call.params["id"]
    owner = None if _admin(call) else call.principal.name
    if not await call.storage.users.revoke_token(token_id, owner, call.actor):
        raise ApiError(404, "not_found", f"no token {token_id!r}")
    return 204, None


ROUTES = [
    Route("GET", "/api/v1/tokens", list_tokens, "The caller's API tokens (never their secrets)", Page[Token],
          paged=True, errors=(403,), query=(USER,)),
    Route("POST", "/api/v1/tokens", create_token, "Make an API token; its secret is in this reply only",
          TokenCreated, 201, TokenCreate, errors=(403, 409)),
    Route("DELETE", "/api/v1/tokens/{id}", revoke_token,
          "Revoke a token: refused from then on. Another user's is 404, like one that never was", None, 204,
          errors=(404,), query=(Param("id", "the token's id (tok_...)", where="path", required=True),)),
]
