"""API tokens against the whole server in memory (issue 9): they expire, they are revoked
by id (the caller's own; an admin's any), their last use is kept to the minute, and a
token that is not the caller's is answered exactly like one that never was."""

from __future__ import annotations

from pathlib import Path

import pytest

from broadcaster.storage.users import MAX_TOKENS
from tests.integration.memory import Server

DAY = 86400.0


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    server = Server(tmp_path, patch=lambda doc: doc.setdefault("api", {}).update({"token_days": 30}))
    server.app.storage.add_user("op-b", "operator", ["commune-b"])
    server.tokens["op-b"] = server.app.storage.new_token("op-b", now=server.wall())
    return server


def make(server: Server, who: str, **body: object) -> dict[str, object]:
    status, reply = server.http("POST", "/api/v1/tokens", body, who=who)
    assert status == 201, reply
    return reply


def test_a_token_made_by_the_api_works_until_it_expires(server: Server) -> None:
    made = make(server, "op-a", label="console", days=2)
    assert made["user"] == "op-a" and made["expires_at"] == pytest.approx(server.wall() + 2 * DAY, abs=1)
    server.tokens["new"] = str(made["token"])
    status, me = server.http("GET", "/api/v1/me", who="new")
    assert status == 200 and me["name"] == "op-a" and me["token"] == made["id"]

    listed = server.http("GET", "/api/v1/tokens", who="op-a")[1]
    assert made["id"] in [t["id"] for t in listed["items"]]
    assert all("token" not in t for t in listed["items"]), "a secret is shown once, when made"

    old = server.app.storage.new_token("op-a", days=1, now=server.wall() - 1.5 * DAY)
    server.tokens["old"] = old
    status, reply = server.http("GET", "/api/v1/me", who="old")
    assert status == 401 and "has expired" in reply["error"]["message"]


def test_the_lifetime_defaults_to_the_setting_and_never_exceeds_it(server: Server) -> None:
    assert make(server, "op-a")["expires_at"] == pytest.approx(server.wall() + 30 * DAY, abs=1)
    status, reply = server.http("POST", "/api/v1/tokens", {"days": 31}, who="op-a")
    assert status == 400 and "api.token_days" in reply["error"]["message"]
    status, reply = server.http("POST", "/api/v1/tokens", {"days": 0}, who="op-a")
    assert status == 400


def test_revoked_tokens_are_refused_and_only_their_owner_or_an_admin_revokes(server: Server) -> None:
    mine = make(server, "op-a", label="script")
    server.tokens["script"] = str(mine["token"])

    status, not_yours = server.http("DELETE", f"/api/v1/tokens/{mine['id']}", who="op-b")
    status_none, missing = server.http("DELETE", "/api/v1/tokens/tok_000000000000", who="op-b")
    assert status == status_none == 404
    assert not_yours["error"]["message"].replace(str(mine["id"]), "X") == \
        missing["error"]["message"].replace("tok_000000000000", "X"), "the same answer: ids tell nothing"
    assert server.http("GET", "/api/v1/me", who="script")[0] == 200, "op-b could not revoke it"
    assert server.http("GET", "/api/v1/tokens?user=op-a", who="op-b")[0] == 403

    assert server.http("DELETE", f"/api/v1/tokens/{mine['id']}", who="op-a")[0] == 204
    assert server.http("GET", "/api/v1/me", who="script")[0] == 401
    assert server.http("DELETE", f"/api/v1/tokens/{mine['id']}", who="op-a")[0] == 404

    theirs = make(server, "admin", user="op-b", label="made by the province")
    everyone = server.http("GET", "/api/v1/tokens?user=all", who="admin")[1]
    assert {t["user"] for t in everyone["items"]} >= {"admin", "op-a", "op-b"}
    assert server.http("DELETE", f"/api/v1/tokens/{theirs['id']}", who="admin")[0] == 204
    assert server.http("POST", "/api/v1/tokens", {"user": "op-a"}, who="op-b")[0] == 403
    audit = server.app.storage.db.query_sync("SELECT action, actor, target FROM audit_log "
                                             "WHERE action LIKE 'token.%' ORDER BY id")
    assert {"action": "token.revoke", "actor": "admin", "target": "op-b"} in audit
    assert {"action": "token.revoke", "actor": "op-a", "target": "op-a"} in audit


def test_last_use_is_kept_to_the_minute_without_a_write_per_call(server: Server) -> None:
    made = make(server, "op-a")
    server.tokens["t"] = str(made["token"])

    def last_used() -> float | None:
        items = server.http("GET", "/api/v1/tokens?user=all&limit=500", who="admin")[1]["items"]
        return next(row["last_used_at"] for row in items if row["id"] == made["id"])

    assert last_used() is None
    server.http("GET", "/api/v1/me", who="t")
    first = last_used()
    assert first == pytest.approx(server.wall(), abs=1)
    server.advance(20)
    server.http("GET", "/api/v1/me", who="t")
    assert last_used() == first, "not written again within the minute"
    server.advance(45)
    server.http("GET", "/api/v1/me", who="t")
    assert last_used() == pytest.approx(server.wall(), abs=1)


def test_an_address_guessing_tokens_is_refused_unchecked_for_a_minute(server: Server) -> None:
    server.tokens["guess"] = "bct_not-a-token"
    lookups = []
    real = server.app.storage.users.by_token
    server.app.storage.users.by_token = lambda *a: (lookups.append(a), real(*a))[1]  # type: ignore[method-assign]
    for _ in range(30):
        assert server.http("GET", "/api/v1/me", who="guess")[0] == 401
    assert len(lookups) == 30
    status, reply = server.http("GET", "/api/v1/me", who="guess")
    assert status == 429 and reply["error"]["code"] == "too_many_failures", reply
    assert server.http("GET", "/api/v1/me", who="op-a")[0] == 429, "the address waits, whatever it sends"
    assert len(lookups) == 30, "refused before any lookup"
    server.advance(61)
    assert server.http("GET", "/api/v1/me", who="op-a")[0] == 200


def test_expired_tokens_do_not_lock_an_office_out(server: Server) -> None:
    """A forgotten script retrying with its expired token is not a guesser: its address is not limited."""
    server.tokens["old"] = server.app.storage.new_token("op-a", days=1, now=server.wall() - 2 * DAY)
    for _ in range(40):
        assert server.http("GET", "/api/v1/me", who="old")[0] == 401
    assert server.http("GET", "/api/v1/me", who="op-b")[0] == 200


def test_a_token_cannot_outlive_the_one_that_made_it_and_a_user_holds_a_bounded_number(server: Server) -> None:
    server.tokens["short"] = server.app.storage.new_token("op-a", days=2, now=server.wall())
    made = make(server, "short", days=30)
    assert made["expires_at"] == pytest.approx(server.wall() + 2 * DAY, abs=5), "no longer than its maker"
    assert make(server, "admin", days=30)["expires_at"] == pytest.approx(server.wall() + 30 * DAY, abs=5)
    held = server.http("GET", "/api/v1/tokens", who="op-b")[1]["total"]
    for _ in range(MAX_TOKENS - held):
        make(server, "op-b")
    status, reply = server.http("POST", "/api/v1/tokens", {}, who="op-b")
    assert status == 409 and "revoke one first" in reply["error"]["message"], reply


def test_only_an_admin_lists_everyone(server: Server) -> None:
    server.app.storage.add_user("all", "operator", ["commune-a"])
    server.tokens["all"] = server.app.storage.new_token("all", now=server.wall())
    status, _ = server.http("GET", "/api/v1/tokens?user=all", who="all")
    assert status == 403, "a user named 'all' does not see everyone's tokens"
