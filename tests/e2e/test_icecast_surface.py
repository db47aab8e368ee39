"""The Icecast-compatible surface on the real server, beside a real icecast2 (Debian's, fed by
ffmpeg) in the same test: /status-json.xsl has every field Icecast 2.4's has, where it has it;
mount aliases, .m3u/.pls playlists and CORS for public channels; OPTIONS answers a preflight."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from benchmarks.common import icecast_peer, icecast_sources, icecast_status
from tests.conftest import RunningServer, wait_until


@pytest.fixture
def icecast() -> Iterator[int]:
    """icecast2 with one Ogg/Opus mount, /ch-0.ogg, fed by ffmpeg; yields its port."""
    if shutil.which("icecast2") is None:
        pytest.skip("icecast2 is not installed (make test installs it)")
    with icecast_peer(20) as (_, port):
        yield port


def test_status_json_has_icecast_fields_and_types(server: RunningServer, icecast: int) -> None:
    theirs = icecast_status(icecast)
    ours = server.get_json("/status-json.xsl")
    assert set(theirs["icestats"]) <= set(ours["icestats"]), "every top-level field of Icecast 2.4"
    their_source, our_sources = icecast_sources(theirs)[0], icecast_sources(ours)
    assert [s["server_name"] for s in our_sources] == ["Kênh ch-a", "Kênh ch-b"]
    for source in our_sources:
        assert set(their_source) <= set(source), set(their_source) - set(source)
        for key, value in their_source.items():
            assert type(source[key]) is type(value), key
        assert source["server_type"] == their_source["server_type"] == "audio/ogg"
        assert source["subtype"] == their_source["subtype"] == "Opus"
    assert our_sources[0]["listenurl"] == f"http://127.0.0.1:{server.http_port}/ch-a.ogg"


def test_mount_alias_playlists_and_cors(server: RunningServer) -> None:
    with urllib.request.urlopen(server.url("/ch-a.ogg"), timeout=10) as response:
        assert response.headers["Content-Type"] == "audio/ogg"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.read(4) == b"OggS"
        assert wait_until(lambda: icecast_sources(server.get_json("/status-json.xsl"))[0]["listeners"] == 1)
    peak = icecast_sources(server.get_json("/status-json.xsl"))[0]["listener_peak"]
    assert peak == 1
    m3u = server.get("/ch-a.m3u").decode()
    assert m3u.splitlines()[-1] == f"http://127.0.0.1:{server.http_port}/ch-a.ogg"
    pls = server.get("/ch-b.pls").decode()
    assert f"File1=http://127.0.0.1:{server.http_port}/ch-b.ogg" in pls and "NumberOfEntries=1" in pls
    request = urllib.request.Request(server.url("/ch-a.ogg"), method="OPTIONS")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204
        assert "GET" in response.headers["Access-Control-Allow-Methods"]
    with pytest.raises(urllib.error.HTTPError) as info:
        server.get("/ch-z.ogg")
    assert info.value.code == 404
