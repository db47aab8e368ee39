"""The console's shell in Chromium: sign-in, the cookie and CSRF, sign-out, the forced password change,
the menu by role, and a phone-sized screen."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.browser.conftest import PASSWORD, Console, make_driver, quit_driver
from tests.conftest import start_server, write_config


def test_an_operator_signs_in_and_the_cookie_is_http_only_and_strict(console: Console) -> None:
    console.sign_in("op-a")
    assert "op-a" in console.find("#who").text
    cookie = console.driver.get_cookie("bc_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    # The page's scripts cannot read the session's secret.
    assert "bc_session" not in console.driver.execute_script("return document.cookie")
    console.screenshot("overview-desktop")
    assert console.console_errors() == []


def test_a_wrong_password_is_said_in_vietnamese_and_no_cookie_is_set(console: Console) -> None:
    console.driver.delete_all_cookies()
    console.driver.get(console.url("/"))
    console.fill("#signin input[name=name]", "op-a")
    console.fill("#signin input[name=password]", "not-the-password")
    console.find("#signin button[type=submit]").click()
    error = console.wait("#signin .error")
    assert "Sai tên đăng nhập hoặc mật khẩu" in error.text
    assert console.session_cookie() is None
    console.screenshot("signin-wrong-password")


def test_signing_out_ends_the_session_on_the_server(console: Console) -> None:
    console.sign_in("viewer-a")
    secret = console.session_cookie()
    assert secret
    console.sign_out()
    # The old cookie, replayed by a script, is refused: the session ended on the server, not only in the browser.
    request = urllib.request.Request(console.url("/api/v1/session"), headers={"Cookie": f"bc_session={secret}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401


def test_a_write_with_the_cookie_but_without_the_csrf_header_is_refused(console: Console) -> None:
    console.sign_in("op-a")
    secret = console.session_cookie()
    # As a form on another site would send it: the cookie rides along, the CSRF value cannot.
    body = json.dumps({"label": "forged"}).encode()
    for headers in ({}, {"X-CSRF-Token": "guessed"}):
        request = urllib.request.Request(console.url("/api/v1/tokens"), data=body, method="POST",
                                         headers={"Cookie": f"bc_session={secret}", "Content-Type": "application/json",
                                                  **headers})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
        assert json.loads(refused.value.read())["error"]["code"] == "csrf"
    # The page itself writes with its header: the same call from inside the console succeeds.
    status = console.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('/ui/core.js').then(({ api }) => api('POST', '/api/v1/tokens', { label: 'from the page' }))
          .then(() => done(201), (e) => done(e.status));""")
    assert status == 201
    status, tokens = console.api("GET", "/api/v1/tokens?user=op-a")
    labels = [t["label"] for t in tokens["items"]]
    assert "from the page" in labels and "forged" not in labels


def test_a_viewer_has_no_users_page_and_admin_has(console: Console) -> None:
    console.sign_in("viewer-a")
    pages = {a.get_attribute("data-page") for a in console.find_all("#menu a")}
    assert "users" not in pages and "overview" in pages
    console.sign_in("admin")
    assert "users" in {a.get_attribute("data-page") for a in console.find_all("#menu a")}


def test_english_is_one_press_away(console: Console) -> None:
    console.sign_in("op-a")
    console.find("[data-action=language]").click()
    console.wait_text("#signout", "Sign out")
    console.find("[data-action=language]").click()
    console.wait_text("#signout", "Đăng xuất")


def test_the_menu_fits_a_phone_and_opens_from_its_button(console: Console) -> None:
    console.sign_in("op-a")
    console.phone()
    try:
        console.driver.get(console.url("/#/overview"))
        console.wait("#who")
        assert not console.find("#menu").is_displayed()
        console.find(".menu-toggle").click()
        console.wait("#menu a[data-page=bulletins]")
        assert console.horizontal_overflow() <= 0
        console.screenshot("menu-phone")
    finally:
        console.desktop()


def test_console_files_cannot_reach_outside_the_package(console: Console) -> None:
    for path in ("/ui/../setup.cfg", "/ui/%2e%2e/setup.cfg", "/ui/.hidden.js", "/ui/pages/../../web/console.py",
                 "/ui/app.py"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(console.url(path), timeout=10)
        assert refused.value.code == 404, path
    with urllib.request.urlopen(console.url("/"), timeout=10) as page:
        policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy


def test_the_demo_admin_must_change_its_password_first(tmp_path: Path) -> None:
    """As the README's demo: a user from the configuration file signs in with its known password and
    can do nothing else until it is changed."""
    config = write_config(tmp_path, extra={})
    text = config.read_text(encoding="utf-8") + "users:\n  - {name: admin, role: admin, password: admin}\n"
    config.write_text(text, encoding="utf-8")
    server = start_server(config)
    driver = make_driver()
    try:
        c = Console(server, config, {}, driver)
        c.sign_in("admin", "admin")
        form = c.wait("#password-form")
        assert "đổi mật khẩu" in form.text.lower()
        assert not c.find("#menu").is_displayed()
        # The API refuses everything else meanwhile, whatever the page shows.
        status = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch('/api/v1/zones').then((r) => done(r.status));""")
        assert status == 403
        c.screenshot("change-password")
        c.fill("#password-form input[name=current]", "admin")
        c.fill("#password-form input[name=new]", PASSWORD)
        c.find("#password-form button[type=submit]").click()
        c.wait("#menu a[data-page=overview]")
        c.sign_out()
        c.sign_in("admin", PASSWORD)
        assert c.find("#menu").is_displayed()
    finally:
        quit_driver(driver)
        server.stop()
