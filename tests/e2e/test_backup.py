"""`broadcaster backup` while the server runs and writes, then `broadcaster restore` into a fresh
directory: the restored server starts with every zone, loudspeaker, programme, bulletin, media item
and log row, and a restored loudspeaker key still works."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

import yaml

from tests.conftest import ROOT, Api, prepare, run_speaker, start_server, tone_file, wait_until


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "broadcaster", *args, "-c", str(config)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_a_backup_taken_while_the_server_runs_restores_completely(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    config, tokens = prepare(tmp_path / "a")
    server = start_server(config)
    api = Api(server, config, tokens)
    try:
        assert api("POST", "/api/v1/zones", body={"id": "hamlet-c", "name": "Ấp 3", "kind": "hamlet",
                                                  "parent": "commune-a"})[0] == 201
        status, speaker = api("POST", "/api/v1/loudspeakers", who="op-a",
                              body={"id": "new-a", "zone": "hamlet-c", "channel": "ch-a"})
        assert status == 201
        wav = tone_file(tmp_path / "b.wav", 660.0, -20.0, 2.0).read_bytes()
        status, media = api("POST", "/api/v1/media?zone=commune-a&title=B%E1%BA%A3n%20tin&filename=b.wav",
                            who="op-a", raw=wav)
        assert status == 201, media
        status, programme = api("POST", "/api/v1/programmes", who="op-a", body={
            "title": "Bản tin sáng", "zones": ["commune-a"], "media": [media["id"]],
            "start": (datetime.now() + timedelta(days=2)).strftime("%Y-%m-%dT06:00")})
        assert status == 201, programme
        status, bulletin = api("POST", "/api/v1/bulletins", who="op-a", body={
            "title": "Lịch tiêm chủng", "text": "Trạm y tế xã thông báo.", "zones": ["commune-a"],
            "plan": {"at": [(datetime.now() + timedelta(days=1)).strftime("%Y-%m-%dT07:00")]}})
        assert status == 201, bulletin
        assert wait_until(lambda: api("GET", "/api/v1/broadcasts")[1]["total"] >= 2)
        before = {path: api("GET", path)[1]["total"] for path in (
            "/api/v1/zones", "/api/v1/loudspeakers", "/api/v1/media", "/api/v1/programmes", "/api/v1/bulletins",
            "/api/v1/broadcasts", "/api/v1/audit")}

        # The server goes on writing while the backup is taken: a loudspeaker's sessions, API calls.
        listener = threading.Thread(target=run_speaker, args=(server, "spk-1", 3.0))
        listener.start()
        done = run(config, "backup", str(tmp_path / "backup"))
        listener.join()
        assert done.returncode == 0, done.stderr
        assert "backup in" in done.stdout and "database" in done.stdout
        again = run(config, "backup", str(tmp_path / "backup"))
        assert again.returncode == 1 and "not empty" in again.stderr
    finally:
        server.stop()

    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["rows"]["loudspeakers"] == before["/api/v1/loudspeakers"]
    assert any(name.startswith("media/") for name in manifest["files"])
    for name, mode in (("secret.key", 0o600), ("broadcaster.db", 0o600), (".", 0o700), ("media", 0o700)):
        assert (tmp_path / "backup" / name).stat().st_mode & 0o777 == mode, name

    # A fresh machine: the same configuration, its storage somewhere new and empty.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    document["storage"] = {**document.get("storage", {}), "path": str(fresh / "db" / "broadcaster.db"),
                           "media_dir": str(fresh / "media"), "secret_file": str(fresh / "secret.key")}
    restored_config = fresh / "broadcaster.yaml"
    restored_config.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    done = run(restored_config, "restore", str(tmp_path / "backup"))
    assert done.returncode == 0, done.stderr
    refused = run(restored_config, "restore", str(tmp_path / "backup"))
    assert refused.returncode == 1 and "--force" in refused.stderr

    server = start_server(restored_config)
    api = Api(server, restored_config, tokens)  # the tokens are rows too: they came back
    try:
        for path, total in before.items():
            if path == "/api/v1/audit":
                assert api("GET", path)[1]["total"] >= total
            elif path == "/api/v1/broadcasts":
                assert api("GET", path)[1]["total"] >= total  # and the restored server's own plays
            else:
                assert api("GET", path)[1]["total"] == total, path
        status, item = api("GET", f"/api/v1/media/{media['id']}")
        assert status == 200 and item["sha256"] == media["sha256"]
        stored = api("GET", f"/api/v1/programmes/{programme['id']}")
        assert stored[0] == 200
        assert api("GET", f"/api/v1/bulletins/{bulletin['id']}")[1]["title"] == "Lịch tiêm chủng"
        # The sealed key opened with the restored secret: the registered loudspeaker subscribes.
        assert run_speaker(server, "new-a", 1.5, channel="ch-a", key=speaker["key"])["acked"]
    finally:
        server.stop()


def test_a_damaged_backup_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    config, _ = prepare(tmp_path / "a")
    server = start_server(config)
    try:
        assert run(config, "backup", str(tmp_path / "backup")).returncode == 0
    finally:
        server.stop()
    database = tmp_path / "backup" / "broadcaster.db"
    database.write_bytes(database.read_bytes()[:-10] + b"x" * 10)
    fresh = tmp_path / "fresh"
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    document["storage"] = {"path": str(fresh / "broadcaster.db"), "media_dir": str(fresh / "media"),
                           "secret_file": str(fresh / "secret.key")}
    fresh.mkdir()
    restored_config = fresh / "broadcaster.yaml"
    restored_config.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    done = run(restored_config, "restore", str(tmp_path / "backup"))
    assert done.returncode == 1 and "changed since the backup" in done.stderr
    assert not (fresh / "broadcaster.db").exists() and not (fresh / "secret.key").exists()
    assert run(restored_config, "restore", str(tmp_path / "nothing")).returncode == 1


def test_one_server_per_database_and_no_restore_under_it(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    config, _ = prepare(tmp_path / "a")
    server = start_server(config)
    try:
        assert run(config, "backup", str(tmp_path / "backup")).returncode == 0
        refused = run(config, "restore", "--force", str(tmp_path / "backup"))
        assert refused.returncode == 1 and f"pid {server.process.pid}" in refused.stderr, refused.stderr
        second = subprocess.run([sys.executable, "-m", "broadcaster", "serve", "-c", str(config), "--http-port", "0",
                                 "--udp-port", "0"], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert second.returncode == 1 and "another server" in second.stderr and str(server.process.pid) in second.stderr
    finally:
        server.stop()
    # Stopped (however it ended), the lock is gone with it: a restore may go on.
    assert run(config, "restore", "--force", str(tmp_path / "backup")).returncode == 0
