"""Icecast's admin commands on the real server with real peers: Liquidsoap 2.1 (Debian's) as a
studio console whose track titles arrive through /admin/metadata and reach /channels, the
broadcast log and an Ogg listener (as new chains, decoded across by ffmpeg); listclients and
killsource with right and wrong users; /admin/stats, listclients, errors and Icy-* headers
compared with a real icecast2 (Debian's, fed by ffmpeg) in the same test."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import icecast_peer
from broadcaster.codecs.ogg import OggReader, parse_opus_tags
from tests.conftest import ROOT, WAIT_S, RunningServer, start_server, wait_until, write_config

PASSWORD = "studio-pass-1"
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.getuid() == 0 else []


def call(url: str, user: str | None = None, password: str = PASSWORD,
         agent: str = "test-admin/1") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": agent})
    if user is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[tuple[RunningServer, str]]:
    """The server with operators op-a (commune-a) and op-b (commune-b) and an admin, boss, whose
    API token is yielded with it."""
    config = write_config(tmp_path, extra={"live": {"target_delay_ms": 200, "stall_timeout_ms": 2500}})
    for name, role, zone in (("op-a", "operator", "commune-a"), ("op-b", "operator", "commune-b")):
        subprocess.run([sys.executable, "-m", "broadcaster", "user", "add", name, "--role", role, "--zone", zone,
                        "--password", "-c", str(config)], input=PASSWORD + "\n", text=True, check=True, cwd=ROOT,
                       capture_output=True)
    added = subprocess.run([sys.executable, "-m", "broadcaster", "user", "add", "boss", "--role", "admin",
                            "--password", "--token", "-c", str(config)], input=PASSWORD + "\n", text=True,
                           check=True, cwd=ROOT, capture_output=True)
    token = added.stdout.strip().splitlines()[-1].split()[-1]
    server = start_server(config)
    yield server, token
    server.stop()


class Recorder:
    """An Ogg listener that keeps what it hears, for at most ``seconds`` (a thread)."""

    def __init__(self, url: str, seconds: float) -> None:
        self.data = bytearray()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(url, seconds), daemon=True)
        self.thread.start()

    def _run(self, url: str, seconds: float) -> None:
        request = urllib.request.Request(url, headers={"User-Agent": "test-listener/1"})
        deadline = time.monotonic() + seconds
        with urllib.request.urlopen(request, timeout=10) as response:
            while not self.stop.is_set() and time.monotonic() < deadline:
                chunk = response.read1(65536)
                if not chunk:
                    break
                self.data += chunk

    def pages(self) -> bytes:
        """Whole pages only (the last one may be cut where recording stopped)."""
        reader = OggReader()
        reader.feed(bytes(self.data))
        return b"".join(page.serialize() for page in reader.pages())

    def titles(self) -> list[str]:
        reader = OggReader()
        reader.feed(bytes(self.data))
        return [next((t[6:] for t in parse_opus_tags(p)[1] if t.startswith("TITLE=")), "")
                for p, _ in reader.packets() if p.startswith(b"OpusTags")]

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(15)


def liquidsoap(port: int, user: str = "op-a") -> subprocess.Popen[str]:
    """A studio console: a tone with a new track and title every 2 s, as MP3 (Liquidsoap sends the
    titles of an MP3 stream to /admin/metadata, with the user and password it streams with)."""
    script = f"""
settings.log.stdout.set(true)
settings.log.level.set(3)
s = insert_metadata(sine(440.))
n = ref(0)
def next() =
  n := !n + 1
  s.insert_metadata(new_track=true, [("title", "Bản tin số #{{!n}}"), ("artist", "Đài xã")])
end
thread.run(delay=0.5, every=2., next)
output.icecast(%mp3(bitrate=64, samplerate=44100), host="127.0.0.1", port={port}, user="{user}",
               password="{PASSWORD}", mount="/ingest/ch-a", name="Đài xã A", s)
