"""kill -9 in the middle of everything (issue 9): an upload arriving, a live studio on air and
an alert on air. After a restart the database is intact, every API write that was answered
2xx is there, the interrupted plays are closed as such, the alert is on air again under its
id, and the half-received upload left nothing behind."""

from __future__ import annotations

import signal
import socket
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from broadcaster.config import load_config
from broadcaster.storage import KeySealer, Storage
from tests.conftest import Api, prepare, start_server, tone_file, wait_until
from tests.e2e.test_studio import PASSWORD, ffmpeg_source, live

VN = ZoneInfo("Asia/Ho_Chi_Minh")


def test_kill_9_during_an_upload_a_live_session_and_an_alert_loses_nothing_answered(tmp_path: Path) -> None:
    config, tokens = prepare(tmp_path, extra={"live": {"target_delay_ms": 200, "stall_timeout_ms": 2500}})
    loaded = load_config(config)
    storage = Storage(loaded.storage.path, KeySealer.from_file(loaded.storage.secret_file))
    storage.add_user("studio-a", "operator", ["commune-a"], PASSWORD)
    storage.close()
    server = start_server(config)
    api = Api(server, config, tokens)
    try:
        wav = tone_file(tmp_path / "bulletin.wav", 660.0, -20.0, 3.0).read_bytes()
        status, media = api("POST", "/api/v1/media?zone=commune-a&title=bulletin", raw=wav)
        assert status == 201, media
        start = (datetime.now(VN) + timedelta(days=2)).replace(tzinfo=None).isoformat(timespec="seconds")
        status, programme = api("POST", "/api/v1/programmes", body={
            "title": "Bản tin sáng", "zones": ["commune-a"], "media": [media["id"]], "start": start})
        assert status == 201, programme
        status, speaker = api("POST", "/api/v1/loudspeakers", body={"id": "spk-new", "zone": "hamlet-a",
                                                                     "channel": "ch-a"})
        assert status == 201, speaker

        console = ffmpeg_source(server, tone_file(tmp_path / "studio.wav", 880.0, -12.0, 60.0),
                                ["-c:a", "libopus"], "ogg", user="studio-a")
        assert wait_until(lambda: live(server) is not None), "the studio is on air"
        status, alert = api("POST", "/api/v1/alerts", body={"title": "Cảnh báo bão", "zones": ["commune-a"],
                                                            "text": "Bão số chín.", "repeat": 20})
        assert status == 201, alert
        assert wait_until(lambda: bool(api("GET", f"/api/v1/alerts/{alert['id']}")[1]["first_frame_ms"]))

        body = tone_file(tmp_path / "big.wav", 440.0, -20.0, 5.0).read_bytes()[:590_000]  # under the limit
        upload = socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
        upload.sendall((f"POST /api/v1/media?zone=commune-a&title=half HTTP/1.1\r\nHost: x\r\n"
                        f"Authorization: Bearer {tokens['admin']}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                       + body[:len(body) // 2])
        spool = loaded.storage.media_dir / ".incoming"
        assert wait_until(lambda: any(p.stat().st_size > 0 for p in spool.iterdir())), "the upload is arriving"
        time.sleep(2)  # the broadcast log's rows for the live session and the alert are written

        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        upload.close()
        console.kill()
        console.wait(10)
        assert list(spool.iterdir()), "the killed server left its half-received upload"
    finally:
        server.stop()

    db = sqlite3.connect(loaded.storage.path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    server = start_server(config)
    try:
        api = Api(server, config, tokens)
        assert list(spool.iterdir()) == [], "swept at start"
        assert [m["id"] for m in api("GET", "/api/v1/media")[1]["items"]] == [media["id"]]
        assert programme["id"] in [p["id"] for p in api("GET", "/api/v1/programmes")[1]["items"]]
        assert api("GET", "/api/v1/loudspeakers/spk-new")[0] == 200
        on_air = api("GET", "/api/v1/alerts")[1]["items"]
        assert [a["id"] for a in on_air] == [alert["id"]], "the alert plays again under its id"
        assert api("POST", f"/api/v1/alerts/{alert['id']}/cancel")[1]["status"] == "cancelled"
        plays = api("GET", "/api/v1/broadcasts?zone=commune-a")[1]["items"]
        outcomes = sorted((p["kind"], p["outcome"]) for p in plays if p["kind"] in ("live", "alert"))
        assert ("live", "interrupted") in outcomes and ("alert", "interrupted") in outcomes, outcomes
        assert wait_until(lambda: ("alert", "cancelled") in {
            (p["kind"], p["outcome"]) for p in api("GET", "/api/v1/broadcasts?zone=commune-a")[1]["items"]})
    finally:
        server.stop()
