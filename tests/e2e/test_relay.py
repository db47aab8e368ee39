"""Relays on the real server with real upstreams: ffmpeg's hls muxer writing a live playlist
served on loopback, and Debian's icecast2 fed MP3 by ffmpeg. Each upstream is killed in the
middle and brought back: the loudspeaker hears the relay, then the channel's idle programme,
then the relay again, and the broadcast log says so. No assert is on elapsed time: the order
of what is heard and what is recorded is."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from benchmarks.common import HlsUpstream, icecast_peer, icecast_source, icecast_sources, icecast_status
from benchmarks.relay import RELAY_HZ, timeline
from tests.conftest import Api, prepare, run_speaker, start_server, wait_until

VN = ZoneInfo("Asia/Ho_Chi_Minh")
FAST = {"relay": {"allow_private": True, "stall_timeout_ms": 1000, "backoff_max_s": 2.0, "buffer_s": 0.5}}

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


@pytest.fixture
def hls(tmp_path: Path) -> Iterator[HlsUpstream]:
    upstream = HlsUpstream(tmp_path / "hls", RELAY_HZ)
    upstream.start()
    yield upstream
    upstream.stop()


def heard(wav: Path) -> list[str]:
    """What the loudspeaker heard, in order of change: "relay", "idle" or "silence"."""
    return [what for _, what in timeline(wav, step_s=0.5)]


def relay_entries(api: Api, kind: str) -> list[dict[str, Any]]:
    return [e for e in api("GET", "/api/v1/broadcasts?zone=commune-a")[1]["items"]
            if e["kind"] == kind and "relay=" in e["detail"]]


def local_in(seconds: float) -> str:
    return (datetime.now(VN) + timedelta(seconds=seconds)).replace(tzinfo=None).isoformat(timespec="seconds")


def test_scheduled_hls_relay_falls_back_and_returns(tmp_path: Path, hls: HlsUpstream) -> None:
    config, tokens = prepare(tmp_path, FAST)
    server = start_server(config)
    try:
        api = Api(server, config, tokens)
        status, relay = api("POST", "/api/v1/relays", who="admin",
                            body={"name": "VOV1", "url": hls.url, "zone": "province"})
        assert status == 201, relay
        status, listed = api("GET", "/api/v1/relays", who="op-a")
        assert [r["id"] for r in listed["items"]] == [relay["id"]], "a commune sees the province's relays"
        status, programme = api("POST", "/api/v1/programmes", who="op-a",
                                body={"title": "Tiếp sóng VOV1", "zones": ["commune-a"], "relay": relay["id"],
                                      "start": local_in(4), "duration_s": 22, "recurrence": "daily"})
        assert status == 201, programme
        wav = tmp_path / "heard.wav"
        result: dict[str, Any] = {}
        listener = threading.Thread(target=lambda: result.update(run_speaker(server, "spk-1", 32.0, out=wav)))
        listener.start()

        def relay_state() -> str:
            relays = api("GET", "/api/v1/channels/ch-a")[1]["relays"]
            return str(relays[0]["state"]) if relays else "none"

        assert wait_until(lambda: relay_state() == "up", 20), "the relay starts at its time"
        time.sleep(5)  # some of the relay is heard
        hls.stop()
        assert wait_until(lambda: relay_state() == "down", 20), "the relay notices the upstream is gone"
        time.sleep(4)  # the idle programme is heard meanwhile
        hls.start()
        assert wait_until(lambda: relay_state() == "up", 20), "the relay comes back by itself"
        listener.join(60)
        assert result.get("lost", 1) == 0 or result, result
        runs = heard(wav)
        assert "relay" in runs and runs.index("relay") < len(runs) - 1
        first = runs.index("relay")
        assert runs[first:first + 3] == ["relay", "idle", "relay"] or runs[first:first + 4] == [
            "relay", "silence", "idle", "relay"], f"heard {runs}"
        assert wait_until(lambda: relay_state() == "none", 20), "the relay ends with its programme"
        entries = relay_entries(api, "scheduled")
        assert len(entries) == 1, entries
        entry = entries[0]
        assert entry["item"] == "Tiếp sóng VOV1" and entry["outcome"] == "completed", entry
        assert "upstream lost" in entry["detail"] and "upstream back" in entry["detail"], entry["detail"]
        assert entry["detail"].index("upstream lost") < entry["detail"].index("upstream back")
        exposition = server.get("/metrics").decode()
        reconnects = [line for line in exposition.splitlines()
                      if line.startswith(f'broadcaster_relay_reconnects_total{{relay="{relay["id"]}"}}')]
        assert reconnects and float(reconnects[0].split()[-1]) >= 1, reconnects
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("icecast2") is None, reason="icecast2 is not installed (make test installs it)")
def test_icecast_mp3_relay_on_demand(tmp_path: Path) -> None:
    config, tokens = prepare(tmp_path, FAST)
    server = start_server(config)
    try:
        with icecast_peer(10) as (_, port):
            source = icecast_source(port, "/vov1.mp3", RELAY_HZ, codec="mp3", bitrate=64000)
            api = Api(server, config, tokens)
            status, relay = api("POST", "/api/v1/relays", who="admin",
                                body={"name": "Đài tỉnh", "url": f"http://127.0.0.1:{port}/vov1.mp3",
                                      "zone": "province"})
            assert status == 201, relay
            status, _ = api("POST", "/api/v1/channels/ch-b/relay", who="op-a", body={"relay": relay["id"]})
            assert status == 404, "commune-b's channel does not exist for commune-a's operator"
            status, run = api("POST", "/api/v1/channels/ch-a/relay", who="op-a",
                              body={"relay": relay["id"], "duration_s": 600})
            assert status == 201, run

            def relay_state() -> str:
                relays = api("GET", "/api/v1/channels/ch-a")[1]["relays"]
                return str(relays[0]["state"]) if relays else "none"

            wav = tmp_path / "heard.wav"
            listener = threading.Thread(target=lambda: run_speaker(server, "spk-1", 20.0, out=wav))
            assert wait_until(lambda: relay_state() == "up", 20), "the relay reaches icecast2"
            # The same relay on the other commune's channel too: fetched and decoded once.
            status, other = api("POST", "/api/v1/channels/ch-b/relay", who="admin", body={"relay": relay["id"]})
            assert status == 201 and other["state"] == "up", other
            mounts = {s["listenurl"].rsplit("/", 1)[1]: s for s in icecast_sources(icecast_status(port))}
            assert mounts["vov1.mp3"]["listeners"] == 1, "one connection to the upstream for both channels"
            assert api("DELETE", "/api/v1/channels/ch-b/relay", who="admin")[0] == 204
            assert relay_state() == "up", "the other channel's run keeps the relay's worker"
            listener.start()
            time.sleep(4)
            source.kill()
            source.wait()
            assert wait_until(lambda: relay_state() == "down", 20), "the source is gone from icecast2"
            time.sleep(4)
            source = icecast_source(port, "/vov1.mp3", RELAY_HZ, codec="mp3", bitrate=64000)
            try:
                assert wait_until(lambda: relay_state() == "up", 20), "the relay reconnects by itself"
                listener.join(40)
            finally:
                source.kill()
                source.wait()
            runs = heard(wav)
            first = runs.index("relay")
            assert "idle" in runs[first:] and "relay" in runs[runs.index("idle", first):], f"heard {runs}"
            assert api("DELETE", "/api/v1/channels/ch-a/relay", who="op-a")[0] == 204
            assert relay_state() == "none"
        assert wait_until(lambda: bool(relay_entries(api, "relay")) and
                          relay_entries(api, "relay")[0]["outcome"] == "stopped")
        entry = relay_entries(api, "relay")[0]
        assert entry["item"] == "Đài tỉnh" and entry["started_by"] == "op-a", entry
        assert "upstream lost" in entry["detail"] and "upstream back" in entry["detail"], entry["detail"]
    finally:
        server.stop()


def test_private_upstreams_are_refused_unless_allowed(tmp_path: Path, hls: HlsUpstream) -> None:
    config, tokens = prepare(tmp_path)  # relay.allow_private is false by default
    server = start_server(config)
    try:
        api = Api(server, config, tokens)
        status, reply = api("POST", "/api/v1/relays", body={"name": "LAN", "url": hls.url, "zone": "province"})
        assert status == 400 and "not a public address" in reply["error"]["message"], reply
        for url in ("ftp://example.org/x", "http://user:pw@example.org/x", "file:///etc/passwd"):
            status, reply = api("POST", "/api/v1/relays", body={"name": "x", "url": url, "zone": "province"})
            assert status == 400, (url, reply)
        # A name is only resolved when it plays: "localhost" is stored, then refused on air.
        status, relay = api("POST", "/api/v1/relays", body={"name": "Local", "url": hls.url.replace(
            "127.0.0.1", "localhost"), "zone": "province"})
        assert status == 201, relay
        status, run = api("POST", "/api/v1/channels/ch-a/relay", body={"relay": relay["id"]})
        assert status == 201, run
        assert wait_until(lambda: not api("GET", "/api/v1/channels/ch-a")[1]["relays"], 20), "refused, it ends"
        assert wait_until(lambda: bool(relay_entries(api, "relay")))
        entry = relay_entries(api, "relay")[0]
        assert wait_until(lambda: relay_entries(api, "relay")[0]["outcome"] == "failed"), entry
        assert "not a public address" in relay_entries(api, "relay")[0]["detail"]
        assert api("DELETE", f"/api/v1/relays/{relay['id']}", who="viewer-a")[0] in (403, 404)
        base = {"title": "x", "zones": ["commune-a"], "start": local_in(3600), "duration_s": 60}
        for patch, code in (({}, "bad_value"), ({"relay": relay["id"], "media": ["m"]}, "bad_value"),
                            ({"relay": "rl-nope"}, "bad_reference")):
            status, reply = api("POST", "/api/v1/programmes", who="op-a", body={**base, **patch})
            assert status == 400 and reply["error"]["code"] == code, (patch, reply)
    finally:
        log = server.stop()
    assert "refused" in log and "not a public address" in log