"""
    return subprocess.Popen([*AS_NOBODY, "liquidsoap", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def channel(server: RunningServer, channel_id: str = "ch-a") -> dict[str, Any]:
    return next(c for c in server.get_json("/channels") if c["id"] == channel_id)


def broadcasts(server: RunningServer, token: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(server.url("/api/v1/broadcasts?limit=50"),
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return list(json.loads(response.read())["items"])


@pytest.mark.skipif(shutil.which("liquidsoap") is None, reason="liquidsoap is not installed (make test installs it)")
def test_liquidsoap_titles_reach_channels_the_log_and_ogg_listeners(studio: tuple[RunningServer, str],
                                                                     tmp_path: Path) -> None:
    server, token = studio
    recorder = Recorder(server.url("/ch-a.ogg"), WAIT_S + 10)
    console = liquidsoap(server.http_port)
    try:
        assert wait_until(lambda: (channel(server)["title"] or "").startswith("Đài xã - Bản tin số ")), \
            "no title from Liquidsoap"
        first = channel(server)["title"]
        assert wait_until(lambda: channel(server)["title"] not in (None, first)), "the next track's title"
        assert channel(server)["live"] is not None
        assert wait_until(lambda: len(recorder.titles()) >= 3), recorder.titles()

        # listclients: our listener, to a user who may read the channel, and nobody else
        status, _, body = call(server.url("/admin/listclients?mount=/ch-a.ogg"), "op-a")
        assert status == 200, body
        source = ET.fromstring(body).find("source")
        assert source is not None and source.get("mount") == "/ch-a.ogg"
        assert source.findtext("Listeners") == "1"
        listener = source.find("listener")
        assert listener is not None and listener.findtext("IP") == "127.0.0.1"
        assert listener.findtext("UserAgent") == "test-listener/1" and int(listener.findtext("Connected") or -1) >= 0
        assert call(server.url("/admin/listclients?mount=/ch-a.ogg"), "op-b")[0] == 403
        assert call(server.url("/admin/listclients?mount=/ch-a.ogg"))[0] == 401
        assert call(server.url("/admin/listclients?mount=/ch-a.ogg"), "op-a", "wrong")[0] == 401

        # killsource: not by another commune's operator; by this one, and the title goes with the session
        session = channel(server)["live"]["session"]
        assert call(server.url("/admin/killsource?mount=/ingest/ch-a"), "op-b")[0] == 403
        status, _, body = call(server.url("/admin/killsource?mount=/ingest/ch-a"), "op-a")
        assert status == 200 and ET.fromstring(body).findtext("message") == "Source Removed"
        assert wait_until(lambda: (channel(server)["live"] or {}).get("session") != session)

        console.terminate()  # (it reconnects after a kill, as consoles do) the studio leaves
        out, _ = console.communicate(timeout=15)
        assert wait_until(lambda: channel(server)["live"] is None and channel(server)["title"] is None), \
            "the title is cleared when the studio leaves"
        assert wait_until(lambda: recorder.titles()[-1] == "Kênh ch-a"), "listeners are told, too"
    finally:
        if console.poll() is None:
            console.kill()
            console.communicate()
        recorder.finish()
    assert "Metadata update may have failed" not in out, out[-2000:]

    # the broadcast log: the session's entry has the titles, and who removed it
    entries = [e for e in broadcasts(server, token) if e["kind"] == "live" and e["channel"] == "ch-a"]
    killed = next(e for e in entries if "killsource" in (e.get("detail") or ""))
    assert "title: Đài xã - Bản tin số " in killed["detail"] and "source removed by op-a" in killed["detail"]

    # the Ogg listener: one chain per title, each beginning with its own headers; ffmpeg decodes
    # across the boundaries without an error and reads the titles
    titles = recorder.titles()
    assert titles[0] == "Kênh ch-a" and titles[-1] == "Kênh ch-a", "the channel's name before and after"
    studio_titles = [t for t in titles if t != "Kênh ch-a"]
    assert len(set(studio_titles)) >= 2 and all(t.startswith("Đài xã - Bản tin số ") for t in studio_titles), titles
    recording = tmp_path / "listener.ogg"
    recording.write_bytes(recorder.pages())
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(recording), "-f", "s16le", "-"],
                             capture_output=True, timeout=60)
    assert decoded.returncode == 0 and decoded.stderr == b"", decoded.stderr.decode()
    assert len(decoded.stdout) > 2 * 48000 * 3, "seconds of audio across the chains"
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_packets", "-show_entries", "stream_tags", "-of", "json",
                            str(recording)], capture_output=True, timeout=60, text=True)
    tags = json.loads(probe.stdout)["streams"][0]["tags"]
    assert "Đài xã - Bản tin số " in tags["TITLE"], tags


@pytest.fixture
def icecast() -> Iterator[int]:
    """icecast2 with /ch-0.ogg (ffmpeg, no name) and /kenh.ogg (ffmpeg, named as our ch-a is)."""
    if shutil.which("icecast2") is None:
        pytest.skip("icecast2 is not installed (make test installs it)")
    with icecast_peer(20) as (_, port):
        named = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-nostdin", "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-ac", "1", "-c:a", "libopus", "-b:a", "32000", "-f", "ogg", "-content_type", "audio/ogg",
             "-ice_name", "Kênh ch-a", "-ice_description", "Kênh ch-a (commune-a)",
             f"icecast://source:peer-source@127.0.0.1:{port}/kenh.ogg"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert wait_until(lambda: call(f"http://127.0.0.1:{port}/admin/listclients?mount=/kenh.ogg",
                                           "admin", "peer-admin")[0] == 200)
            yield port
        finally:
            named.kill()
            named.wait()


def message(body: bytes) -> bytes:
    """An error's message: in the HTML page's <b>, or the plain text, up to our added detail."""
    text = body.split(b"<b>")[-1].split(b"</b>")[0].strip()
    return text.split(b":")[0]


def head(port: int, path: str) -> bytes:
    """The raw response head of a stream, bytes as sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


