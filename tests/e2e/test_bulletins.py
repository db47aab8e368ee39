"""A bulletin on the real server: written by an editor, approved by the commune's chairman, heard by a
reference loudspeaker at its time, shown in the zone's Atom feed; an unapproved one is never heard."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import soundfile

from broadcaster.codecs.pcm import dominant_frequency
from tests.conftest import Api, prepare, run_speaker, start_server, wait_until
from tests.e2e.test_schedule import local_in, upload

ATOM = "{http://www.w3.org/2005/Atom}"


def people(config: Path, tokens: dict[str, str]) -> None:
    from broadcaster.config import load_config
    from broadcaster.storage import KeySealer, Storage

    loaded = load_config(config)
    storage = Storage(loaded.storage.path, KeySealer.from_file(loaded.storage.secret_file))
    try:
        for name, permission in (("editor-a", "bulletin.create"), ("chair-a", "bulletin.approve")):
            storage.add_user(name, "viewer", ["commune-a"], permissions=(permission,))
            tokens[name] = storage.new_token(name)
    finally:
        storage.close()


def test_approved_by_a_second_user_it_is_heard_at_its_time_and_shown_on_the_board(tmp_path: Path) -> None:
    config, tokens = prepare(tmp_path)
    people(config, tokens)
    server = start_server(config)
    try:
        api = Api(server, config, tokens)
        media = upload(api, tmp_path, 660.0, 3.0)
        never = upload(api, tmp_path, 1320.0, 3.0)

        def bulletin(media_id: str, at: str, title: str) -> dict[str, Any]:
            status, made = api("POST", "/api/v1/bulletins", who="editor-a", body={
                "title": title, "summary": "Tiêm chủng tại trạm y tế xã", "text": "Trạm y tế xã thông báo.",
                "media": media_id, "zones": ["commune-a"], "plan": {"at": [at]}, "submit": True})
            assert status == 201 and made["state"] == "submitted", made
            return made

        heard = bulletin(media, local_in(6.0), "Lịch tiêm chủng")
        unapproved = bulletin(never, local_in(6.0), "Chưa duyệt")
        assert api("POST", f"/api/v1/bulletins/{heard['id']}/approve", who="editor-a")[0] == 403
        status, approved = api("POST", f"/api/v1/bulletins/{heard['id']}/approve", who="chair-a")
        assert status == 200 and approved["state"] == "approved", approved

        result: dict[str, Any] = {}
        listener = threading.Thread(target=lambda: result.update(
            run_speaker(server, "spk-1", 14.0, out=tmp_path / "heard.wav")))
        listener.start()
        listener.join(60)
        audio, _ = soundfile.read(str(tmp_path / "heard.wav"), dtype="float32")
        seconds = [dominant_frequency(audio[i:i + 24000]) for i in range(0, audio.size - 24000, 24000)
                   if np.sqrt(np.mean(audio[i:i + 24000] ** 2)) > 0.01]
        assert sum(abs(f - 660) < 5 for f in seconds) >= 4, seconds  # its 3 s, in half-second windows
        assert not any(abs(f - 1320) < 5 for f in seconds), "the unapproved bulletin is never heard"

        assert wait_until(lambda: api("GET", f"/api/v1/bulletins/{heard['id']}/plays", who="chair-a")[1]["items"]
                          and api("GET", f"/api/v1/bulletins/{heard['id']}/plays", who="chair-a")[1]["items"][0][
                              "outcome"] == "completed")
        plays = api("GET", f"/api/v1/bulletins/{heard['id']}/plays", who="chair-a")[1]["items"]
        assert [(p["channel"], p["online"]) for p in plays] == [("ch-a", 1)]
        assert api("GET", f"/api/v1/bulletins/{unapproved['id']}/plays", who="chair-a")[1]["items"] == []

        status, atom = api("GET", "/api/v1/eboards/commune-a.atom", who=None)
        assert status == 200
        entries = ElementTree.fromstring(atom).findall(f"{ATOM}entry")
        assert [e.findtext(f"{ATOM}title") for e in entries] == ["Lịch tiêm chủng"]
        assert entries[0].findtext(f"{ATOM}content") == "Trạm y tế xã thông báo."
    finally:
        server.stop()
