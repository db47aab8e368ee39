"""The console's overview, loudspeakers, schedule, media and monitor pages in Chromium, against a real
server: what a commune operator sees (only its commune), the overview updating by itself from the
events stream (an alert with its acknowledgement counts, then gone), a viewer with nothing to press,
a programme scheduled in the week calendar and a clash refused by name, an upload with its loudness,
a private channel monitored with the session; each page at phone size, with screenshots."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.browser.conftest import PASSWORD, Console, make_driver, prepare_console, quit_driver, running_console
from tests.conftest import run_speaker, start_server, tone_file

PAGES = ("overview", "loudspeakers", "schedule", "media", "monitor")
TZ = ZoneInfo("Asia/Ho_Chi_Minh")  # the schedule's default time zone


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """ch-a closed to public listening (its operator monitors it with the console's session)."""
    def private(storage: Any) -> None:
        storage.db.run_sync(lambda conn: conn.execute("UPDATE channels SET public = 0 WHERE id = 'ch-a'"))

    with running_console(tmp_path_factory.mktemp("console-a"), edit=private) as running:
        yield running


def at_phone_size(console: Console, page: str) -> None:
    console.phone()
    try:
        console.goto(page)
        console.wait(f"section.page[data-page='{page}'] h1")
        assert console.horizontal_overflow() <= 0, f"{page} scrolls sideways on a phone"
        console.screenshot(f"{page}-phone")
    finally:
        console.desktop()


def test_a_commune_operator_sees_only_its_commune_on_the_overview_and_the_loudspeakers(console: Console) -> None:
    for device, lat, lon in (("spk-1", 16.4637, 107.5909), ("spk-2", 16.4701, 107.6003), ("spk-3", 10.77, 106.70)):
        status, _ = console.api("PATCH", f"/api/v1/loudspeakers/{device}", body={"lat": lat, "lon": lon})
        assert status == 200
    status, refused = console.api("PATCH", "/api/v1/loudspeakers/spk-1", body={"lat": 91.0})
    assert status == 400 and "lat" in refused["error"]["message"], "a latitude out of range is refused"
    console.sign_in("op-a")
    console.goto("overview")
    console.wait("[data-channel='ch-a']")

    def level() -> float:
        rms = console.find("[data-channel='ch-a'] .meter").get_attribute("data-rms")
        return float(rms) if rms else -96.0

    # The loop plays on ch-a: its level arrives from the stream, a number above silence.
    console.until(lambda: level() > -60)
    assert "Chương trình nền" in console.find("[data-channel='ch-a'] .on-air").text
    assert console.find_all("[data-channel='ch-b']") == [], "op-a never sees commune B's channel"
    console.screenshot("overview")
    console.goto("loudspeakers")
    console.wait("tr[data-speaker='spk-1']")
    assert {r.get_attribute("data-speaker") for r in console.find_all("tr[data-speaker]")} == {"spk-1", "spk-2"}
    points = {p.get_attribute("data-speaker") for p in console.find_all("svg.speaker-map g.map-point")}
    assert points == {"spk-1", "spk-2"}, "the map holds op-a's loudspeakers, placed by lat/lon"
    assert console.find_all("svg.speaker-map image") == [], "no tile URL configured: no tiles, the map is offline"
    assert "spk-3" not in console.driver.page_source
    console.screenshot("loudspeakers")
    assert console.console_errors() == []
    for page in ("overview", "loudspeakers"):
        at_phone_size(console, page)


def test_an_operator_registers_a_loudspeaker_sees_its_key_once_rotates_it_and_sets_a_volume(console: Console) -> None:
    console.sign_in("op-a")
    console.goto("loudspeakers")
    console.fill("#register-speaker input[name=id]", "spk-cho")
    console.fill("#register-speaker input[name=name]", "Loa chợ")
    console.fill("#register-speaker input[name=lat]", "16.4665")
    console.fill("#register-speaker input[name=lon]", "107.5950")
    console.find("#register-speaker button[type=submit]").click()
    key = console.wait("#key-box code.key[data-speaker='spk-cho']").text
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key), "the generated key, shown"
    console.wait("svg.speaker-map g.map-point[data-speaker='spk-cho']")
    status, stored = console.api("GET", "/api/v1/loudspeakers/spk-cho", "op-a")
    assert status == 200 and stored["zone"] == "hamlet-a" and stored["lat"] == pytest.approx(16.4665)
    assert "key" not in stored, "the key is never shown again"
    console.screenshot("loudspeakers-key")
    console.find("#key-box button").click()
    console.find("button[data-action='rotate'][data-id='spk-cho']").click()
    console.wait("dialog.confirm [data-confirm]").click()
    rotated = console.wait("#key-box code.key[data-speaker='spk-cho']").text
    assert len(rotated) == 64 and rotated != key
    # The list redraws itself every 10 s (online state): the value and the click are one script.
    console.driver.execute_script(
        "const f = document.querySelector(\"form[data-speaker='spk-cho']\");"
        "f.querySelector('input[name=volume]').value = '35'; f.querySelector('button[data-action=volume]').click()")
    console.until(lambda: console.api("GET", "/api/v1/loudspeakers/spk-cho", "op-a")[1]["volume"] == 35)
    assert console.console_errors() == []


