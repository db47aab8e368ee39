"""The province link between two real servers: a province feeds a commune.

A recorded bulletin written at the province and approved there by a second
user (four-eyes) goes down to the commune (pushed to its webhook and polled,
HMAC-signed), is imported and auto-approved there by its class, plays on the
commune's loudspeaker (the reference client hears it), and its play goes back
up: the province's results route shows it, with the loudspeakers online.
Then the commune restarts, and the province restarts: the bulletin is neither
imported again nor played again, and the play is reported once.

No assert is on elapsed time: waits are bounded, and what is asserted is what
the loudspeaker heard and what each server stored."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import yaml

from broadcaster.codecs.pcm import dominant_frequency
from tests.conftest import KEYS, Api, RunningServer, run_speaker, start_server, tone_file, wait_until

SECRET = "the-province-and-an-binh-share-this"
CODE = "86.855.29620"
TONE_HZ = 880.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(config: Path, http_port: int) -> RunningServer:
    """On a fixed HTTP port: each side's config names the other's."""
    return start_server(config, http_port=http_port)


def write(directory: Path, document: dict[str, Any], users: tuple[tuple[str, str, list[str]], ...]) -> tuple[
        Path, dict[str, str]]:
    directory.mkdir()
    path = directory / "broadcaster.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    from broadcaster.config import load_config
    from broadcaster.storage import KeySealer, Storage, seed_from_config

    loaded = load_config(path)
    storage = Storage(loaded.storage.path, KeySealer.from_file(loaded.storage.secret_file))
    try:
        seed_from_config(storage, loaded)
        tokens = {}
        for name, role, zones in users:
            storage.add_user(name, role, zones)
            tokens[name] = storage.new_token(name)
    finally:
        storage.close()
    return path, tokens


def configs(tmp_path: Path, province_port: int, commune_port: int) -> tuple[Path, dict[str, str], Path, dict[str, str]]:
    common = {"server": {"host": "127.0.0.1"}, "speakers": {"keepalive_s": 1, "missed_keepalives": 3},
              "storage": {"max_upload_bytes": 2_000_000}}
    province = {**common,
                "zones": [{"id": "tinh", "kind": "province", "children": [{"id": "xa-an-binh", "kind": "commune"}]}],
                "channels": [{"id": "ch-tinh", "zone": "tinh", "name": "Đài tỉnh"}],
                "link": {"id": "tinh", "area_codes": {"xa-an-binh": CODE}, "push_s": 1,
                         "downstream": [{"id": "xa-an-binh", "secret": SECRET, "zones": ["xa-an-binh"],
                                         "webhook": f"http://127.0.0.1:{commune_port}/api/v1/link/bulletins"}]}}
    commune = {**common,
               "zones": [{"id": "xa-an-binh", "kind": "commune", "children": [{"id": "ap-1", "kind": "hamlet"}]}],
               "channels": [{"id": "ch-an-binh", "zone": "xa-an-binh", "name": "Đài xã An Bình"}],
               "loudspeakers": [{"id": "spk-1", "zone": "ap-1", "channel": "ch-an-binh", "key": KEYS["spk-1"]}],
               "link": {"upstream": {"url": f"http://127.0.0.1:{province_port}/api/v1/link", "id": "xa-an-binh",
                                     "secret": SECRET, "origin": "tinh", "poll_s": 2, "report_s": 1,
                                     "inventory_s": 1, "areas": {CODE: "xa-an-binh"},
                                     "approve": {"thong-thuong": "auto"}}}}
    p, p_tokens = write(tmp_path / "province", province, (("admin", "admin", []), ("bien-tap", "operator", ["tinh"]),
                                                          ("duyet", "operator", ["tinh"])))
    c, c_tokens = write(tmp_path / "commune", commune, (("admin", "admin", []),))
    return p, p_tokens, c, c_tokens


def upload(api: Api, tmp_path: Path, who: str) -> str:
    wav = tone_file(tmp_path / "tone.wav", TONE_HZ, -20.0, 4.0)
    audio, rate = soundfile.read(str(wav), dtype="float32")
    flac = tmp_path / "tone.flac"
    soundfile.write(str(flac), audio, rate, subtype="PCM_16")
    status, media = api("POST", "/api/v1/media?zone=tinh&title=ban-tin", who=who, raw=flac.read_bytes())
    assert status == 201, media
    return str(media["id"])


def imported(commune: Api) -> list[dict[str, Any]]:
    return [b for b in commune("GET", "/api/v1/bulletins")[1]["items"] if b["origin"] == "tinh"]


def commune_plays(commune: Api, bulletin: str) -> list[dict[str, Any]]:
    return list(commune("GET", f"/api/v1/bulletins/{bulletin}/plays")[1]["items"])


def results(province: Api, bulletin: str) -> list[dict[str, Any]]:
    status, body = province("GET", f"/api/v1/bulletins/{bulletin}/results")
    assert status == 200, body
    return list(body["plays"])


def heard(path: Path) -> bool:
    """Whether a second of the loudspeaker's recording is the bulletin's tone."""
    audio, rate = soundfile.read(str(path), dtype="float32")
    for start in range(0, max(0, len(audio) - rate), rate // 2):
        window = audio[start:start + rate]
        if np.sqrt(np.mean(window ** 2)) > 0.01 and abs(dominant_frequency(window) - TONE_HZ) < 3:
            return True
    return False


def test_a_bulletin_goes_down_plays_once_and_its_result_comes_up_across_restarts(tmp_path: Path) -> None:
    province_port, commune_port = free_port(), free_port()
    p_config, p_tokens, c_config, c_tokens = configs(tmp_path, province_port, commune_port)
    province_server = start(p_config, province_port)
    commune_server = start(c_config, commune_port)
    servers = [province_server, commune_server]
    try:
        province, commune = Api(province_server, p_config, p_tokens), Api(commune_server, c_config, c_tokens)
        media = upload(province, tmp_path, "bien-tap")
        listened: dict[str, Any] = {}
        # Listening from before the bulletin is written until well after it has played (about 10 s in here).
        listener = threading.Thread(target=lambda: listened.update(
            run_speaker(commune_server, "spk-1", 24.0, out=tmp_path / "heard.wav", channel="ch-an-binh")))
        listener.start()

        status, bulletin = province("POST", "/api/v1/bulletins", who="bien-tap", body={
            "title": "Thông báo lịch tiêm chủng", "summary": "Tiêm chủng tại trạm y tế", "media": media,
            "class": "thong-thuong", "category": "y-te", "zones": ["tinh"], "plan": {"asap": True}, "submit": True})
        assert status == 201, bulletin
        status, refused = province("POST", f"/api/v1/bulletins/{bulletin['id']}/approve", who="bien-tap")
        assert status == 403, refused  # four eyes: not by its writer
        status, approved = province("POST", f"/api/v1/bulletins/{bulletin['id']}/approve", who="duyet")
        assert status == 200 and approved["state"] in ("approved", "scheduled", "played"), approved

        assert wait_until(lambda: len(imported(commune)) == 1, 30), "the commune takes the bulletin"
        (local,) = imported(commune)
        assert (local["origin_id"], local["source"], local["zones"]) == (bulletin["id"], "province", ["xa-an-binh"])
        assert local["media"] and local["media"] != media  # its own copy of the recording
        assert wait_until(lambda: any(p["ended_at"] for p in commune_plays(commune, local["id"])), 30), \
            "it plays on the commune"
        assert wait_until(lambda: len(results(province, bulletin["id"])) == 1, 30), "its play is reported"
        (result,) = results(province, bulletin["id"])
        assert (result["downstream"], result["channel"], result["area"]) == ("xa-an-binh", "ch-an-binh", CODE)
        assert result["duration_s"] and result["duration_s"] > 3.0 and result["online"] == 1
        listener.join(60)
        assert heard(tmp_path / "heard.wav"), f"the loudspeaker heard the bulletin: {listened}"
        downstreams = province("GET", "/api/v1/link/downstreams")[1]["items"]
        assert downstreams[0]["loudspeakers"] == 1  # the inventory came up too
        days = province("GET", "/api/v1/link/downstreams/xa-an-binh/daily")[1]["items"]
        assert [d["channel"] for d in days] and all(d["channel"] == "ch-an-binh" for d in days)

        def settled(since: float) -> bool:
            state = commune("GET", "/api/v1/link/upstream")[1]
            return bool(state["last_poll_at"] and state["last_poll_at"] > since and state["last_report_at"]
                        and state["last_report_at"] > since)

        cursor = commune("GET", "/api/v1/link/upstream")[1]["cursors"]["plays"]
        assert int(cursor) >= 1  # the reporter's outbox is past the play, and that is stored
        for restart in ("commune", "province"):
            if restart == "commune":
                commune_server.stop()
                commune_server = servers[1] = start(c_config, commune_port)
                commune = Api(commune_server, c_config, c_tokens)
            else:
                province_server.stop()
                province_server = servers[0] = start(p_config, province_port)
                province = Api(province_server, p_config, p_tokens)
            since = time.time()
            assert wait_until(lambda t=since: settled(t), 30), f"the link works again after the {restart} restarts"
            again = time.time()
            assert wait_until(lambda t=again: settled(t), 30), "and once more (a full poll and report after it)"
            assert commune("GET", "/api/v1/link/upstream")[1]["cursors"]["plays"] == cursor, "nothing to resend"
            assert [b["id"] for b in imported(commune)] == [local["id"]], "not imported twice"
            assert len(commune_plays(commune, local["id"])) == 1, "not played twice"
            assert len(results(province, bulletin["id"])) == 1, "not reported twice"
    finally:
        for server in servers:
            server.stop()
