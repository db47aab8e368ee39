"""A full disk (issue 9): a real server whose database, media and recordings live on a small
tmpfs, filled to the last byte while it runs. Audio goes on (a live studio stays on air and an
alert plays), new uploads and live sessions are refused with 507, a recording cut short says so
in the broadcast log, and once space returns every record is there and new work is accepted.

Mounting a tmpfs needs root (or CAP_SYS_ADMIN); where that is refused the test is skipped and
says why."""

from __future__ import annotations

import io
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from broadcaster.config import load_config
from broadcaster.storage import KeySealer, Storage, seed_from_config
from tests.conftest import Api, start_server, tone_file, wait_until, write_config
from tests.e2e.test_http_stream import metric
from tests.e2e.test_studio import PASSWORD, ffmpeg_source, live, raw_source, reply

MiB = 1024 * 1024


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()} (needs root or CAP_SYS_ADMIN)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int = 0, name: str = "filler") -> Path:
    """Write until the file system refuses another byte, or only ``leave`` bytes are left."""
    filler = disk / name
    with filler.open("wb", buffering=0) as f:
        for size in (MiB, 4096, 1):
            chunk = b"\0" * size
            while shutil.disk_usage(disk).free - size >= leave:
                try:
                    f.write(chunk)
                except OSError:
                    break
    return filler


def long_mp3(tmp_path: Path) -> bytes:
    """90 s at 8 kb/s: 90 KB to upload (kept in memory, not spooled), about 10 MB as stored FLAC."""
    out = tmp_path / "long.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=500:sample_rate=8000:duration=90", "-ac", "1", "-b:a", "8k", str(out)], check=True)
    return out.read_bytes()


def wav(seconds: float = 2.0) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(48000 * seconds)) / 48000
    soundfile.write(buffer, (0.3 * np.sin(2 * np.pi * 660 * t)).astype(np.float32), 48000, format="WAV")
    return buffer.getvalue()


def test_a_full_disk_refuses_new_work_keeps_audio_and_loses_no_record(tmp_path: Path, disk: Path) -> None:
    config = write_config(tmp_path, extra={
        "storage": {"path": str(disk / "broadcaster.db"), "media_dir": str(disk / "media"),
                    "min_free_bytes": 2 * MiB},
        "live": {"recordings_dir": str(disk / "recordings"), "target_delay_ms": 200, "stall_timeout_ms": 2500}})
    loaded = load_config(config)
    storage = Storage(loaded.storage.path, KeySealer.from_file(loaded.storage.secret_file))
    seed_from_config(storage, loaded)
    storage.add_user("admin", "admin", [])
    storage.add_user("op-a", "operator", ["commune-a"], PASSWORD)
    tokens = {"admin": storage.new_token("admin")}
    storage.close()
    server = start_server(config)
    try:
        api = Api(server, config, tokens)
        status, first = api("POST", "/api/v1/media?zone=commune-a&title=before", raw=wav())
        assert status == 201, first

        studio = tone_file(tmp_path / "studio.wav", 880.0, -12.0, 8.0)
        console = ffmpeg_source(server, studio, ["-c:a", "libopus"], "ogg")
        assert wait_until(lambda: live(server) is not None), "the studio goes on air while there is room"
        nearly = fill(disk, leave=3 * MiB, name="nearly")  # room for the upload, not for its FLAC
        status, refused = api("POST", "/api/v1/media?zone=commune-a&title=long", raw=long_mp3(tmp_path))
        assert status == 507 and refused["error"]["code"] == "insufficient_storage", refused
        filler = fill(disk)

        status, refused = api("POST", "/api/v1/media?zone=commune-a&title=full", raw=wav())
        assert status == 507 and refused["error"]["code"] == "insufficient_storage", refused
        assert "full" in refused["error"]["message"] and str(disk) in refused["error"]["message"]
        assert sorted(p.name for p in (disk / "media").iterdir()) == [".incoming", f"{first['id']}.flac"]
        assert list((disk / "media" / ".incoming").iterdir()) == []
        assert metric(server, "broadcaster_uploads_rejected_total", {"reason": "disk_full"}) == 2

        assert live(server) is not None, "the studio on air stays on air"
        status, alert = api("POST", "/api/v1/alerts", body={"title": "Cảnh báo khi đĩa đầy", "zones": ["commune-a"],
                                                            "text": "Thử", "repeat": 1})
        assert status == 201, alert
        console.wait(30)
        assert wait_until(lambda: live(server) is None)
        second = raw_source(server, "/ingest/ch-a")
        head = reply(second)
        second.close()
        assert head.split(" ")[1] == "507" and "full" in head, head

        assert wait_until(lambda: api("GET", f"/api/v1/alerts/{alert['id']}")[1]["status"] == "completed", 30)
        filler.unlink()
        nearly.unlink()
        status, after = api("POST", "/api/v1/media?zone=commune-a&title=after", raw=wav())
        assert status == 201, after
        assert wait_until(lambda: metric(server, "broadcaster_storage_pending_rows") == 0, 40), "the queue drains"
    finally:
        for left in (disk / "filler", disk / "nearly"):
            left.unlink(missing_ok=True)
        log = server.stop()

    db = sqlite3.connect(disk / "broadcaster.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    plays = db.execute("SELECT kind, outcome, detail FROM broadcast_log WHERE kind IN ('live', 'alert') "
                       "ORDER BY id").fetchall()
    assert [p[0] for p in plays] == ["live", "alert"], (plays, log[-3000:])
    assert "recording stopped" in plays[0][2], plays[0]
    assert plays[1][1] == "completed"
    actions = [r[0] for r in db.execute("SELECT action FROM audit_log ORDER BY id")]
    assert actions.count("media.upload") >= 2 and "alert.start" in actions, actions
    assert db.execute("SELECT COUNT(*) FROM alerts_on_air").fetchone() == (0,)