def test_the_overview_shows_an_alert_with_its_acknowledgements_and_drops_it_when_cancelled(console: Console) -> None:
    console.sign_in("op-a")
    console.goto("overview")
    console.wait("#no-alerts")
    heard: dict[str, Any] = {}
    speaker = threading.Thread(target=lambda: heard.update(run_speaker(console.server, "spk-1", 14)))
    speaker.start()
    try:
        console.until(lambda: console.find("[data-channel='ch-a'] [data-online]").get_attribute("data-online") == "1")
        status, alert = console.api("POST", "/api/v1/alerts", body={
            "title": "Bão số 9 đổ bộ", "zones": ["commune-a"], "text": "Mời bà con vào nơi trú ẩn.", "repeat": 20})
        assert status == 201
        row = console.wait(f"#alerts-on-air [data-alert='{alert['id']}']")  # no reload: the stream brought it
        assert "Bão số 9 đổ bộ" in row.text
        acks = f"#alerts-on-air [data-alert='{alert['id']}'] .acks"
        console.until(lambda: console.find(acks).get_attribute("data-acknowledged") == "1")
        assert "1/1" in console.find(acks).text
        console.until(lambda: console.find("[data-channel='ch-a'] .on-air").get_attribute("data-kind") == "alert")
        console.screenshot("overview-alert")
        status, _ = console.api("POST", f"/api/v1/alerts/{alert['id']}/cancel")
        assert status == 200
        console.wait("#no-alerts")
        assert console.find_all(f"[data-alert='{alert['id']}']") == []
    finally:
        speaker.join()
    assert heard.get("commands"), "the reference loudspeaker was commanded (and acknowledged)"
    assert console.console_errors() == []


def test_a_viewer_has_nothing_to_press_on_these_pages(console: Console) -> None:
    console.sign_in("viewer-a")
    for page in PAGES:
        console.goto(page)
        console.wait(f"section.page[data-page='{page}'] h1")
        assert console.find_all("[data-write]") == [], f"{page} shows a write control to a viewer"
    assert console.console_errors() == []