def header(raw: bytes, name: bytes) -> bytes:
    for line in raw.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    raise AssertionError(f"no {name!r} in {raw!r}")


def test_admin_documents_errors_and_icy_headers_match_icecast(studio: tuple[RunningServer, str],
                                                              icecast: int) -> None:
    server, _ = studio
    theirs_url, ours_url = f"http://127.0.0.1:{icecast}", server.url("")

    # /admin/stats: every element Icecast 2.4 has, at the top and per source
    _, _, theirs = call(theirs_url + "/admin/stats", "admin", "peer-admin")
    status, headers, ours = call(ours_url + "/admin/stats", "boss")
    assert status == 200 and headers["content-type"].startswith("text/xml")
    their_root, our_root = ET.fromstring(theirs), ET.fromstring(ours)
    assert {e.tag for e in their_root if e.tag != "source"} <= {e.tag for e in our_root}
    their_source = {e.tag for e in their_root.find("source") or []}
    only_with_a_source_client = {"source_ip", "user_agent"}  # ours play without a studio connected
    for source in our_root.findall("source"):
        assert their_source - only_with_a_source_client <= {e.tag for e in source}
    names = {s.get("mount"): s.findtext("server_name") for s in our_root.findall("source")}
    assert names == {"/ch-a.ogg": "Kênh ch-a", "/ch-b.ogg": "Kênh ch-b"}

    # listclients: the same elements for a listener
    listeners = [subprocess.Popen(["ffmpeg", "-v", "error", "-nostdin", "-user_agent", "probe/1", "-i", url,
                                   "-t", "30", "-f", "null", "-"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
                 for url in (theirs_url + "/kenh.ogg", ours_url + "/ch-a.ogg")]
    try:
        def clients(base: str, mount: str, user: str, password: str) -> ET.Element:
            return ET.fromstring(call(f"{base}/admin/listclients?mount={mount}", user, password)[2])

        assert wait_until(lambda: clients(theirs_url, "/kenh.ogg", "admin", "peer-admin").find(
            "source/listener") is not None)
        assert wait_until(lambda: clients(ours_url, "/ch-a.ogg", "boss", PASSWORD).find(
            "source/listener") is not None)
        their_listener = clients(theirs_url, "/kenh.ogg", "admin", "peer-admin").find("source/listener")
        our_listener = clients(ours_url, "/ch-a.ogg", "boss", PASSWORD).find("source/listener")
        assert their_listener is not None and our_listener is not None
        assert [e.tag for e in our_listener] == [e.tag for e in their_listener] == ["IP", "UserAgent", "Connected",
                                                                                    "ID"]
        assert our_listener.findtext("UserAgent") == their_listener.findtext("UserAgent") == "probe/1"
    finally:
        for process in listeners:
            process.kill()
            process.wait()

    # errors: the same statuses, shapes and first words
    for path, user, password in (("/admin/listclients?mount=/nope.ogg", "admin", "peer-admin"),
                                 ("/admin/bogus", "admin", "peer-admin"), ("/admin/stats", None, "")):
        their_status, their_headers, their_body = call(theirs_url + path, user, password)
        our_status, our_headers, our_body = call(ours_url + path, "boss" if user else None)
        assert our_status == their_status, path
        assert our_headers["content-type"].split(";")[0] == their_headers["content-type"].split(";")[0], path
        assert message(our_body).startswith(message(their_body)), (our_body, their_body)
        if our_status == 401:
            assert our_headers["www-authenticate"].startswith("Basic")

    # Icy-* headers: named and valued as Icecast sends them (lower case; the name as UTF-8 bytes);
    # ffmpeg and GStreamer read the Vietnamese name intact from ours as from theirs
    their_head, our_head = head(icecast, "/kenh.ogg"), head(server.http_port, "/ch-a.ogg")
    assert header(our_head, b"icy-name") == header(their_head, b"icy-name") == "Kênh ch-a".encode()
    assert header(our_head, b"icy-description") == header(their_head, b"icy-description")
    assert b"\r\nicy-name:" in their_head and b"\r\nicy-name:" in our_head
    for url in (theirs_url + "/kenh.ogg", ours_url + "/ch-a.ogg"):
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format_tags", "-of", "json", url],
                               capture_output=True, text=True, timeout=30)
        assert json.loads(probe.stdout)["format"]["tags"]["icy-name"] == "Kênh ch-a", probe.stdout
        if shutil.which("gst-launch-1.0"):
            gst = subprocess.run(["gst-launch-1.0", "-t", "souphttpsrc", f"location={url}", "iradio-mode=true",
                                  "num-buffers=3", "!", "fakesink"], capture_output=True, text=True, timeout=30)
            assert "organization: Kênh ch-a" in gst.stdout, gst.stdout[-2000:]


def test_killsource_needs_every_channel_of_the_session_and_a_console_not_yet_on_air_is_no_500(
        studio: tuple[RunningServer, str]) -> None:
    server, _ = studio
    # A console that has its 100 Continue but has sent no audio yet: a title and a kill must not fail.
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
    credentials = base64.b64encode(f"op-a:{PASSWORD}".encode()).decode()
    sock.sendall(f"PUT /ch-a.ogg HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\n"
                 "Content-Type: audio/ogg\r\nExpect: 100-continue\r\n\r\n".encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 100")
    status, _, body = call(server.url("/admin/metadata?mount=/ch-a.ogg&mode=updinfo&song=S%E1%BB%9Bm"), "op-a")
    assert status == 200 and b"successful" in body, body
    status, _, body = call(server.url("/admin/killsource?mount=/ch-a.ogg"), "op-a")
    assert (status, b"Source Removed" in body) in ((200, True), (400, False)), (status, body)
    sock.close()
    # The province live on every commune (a zone mount): a commune operator may not take it off the air.
    console = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-nostdin", "-re", "-f", "lavfi", "-i", "sine=frequency=880:duration=20",
         "-c:a", "libopus", "-f", "ogg", "-content_type", "audio/ogg",
         f"icecast://boss:{PASSWORD}@127.0.0.1:{server.http_port}/ingest/zone/province"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: channel(server, "ch-b").get("live") is not None), "the province is live"
        status, _, body = call(server.url("/admin/killsource?mount=/ch-a.ogg"), "op-a")
        assert status == 403 and b"more channels than yours" in body, (status, body)
        assert channel(server, "ch-b")["live"] is not None
        status, _, body = call(server.url("/admin/killsource?mount=/ch-a.ogg"), "boss")
        assert status == 200 and b"Source Removed" in body, body
        assert wait_until(lambda: channel(server, "ch-b").get("live") is None), "off every channel"
    finally:
        console.kill()
        console.wait()
