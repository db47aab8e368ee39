"""The console in a real browser: Debian's Chromium, headless, driven by selenium through Debian's
chromedriver (nothing downloaded), against a real server on loopback.

One server and one browser per test module (each start costs seconds); each test signs in as the
user it needs. Screenshots go to build/screenshots/ (BROADCASTER_SCREENSHOTS to change), where
docs/console.md's pictures are taken from.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, WAIT_S, RunningServer, prepare, start_server

CHROMIUM = os.environ.get("BROADCASTER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("BROADCASTER_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = Path(os.environ.get("BROADCASTER_SCREENSHOTS", ROOT / "build" / "screenshots"))
PASSWORD = "mat-khau-thu-nghiem"  # every test user's
PHONE = (390, 844)   # a common phone's CSS pixels
DESKTOP = (1280, 900)

# name, role, zones, permissions beyond the role's
USERS = (("admin", "admin", [], ()), ("op-a", "operator", ["commune-a"], ()),
         ("viewer-a", "viewer", ["commune-a"], ()), ("op-b", "operator", ["commune-b"], ()),
         ("editor-a", "viewer", ["commune-a"], ("bulletin.create",)),
         ("chair-a", "viewer", ["commune-a"], ("bulletin.approve",)))


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:  # make test installs them (Makefile TEST_DEBS): a missing one is a broken set-up, not a skip
        pytest.fail(f"browser tests need Debian's chromium and chromium-driver: missing {', '.join(missing)}")


def make_driver(*extra_args: str, size: tuple[int, int] = DESKTOP) -> Any:
    """A headless Chromium with a fresh profile; ``extra_args`` such as the fake microphone's."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic", "--disable-features=Translate,MediaRouter",
                "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}",
                f"--window-size={size[0]},{size[1]}", *extra_args):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver._broadcaster_profile = profile
    return driver


def quit_driver(driver: Any) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(getattr(driver, "_broadcaster_profile", ""), ignore_errors=True)


@dataclass
class Console:
    """The console in one browser, and the server behind it."""

    server: RunningServer
    config: Path
    tokens: dict[str, str]
    driver: Any
    shots: list[Path] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        return self.server.url(path)

    # --- waiting and finding (bounded waits; never a claim of speed) ---

    def wait(self, css: str, timeout: float = WAIT_S, visible: bool = True) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        condition = ec.visibility_of_element_located if visible else ec.presence_of_element_located
        return WebDriverWait(self.driver, timeout).until(condition((By.CSS_SELECTOR, css)))

    def wait_text(self, css: str, text: str, timeout: float = WAIT_S) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, timeout).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def until(self, condition: Any, timeout: float = WAIT_S) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout).until(lambda d: condition())

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def fill(self, css: str, text: str) -> None:
        element = self.wait(css)
        element.clear()
        element.send_keys(text)

    # --- the console ---

    def sign_in(self, name: str, password: str = PASSWORD, language: str = "vi") -> None:
        self.driver.get(self.url("/"))
        self.driver.execute_script("localStorage.setItem('lang', arguments[0])", language)
        self.driver.delete_all_cookies()
        self.driver.get(self.url("/"))
        self.fill("#signin input[name=name]", name)
        self.fill("#signin input[name=password]", password)
        self.find("#signin button[type=submit]").click()
        self.wait("#who")

    def sign_out(self) -> None:
        self.find("#signout").click()
        self.wait("#signin")

    def goto(self, page: str) -> Any:
        """Open a page by its menu id and wait for it to render."""
        self.driver.get(self.url(f"/#/{page}"))
        return self.wait(f"section.page[data-page='{page}']")

    def session_cookie(self) -> str | None:
        cookie = self.driver.get_cookie("bc_session")
        return cookie["value"] if cookie else None

    def console_errors(self) -> list[str]:
        """What the page's scripts logged at SEVERE (uncaught errors, console.error), for asserting there
        were none. An HTTP error reply is logged too ("Failed to load resource"): those are the API's
        answers (a 401 before sign-in, a refusal shown in place), asserted by the tests themselves."""
        return [entry["message"] for entry in self.driver.get_log("browser") if entry.get("level") == "SEVERE"
                and "Failed to load resource" not in entry["message"]]

    def horizontal_overflow(self) -> int:
        """How many CSS pixels the page is wider than the window (0: no horizontal scrolling)."""
        return int(self.driver.execute_script(
            "return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
            " - document.documentElement.clientWidth"))

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.shots.append(path)
        return path

    def phone(self) -> None:
        self.driver.set_window_size(*PHONE)

    def desktop(self) -> None:
        self.driver.set_window_size(*DESKTOP)

    # --- the API beside the browser (as a script would call it, with a bearer token) ---

    def api(self, method: str, path: str, who: str = "admin", body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url(path), data=data, method=method)
        if who:
            request.add_header("Authorization", f"Bearer {self.tokens[who]}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload


def prepare_console(tmp_path: Path, extra: dict[str, Any] | None = None) -> tuple[Path, dict[str, str]]:
    """A configuration with the test users, each with PASSWORD and an API token."""
    config, tokens = prepare(tmp_path, extra)
    from broadcaster.config import load_config
    from broadcaster.storage import KeySealer, Storage

    loaded = load_config(config)
    storage = Storage(loaded.storage.path, KeySealer.from_file(loaded.storage.secret_file))
    try:
        for name, role, zones, permissions in USERS:
            if name in tokens:
                storage.users.set_password_sync(name, PASSWORD)
            else:
                storage.users.add_sync(name, role, zones, PASSWORD, permissions=permissions)
                tokens[name] = storage.new_token(name)
    finally:
        storage.close()
    return config, tokens


@contextmanager
def running_console(tmp_path: Path, extra: dict[str, Any] | None = None,
                    edit: Callable[[Any], None] | None = None) -> Iterator[Console]:
    """A server with the test users and a browser beside it; ``edit(storage)`` changes the database
    before the server starts (a channel made private, say)."""
    config, tokens = prepare_console(tmp_path, extra)
    if edit is not None:
        from broadcaster.config import load_config
        from broadcaster.storage import KeySealer, Storage

        loaded = load_config(config)
        storage = Storage(loaded.storage.path, KeySealer.from_file(loaded.storage.secret_file))
        try:
            edit(storage)
        finally:
            storage.close()
    server = start_server(config)
    driver = make_driver()
    try:
        yield Console(server, config, tokens, driver)
    finally:
        quit_driver(driver)
        server.stop()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with running_console(tmp_path_factory.mktemp("console")) as running:
        yield running