def _media(console: Console, title: str) -> str:
    path = tone_file(Path(console.config).parent / f"{title}.wav", 660.0, seconds=2.0)
    request = urllib.request.Request(console.url(f"/api/v1/media?zone=commune-a&title={title}"),
                                     data=path.read_bytes(), method="POST",
                                     headers={"Authorization": f"Bearer {console.tokens['op-a']}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return str(json.loads(response.read())["id"])


def _set(console: Console, css: str, value: str) -> None:
    console.driver.execute_script("arguments[0].value = arguments[1]", console.find(css), value)


def _pick_media(console: Console, media_id: str) -> None:
    console.driver.execute_script(
        "for (const o of arguments[0].options) o.selected = (o.value === arguments[1])",
        console.find("#programme-form select[name=media]"), media_id)


def test_a_programme_scheduled_in_the_calendar_appears_in_its_week_and_a_clash_is_refused_by_name(
        console: Console) -> None:
    media = _media(console, "tin-sang")
    now = datetime.now(TZ)
    day = (now + timedelta(days=1)).date()
    console.sign_in("op-a")
    console.goto("schedule")
    console.wait("#programme-form")
    if day.isocalendar()[:2] != now.date().isocalendar()[:2]:
        console.find("[data-action='next-week']").click()
        console.wait(f".cal-day[data-day='{day.isoformat()}']")
    console.fill("#programme-form input[name=title]", "Bản tin sáng")
    _pick_media(console, media)
    _set(console, "#programme-form input[name=start]", f"{day.isoformat()}T08:00")
    console.find("#programme-form button[type=submit]").click()
    item = console.wait(f".cal-day[data-day='{day.isoformat()}'] .cal-item[data-kind='programme']")
    assert "Bản tin sáng" in item.text and "08:00" in item.text
    status, listed = console.api("GET", "/api/v1/programmes", "op-a")
    first = next(p for p in listed["items"] if p["title"] == "Bản tin sáng")
    assert first["start_local"].startswith(f"{day.isoformat()}T08:00") and first["channels"] == ["ch-a"]
    # A second one at the same time on the same channel: the server's clash message, naming the first.
    console.fill("#programme-form input[name=title]", "Trùng giờ")
    _pick_media(console, media)
    _set(console, "#programme-form input[name=start]", f"{day.isoformat()}T08:00")
    console.find("#programme-form button[type=submit]").click()
    error = console.wait("#programme-form .error")
    assert "Bản tin sáng" in error.text and first["id"] in error.text and error.get_attribute("data-code") == "clash"
    status, listed = console.api("GET", "/api/v1/programmes", "op-a")
    assert [p["title"] for p in listed["items"]].count("Trùng giờ") == 0
    console.screenshot("schedule-clash")
    # Edit: open it from the calendar, move it an hour; the server has it so.
    console.find(f".cal-item[data-id='{first['id']}']").click()
    console.wait(f"#programme-form[data-editing='{first['id']}']")
    _set(console, "#programme-form input[name=start]", f"{day.isoformat()}T09:00")
    console.find("#programme-form button[type=submit]").click()
    console.wait_text(f".cal-item[data-id='{first['id']}']", "09:00")
    assert console.api("GET", f"/api/v1/programmes/{first['id']}", "op-a")[1]["start_local"].startswith(
        f"{day.isoformat()}T09:00")
    console.driver.execute_script("window.scrollTo(0, 0)")
    console.screenshot("schedule")
    at_phone_size(console, "schedule")
    # Delete it from the calendar, after the confirmation step.
    if day.isocalendar()[:2] != now.date().isocalendar()[:2]:
        console.find("[data-action='next-week']").click()
    console.wait(f".cal-item[data-id='{first['id']}']").click()
    console.wait(f"#programme-form[data-editing='{first['id']}'] [data-action='delete']").click()
    console.wait("dialog.confirm [data-confirm]").click()
    console.until(lambda: console.find_all(f".cal-item[data-id='{first['id']}']") == [])
    assert console.api("GET", f"/api/v1/programmes/{first['id']}", "op-a")[0] == 404
    assert console.console_errors() == []


def test_an_upload_shows_its_progress_and_loudness_and_plays_in_the_page(console: Console) -> None:
    wav = tone_file(Path(console.config).parent / "upload.wav", 523.0, level_dbfs=-30.0, seconds=3.0)
    console.sign_in("op-a")
    console.goto("media")
    console.find("#upload-form input[type=file]").send_keys(str(wav))
    console.fill("#upload-form input[name=title]", "Nhạc hiệu")
    console.find("#upload-form button[type=submit]").click()
    result = console.wait(".loudness-result", timeout=60)
    assert console.find("#upload-progress").get_attribute("value") == "100"
    media_id = result.get_attribute("data-media")
    status, stored = console.api("GET", f"/api/v1/media/{media_id}", "op-a")
    assert status == 200 and stored["title"] == "Nhạc hiệu"
    # A -30 dBFS tone measured about -30 LUFS, brought to the library's target: both shown.
    assert f"{stored['original_lufs']:.1f}" in result.text and f"{stored['loudness_lufs']:.1f}" in result.text
    assert stored["loudness_lufs"] - stored["original_lufs"] > 5
    console.screenshot("media")
    console.find(f"button[data-action='play'][data-id='{media_id}']").click()
    console.until(lambda: console.driver.execute_script(
        "const a = document.getElementById('media-player'); return a.readyState >= 1 && a.duration > 2.5"))
    assert console.console_errors() == []
    at_phone_size(console, "media")


def _session_cookie(console: Console, who: str) -> str:
    request = urllib.request.Request(console.url("/api/v1/session"), method="POST",
                                     data=json.dumps({"name": who, "password": PASSWORD}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        cookie = response.headers["Set-Cookie"]
    return cookie.split(";", 1)[0]


def test_an_operator_monitors_its_private_channel_and_no_one_else_can(console: Console) -> None:
    console.sign_in("op-a")
    console.goto("monitor")
    console.wait("#monitor-channel")
    console.driver.execute_script("arguments[0].value = 'ch-a'", console.find("#monitor-channel"))
    console.find("[data-action='listen']").click()
    console.until(lambda: console.driver.execute_script(
        "const a = document.getElementById('monitor-audio'); return !a.paused && a.currentTime > 0.5"))
    assert console.find("#monitor-audio").get_attribute("data-format") == "ogg"
    console.screenshot("monitor")
    console.find("[data-action='stop']").click()
    assert console.console_errors() == []
    at_phone_size(console, "monitor")
    # Without a session, or with another commune's, the private stream stays closed.
    for headers in ({}, {"Cookie": _session_cookie(console, "op-b")}, {"Cookie": "bc_session=guessed"}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(console.url("/channels/ch-a.ogg"), headers=headers),
                                   timeout=10)
        assert refused.value.code == 403


def test_the_events_stream_is_bounded_per_user(console: Console) -> None:
    opened = []
    try:
        for _ in range(4):
            request = urllib.request.Request(console.url("/api/v1/events"),
                                             headers={"Authorization": f"Bearer {console.tokens['chair-a']}"})
            response = urllib.request.urlopen(request, timeout=10)
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert response.readline() == b"retry: 3000\n"
            opened.append(response)
        request = urllib.request.Request(console.url("/api/v1/events"),
                                         headers={"Authorization": f"Bearer {console.tokens['chair-a']}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 429
    finally:
        for response in opened:
            response.close()


def test_a_second_browser_of_another_commune_sees_only_its_own(console: Console) -> None:
    driver = make_driver()
    try:
        other = Console(console.server, console.config, console.tokens, driver)
        other.sign_in("op-b")
        other.goto("overview")
        other.wait("[data-channel='ch-b']")
        assert other.find_all("[data-channel='ch-a']") == []
    finally:
        quit_driver(driver)


def test_map_tiles_are_drawn_under_the_points_only_when_a_tile_url_is_configured(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    import http.server

    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                        "0000000d49444154789c6360f8cf00000301010018dd8db00000000049454e44ae426082")
    asked: list[str] = []

    class Tiles(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args: Any) -> None:
            pass

    tiles = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tiles)
    threading.Thread(target=tiles.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{tiles.server_address[1]}/{{z}}/{{x}}/{{y}}.png"
    config, tokens = prepare_console(tmp_path_factory.mktemp("tiles"), {"console": {"tile_url": url}})
    server = start_server(config)
    driver = make_driver()
    try:
        console = Console(server, config, tokens, driver)
        assert console.api("PATCH", "/api/v1/loudspeakers/spk-1", body={"lat": 16.46, "lon": 107.59})[0] == 200
        console.sign_in("op-a")
        console.goto("loudspeakers")
        console.wait("svg.speaker-map g.map-point[data-speaker='spk-1']")
        images = console.find_all("svg.speaker-map image.map-tile")
        assert images and all(i.get_attribute("href").startswith(url.split("{z}")[0]) for i in images)
        console.until(lambda: len(asked) > 0)  # the browser fetched them (the CSP allows the tile server)
        assert all(p.endswith(".png") and p.count("/") == 3 for p in asked)
        assert console.console_errors() == []
    finally:
        quit_driver(driver)
        server.stop()
        tiles.shutdown()
