"""Console sessions through the real HTTP site, on a fake clock: the cookie, CSRF, expiry, the limits
on guesses and on sessions kept, and passwords that must change."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from broadcaster.storage import Storage
from broadcaster.storage.users import MAX_SESSIONS
from tests.integration.memory import Server

PASSWORD = "mat-khau-cua-op-a"
JSON = {"Content-Type": "application/json"}


def with_passwords(storage: Storage) -> None:
    storage.users.add_sync("op-a", "operator", ["commune-a"], PASSWORD)
    storage.users.add_sync("admin", "admin", [], "mat-khau-quan-tri")


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path, before_start=with_passwords, storage_path=tmp_path / "db.sqlite")


def sign_in(server: Server, name: str = "op-a", password: str = PASSWORD) -> tuple[str, str]:
    status, body = server.http("POST", "/api/v1/session", {"name": name, "password": password}, who=None,
                               headers=JSON)
    assert status == 200, body
    match = re.search(r"Set-Cookie: bc_session=([^;]+);([^\r\n]*)", server.last_head)
    assert match, server.last_head
    return match.group(1), body["csrf"]


def as_console(server: Server, method: str, path: str, cookie: str, csrf: str | None = None,
               body: Any = None) -> tuple[int, Any]:
    headers = {"Cookie": f"bc_session={cookie}", **JSON}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return server.http(method, path, body, who=None, headers=headers)


def test_the_cookie_is_http_only_strict_and_not_secure_over_plain_http(server: Server) -> None:
    sign_in(server)
    line = next(x for x in server.last_head.split("\r\n") if x.startswith("Set-Cookie"))
    assert "HttpOnly" in line and "SameSite=Strict" in line and "Path=/" in line
    assert "Secure" not in line  # set only over TLS, where the browser would keep it
    assert "Cache-Control: no-store" in server.last_head
    # Behind a TLS-terminating proxy on this machine (nginx in docs/console.md), the cookie is Secure.
    server.http("POST", "/api/v1/session", {"name": "op-a", "password": PASSWORD}, who=None,
                headers={**JSON, "X-Forwarded-Proto": "https"})
    assert re.search(r"Set-Cookie: bc_session=[^\r\n]*; Secure", server.last_head)


def test_reads_need_no_csrf_and_writes_do(server: Server) -> None:
    cookie, csrf = sign_in(server)
    assert as_console(server, "GET", "/api/v1/zones", cookie)[0] == 200
    status, body = as_console(server, "POST", "/api/v1/tokens", cookie, body={"label": "x"})
    assert (status, body["error"]["code"]) == (403, "csrf")
    status, body = as_console(server, "POST", "/api/v1/tokens", cookie, csrf="x" + csrf[1:], body={"label": "x"})
    assert status == 403
    assert as_console(server, "POST", "/api/v1/tokens", cookie, csrf=csrf, body={"label": "x"})[0] == 201


def test_a_session_ends_at_its_time_and_at_sign_out(server: Server) -> None:
    cookie, csrf = sign_in(server)
    status, session = as_console(server, "GET", "/api/v1/session", cookie)
    assert status == 200 and session["name"] == "op-a" and session["csrf"] == csrf
    assert session["expires_at"] == pytest.approx(server.wall() + 12 * 3600, abs=5)
    server.reactor.advance(12 * 3600 + 1)  # api.session_hours, on the fake clock (no frames needed)
    status, body = as_console(server, "GET", "/api/v1/session", cookie)
    assert status == 401 and "expired" in body["error"]["message"]
    cookie, csrf = sign_in(server)
    assert as_console(server, "DELETE", "/api/v1/session", cookie, csrf=csrf)[0] == 204
    assert "bc_session=;" in server.last_head and "Max-Age=0" in server.last_head
    assert as_console(server, "GET", "/api/v1/session", cookie)[0] == 401


def test_an_api_token_in_the_cookie_is_refused(server: Server) -> None:
    status, body = as_console(server, "GET", "/api/v1/zones", server.tokens["op-a"])
    assert status == 401


def test_wrong_passwords_are_limited_per_address_with_the_studio_ingest(server: Server) -> None:
    for _ in range(10):  # LoginGuard's default, shared with the ingest and /admin (the same passwords)
        status, _ = server.http("POST", "/api/v1/session", {"name": "op-a", "password": "wrong"}, who=None,
                                headers=JSON)
        assert status == 401
    status, body = server.http("POST", "/api/v1/session", {"name": "op-a", "password": PASSWORD}, who=None,
                               headers=JSON)
    assert status == 429 and "Retry-After" in server.last_head
    assert body["error"]["code"] == "too_many_failures"
    # Icecast's /admin, the same users' passwords, refuses the same address unchecked too.
    status, _ = server.http("GET", "/admin/stats", who=None,
                            headers={"Authorization": "Basic b3AtYTptYXQta2hhdS1jdWEtb3AtYQ=="})
    assert status == 429
    server.reactor.advance(61)
    sign_in(server)


def test_signing_in_again_and_again_keeps_at_most_max_sessions(server: Server) -> None:
    first, _ = sign_in(server)
    for _ in range(MAX_SESSIONS + 2):
        last, _ = sign_in(server)
    rows = server.app.storage.db.query_sync("SELECT COUNT(*) AS n FROM tokens WHERE session = 1")
    assert rows[0]["n"] == MAX_SESSIONS
    assert as_console(server, "GET", "/api/v1/session", first)[0] == 401  # the oldest ended
    assert as_console(server, "GET", "/api/v1/session", last)[0] == 200
    # API tokens are apart: sessions never count against a user's MAX_TOKENS.
    assert server.http("POST", "/api/v1/tokens", {"label": "script"}, who="op-a")[0] == 201


def test_changing_a_password_ends_the_other_sessions(server: Server) -> None:
    here, csrf = sign_in(server)
    elsewhere, _ = sign_in(server)
    status, body = as_console(server, "POST", "/api/v1/me/password", here, csrf,
                              {"current": "wrong", "new": "mat-khau-moi-1"})
    assert (status, body["error"]["code"]) == (403, "wrong_password")
    status, body = as_console(server, "POST", "/api/v1/me/password", here, csrf, {"current": PASSWORD, "new": "short"})
    assert status == 400 and "new" in body["error"]["message"]
    assert as_console(server, "POST", "/api/v1/me/password", here, csrf,
                      {"current": PASSWORD, "new": "mat-khau-moi-1"})[0] == 204
    assert as_console(server, "GET", "/api/v1/session", here)[0] == 200
    assert as_console(server, "GET", "/api/v1/session", elsewhere)[0] == 401
    sign_in(server, password="mat-khau-moi-1")
    status, _ = server.http("POST", "/api/v1/session", {"name": "op-a", "password": PASSWORD}, who=None,
                            headers=JSON)
    assert status == 401


def test_a_password_chosen_by_someone_else_must_change_before_anything_else(tmp_path: Path) -> None:
    def demo(doc: dict[str, Any]) -> None:
        doc["users"] = [{"name": "demo", "role": "admin", "password": "admin"}]

    server = Server(tmp_path, patch=demo, before_start=lambda storage: None, storage_path=tmp_path / "db.sqlite")
    cookie, csrf = sign_in(server, "demo", "admin")
    status, session = as_console(server, "GET", "/api/v1/session", cookie)
    assert status == 200 and session["must_change_password"] is True
    status, body = as_console(server, "GET", "/api/v1/zones", cookie)
    assert (status, body["error"]["code"]) == (403, "must_change_password")
    assert as_console(server, "POST", "/api/v1/me/password", cookie, csrf,
                      {"current": "admin", "new": "mot-mat-khau-moi"})[0] == 204
    assert as_console(server, "GET", "/api/v1/zones", cookie)[0] == 200
    assert as_console(server, "GET", "/api/v1/session", cookie)[1]["must_change_password"] is False


def test_a_temporary_password_does_not_stop_the_users_scripts(server: Server) -> None:
    """An admin's reset is about the password: the user's API tokens go on working meanwhile."""
    server.app.storage.users.set_password_sync("op-a", "mat-khau-tam-thoi", must_change=True)
    assert server.http("GET", "/api/v1/zones", who="op-a")[0] == 200
    cookie, _ = sign_in(server, password="mat-khau-tam-thoi")
    assert as_console(server, "GET", "/api/v1/zones", cookie)[0] == 403


def test_a_token_made_in_the_console_lasts_no_longer_than_the_session(server: Server) -> None:
    """A stolen session must not leave a 90-day token behind that outlives a password reset."""
    cookie, csrf = sign_in(server)
    status, token = as_console(server, "POST", "/api/v1/tokens", cookie, csrf, {"label": "a script"})
    assert status == 201
    assert token["expires_at"] <= server.wall() + 12 * 3600 + 1  # api.session_hours, not api.token_days


def test_the_sign_in_takes_json_only_and_a_small_body(server: Server) -> None:
    status, body = server.http("POST", "/api/v1/session", raw=b"name=op-a&password=x", who=None,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")
    big = b'{"name": "op-a", "password": "' + b"x" * 5000 + b'"}'
    status, _ = server.http("POST", "/api/v1/session", raw=big, who=None, headers=JSON)
    assert status == 413
    # Any other API body from someone with neither a token nor a cookie is not even stored.
    status, _ = server.http("POST", "/api/v1/tokens", {"label": "x"}, who=None, headers=JSON)
    assert status == 401


def test_sign_ins_and_sign_outs_are_in_the_audit_log(server: Server) -> None:
    cookie, csrf = sign_in(server)
    as_console(server, "DELETE", "/api/v1/session", cookie, csrf)
    rows = server.app.storage.db.query_sync("SELECT action, actor, target FROM audit_log ORDER BY id")
    actions = [(r["action"], r["actor"], r["target"]) for r in rows]
    assert ("session.start", "op-a", "op-a") in actions and ("session.end", "op-a", "op-a") in actions


def test_ones_own_good_sign_ins_do_not_clear_guesses_at_other_users(server: Server) -> None:
    server.app.storage.users.add_sync("op-b", "operator", ["commune-b"], "mat-khau-cua-op-b")
    refused = 0
    for _ in range(3):
        for _ in range(4):
            status, _ = server.http("POST", "/api/v1/session", {"name": "op-a", "password": "guess"}, who=None,
                                    headers=JSON)
            refused += status == 429
        server.http("POST", "/api/v1/session", {"name": "op-b", "password": "mat-khau-cua-op-b"}, who=None,
                    headers=JSON)
    assert refused > 0, "interleaved good sign-ins must not reset the count of wrong ones"


def test_the_current_password_cannot_be_guessed_through_a_session(server: Server) -> None:
    cookie, csrf = sign_in(server)
    codes = [as_console(server, "POST", "/api/v1/me/password", cookie, csrf,
                        {"current": f"guess-{i}", "new": "mat-khau-moi-1"})[0] for i in range(12)]
    assert codes[:10] == [403] * 10 and codes[10:] == [429, 429]
    # The same limit holds the sign-in page of that address meanwhile.
    status, _ = server.http("POST", "/api/v1/session", {"name": "op-a", "password": PASSWORD}, who=None, headers=JSON)
    assert status == 429
