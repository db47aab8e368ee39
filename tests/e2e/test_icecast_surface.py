"""The Icecast-compatible surface on the real server, beside a real icecast2 (Debian's, fed by
ffmpeg) in the same test: /status-json.xsl has every field Icecast 2.4's has, where it has it;
mount aliases, .m3u/.pls playlists and CORS for public channels; OPTIONS answers a preflight."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningServer, wait_until

ICECAST_XML = """<icecast>
  <limits><clients>20</clients><sources>2</sources><source-timeout>10</source-timeout></limits>
  <authentication><source-password>test-source</source-password><admin-user>admin</admin-user>
    <admin-password>test-admin</admin-password></authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <paths><logdir>{dir}</logdir><webroot>/usr/share/icecast2/web</webroot>
    <adminroot>/usr/share/icecast2/admin</adminroot><pidfile>{dir}/pid</pidfile></paths>
  <logging><accesslog>-</accesslog><errorlog>error.log</errorlog><loglevel>2</loglevel></logging>
  <security><chroot>0</chroot>{owner}</security>
</icecast>
"""


@pytest.fixture
def icecast() -> Iterator[int]:
    """icecast2 with one Ogg/Opus mount, /ch-0.ogg, fed by ffmpeg; yields its port."""
    binary = shutil.which("icecast2")
    if binary is None:
        pytest.skip("icecast2 is not installed (make test installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)  # as root icecast2 changes to nobody, who writes its log here
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        owner = "<changeowner><user>nobody</user><group>nogroup</group></changeowner>" if os.getuid() == 0 else ""
        xml = Path(tmp) / "icecast.xml"
        xml.write_text(ICECAST_XML.format(port=port, dir=tmp, owner=owner))
        server = subprocess.Popen([binary, "-c", str(xml)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        source = None
        try:
            assert wait_until(lambda: _connects(port)), "icecast2 listens"
            source = subprocess.Popen(
                ["ffmpeg", "-v", "error", "-nostdin", "-re", "-f", "lavfi",
                 "-i", "sine=frequency=440:sample_rate=48000", "-ac", "1", "-c:a", "libopus", "-b:a", "32000",
                 "-f", "ogg", "-content_type", "audio/ogg",
                 f"icecast://source:test-source@127.0.0.1:{port}/ch-0.ogg"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            assert wait_until(lambda: _on_air(port)), "ffmpeg is on air on icecast2"
            yield port
        finally:
            if source is not None:
                source.kill()
                source.wait()
            server.kill()
            server.wait()


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _on_air(port: int) -> bool:
    """On air with its codec known (icecast2 adds subtype once it has parsed the stream)."""
    try:
        return any("subtype" in source for source in sources(_status(port)))
    except ValueError:  # icecast2's XSL writes no valid JSON while it has no source
        return False


def _status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status-json.xsl", timeout=10) as response:
        return dict(json.loads(response.read()))


def sources(status: dict[str, Any]) -> list[dict[str, Any]]:
    """icestats.source as an exporter reads it: an object for one source, a list for several."""
    found = status["icestats"].get("source", [])
    return [found] if isinstance(found, dict) else list(found)


def test_status_json_has_icecast_fields_and_types(server: RunningServer, icecast: int) -> None:
    theirs = _status(icecast)
    ours = server.get_json("/status-json.xsl")
    assert set(theirs["icestats"]) <= set(ours["icestats"]), "every top-level field of Icecast 2.4"
    their_source, our_sources = sources(theirs)[0], sources(ours)
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
        assert wait_until(lambda: sources(server.get_json("/status-json.xsl"))[0]["listeners"] == 1)
    peak = sources(server.get_json("/status-json.xsl"))[0]["listener_peak"]
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
