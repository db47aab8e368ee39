"""A tiny webcast client for tests (what AzuraCast's Web DJ and our console's live page do): a WebSocket
with the subprotocol ``webcast``, the hello, then a WebM/Opus stream in MediaRecorder-sized chunks sent at
its own pace, optional metadata messages. Built on the ``websockets`` package (a client we did not write)."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

CHUNK = 2048  # a MediaRecorder chunk at 48 kb/s and a 250 ms timeslice is about this


def webm_tone(wav: Path) -> bytes:
    """The tone as ffmpeg's live WebM/Opus (written to a pipe: element sizes unknown, as MediaRecorder's)."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(wav), "-c:a", "libopus", "-b:a", "48k",
                          "-f", "webm", "-"], capture_output=True, check=True)
    return out.stdout


def open_webcast(url: str, user: str | None, password: str, mime: str = "audio/webm;codecs=opus",
                 context: ssl.SSLContext | None = None) -> ClientConnection:
    socket = connect(url, subprotocols=[Subprotocol("webcast")], open_timeout=30, ssl=context,
                     proxy=None, user_agent_header="broadcaster-tests webcast", legacy=True)  # loopback only
    data: dict[str, Any] = {"mime": mime, "password": password}
    if user is not None:
        data["user"] = user
    socket.send(json.dumps({"type": "hello", "data": data}))
    return socket


def send_metadata(socket: ClientConnection, title: str, artist: str = "") -> None:
    socket.send(json.dumps({"type": "metadata", "data": {"title": title, "artist": artist}}))


def stream(socket: ClientConnection, data: bytes, seconds: float) -> None:
    """``data`` (``seconds`` of audio) in chunks, paced to real time as a microphone would send it."""
    start = time.monotonic()
    for i in range(0, len(data), CHUNK):
        due = start + seconds * i / len(data)
        time.sleep(max(0.0, due - time.monotonic()))
        socket.send(data[i:i + CHUNK])


def refusal(socket: ClientConnection, timeout_s: float = 10.0) -> tuple[int | None, str]:
    """The close code and reason the server ended the session with (waits at most timeout_s)."""
    try:
        while True:
            socket.recv(timeout=timeout_s)
    except ConnectionClosed as closed:
        return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd is not None else (None, "")
    except TimeoutError:
        return None, "no close within the bound"
