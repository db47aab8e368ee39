"""HTTPS on the HTTP port (``server.tls``) with a self-signed certificate made by the test: /healthz and a
channel's stream over TLS, the server knowing it is secure (the URLs it hands out are https), an ffmpeg
Icecast source over TLS, and a webcast over wss:// heard by the reference loudspeaker. Plain HTTP on the
TLS port gets no answer in the clear, and TLS 1.1 is refused."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile

from broadcaster.codecs.pcm import dominant_frequency
from tests.certs import self_signed
from tests.conftest import RunningServer, run_speaker, start_server, tone_file, wait_until, write_config
from tests.e2e.test_studio_formats import PASSWORD
from tests.e2e.webcast_client import open_webcast, stream, webm_tone


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[tuple[RunningServer, Path, ssl.SSLContext]]:
    cert, key = self_signed(tmp_path)
    with socket.socket() as probe:  # a free port for the plain-HTTP redirect
        probe.bind(("127.0.0.1", 0))
        redirect_port = probe.getsockname()[1]
    config = write_config(tmp_path, extra={"server": {"tls": {"certificate": str(cert), "key": str(key),
                                                              "redirect_port": redirect_port}},
                                           "live": {"target_delay_ms": 200, "stall_timeout_ms": 2500}})
    from broadcaster.config import load_config
    from broadcaster.storage import KeySealer, Storage, seed_from_config

    loaded = load_config(config)
    storage = Storage(loaded.storage.path, KeySealer.from_file(loaded.storage.secret_file))
    try:
        if storage.is_empty():
            seed_from_config(storage, loaded)
        storage.add_user("op-a", "operator", ["commune-a"], PASSWORD)
    finally:
        storage.close()
    server = start_server(config)
    context = ssl.create_default_context(cafile=str(cert))  # verifies the chain and 127.0.0.1
    (tmp_path / "redirect_port").write_text(str(redirect_port))
    yield server, tmp_path, context
    server.stop()


def https(server: RunningServer, context: ssl.SSLContext, path: str, limit: int | None = None) -> bytes:
    with urllib.request.urlopen(f"https://127.0.0.1:{server.http_port}{path}", timeout=30,
                                context=context) as response:
        return bytes(response.read(limit) if limit else response.read())


def live(server: RunningServer, context: ssl.SSLContext) -> Any:
    return json.loads(https(server, context, "/channels"))[0]["live"]


def test_https_serves_health_streams_and_knows_it_is_secure(secure: tuple[RunningServer, Path, ssl.SSLContext]
                                                            ) -> None:
    server, _, context = secure
    assert json.loads(https(server, context, "/healthz"))["status"] == "ok"
    assert https(server, context, "/channels/ch-a.ogg", 4096).startswith(b"OggS")
    status = json.loads(https(server, context, "/status-json.xsl"))["icestats"]["source"]
    assert all(s["listenurl"].startswith(f"https://127.0.0.1:{server.http_port}/") for s in status), status
    request = urllib.request.Request(f"https://127.0.0.1:{server.http_port}/api/v1/session", method="POST",
                                     data=json.dumps({"name": "op-a", "password": PASSWORD}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("bc_session=") and "; Secure" in cookie, "the console's cookie is Secure over TLS"
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as plain:
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        try:
            while chunk := plain.recv(4096):
                answer += chunk
        except OSError:
            pass
        assert b"200 OK" not in answer and b'"status"' not in answer, "nothing in the clear"
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(secure[1] / "server.crt"))
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as raw:
            with old.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass


def test_ffmpeg_icecast_source_over_tls(secure: tuple[RunningServer, Path, ssl.SSLContext]) -> None:
    server, tmp_path, context = secure
    wav = tone_file(tmp_path / "studio.wav", 880.0, -12.0, 4.0)
    console = subprocess.Popen(["ffmpeg", "-v", "error", "-nostdin", "-re", "-i", str(wav), "-c:a", "libopus",
                                "-page_duration", "200000", "-f", "ogg", "-content_type", "audio/ogg", "-tls", "1",
                                "-ca_file", str(tmp_path / "server.crt"), "-tls_verify", "1",
                                f"icecast://op-a:{PASSWORD}@127.0.0.1:{server.http_port}/ingest/ch-a"],
                               stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: live(server, context) is not None), "the TLS console goes on air"
        assert live(server, context)["by"] == "op-a"
    finally:
        assert console.wait(30) == 0, console.stderr.read() if console.stderr else ""
    assert wait_until(lambda: live(server, context) is None)


def test_webcast_over_wss_is_heard(secure: tuple[RunningServer, Path, ssl.SSLContext]) -> None:
    server, tmp_path, context = secure
    data = webm_tone(tone_file(tmp_path / "studio.wav", 880.0, -12.0, 4.0))
    heard = tmp_path / "heard.wav"
    result: dict[str, Any] = {}
    listener = threading.Thread(target=lambda: result.update(run_speaker(server, "spk-1", 8.0, out=heard)))
    listener.start()
    assert wait_until(lambda: json.loads(https(server, context, "/healthz"))["loudspeakers_online"] == 1)
    time.sleep(1.0)
    client = open_webcast(f"wss://127.0.0.1:{server.http_port}/ingest/ch-a", "op-a", PASSWORD, context=context)
    stream(client, data, 4.0)
    assert live(server, context) is not None, "on air over wss://"
    client.close()
    assert wait_until(lambda: live(server, context) is None), "off air once the socket closed"
    listener.join(40)
    assert result["acked"], result
    audio, _ = soundfile.read(str(heard), dtype="float32")
    pitches = [round(dominant_frequency(audio[i:i + 24000])) for i in range(0, audio.size - 24000, 24000)]
    assert sum(abs(f - 880) < 3 for f in pitches) >= 5, pitches


def test_plain_http_on_the_redirect_port_is_sent_to_https(secure: tuple[RunningServer, Path, ssl.SSLContext]) -> None:
    server, tmp_path, context = secure
    redirect_port = int((tmp_path / "redirect_port").read_text())
    with socket.create_connection(("127.0.0.1", redirect_port), timeout=10) as plain:
        plain.sendall(b"GET /healthz?x=1 HTTP/1.1\r\nHost: 127.0.0.1:" + str(redirect_port).encode() + b"\r\n\r\n")
        answer = b""
        while chunk := plain.recv(4096):
            answer += chunk
    head = answer.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 301 ")
    target = next(line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith("Location: "))
    assert target == f"https://127.0.0.1:{server.http_port}/healthz?x=1"
    with urllib.request.urlopen(target, timeout=10, context=context) as followed:
        assert json.loads(followed.read())["status"] == "ok"
