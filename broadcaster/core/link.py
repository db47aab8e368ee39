"""The byte format between control and the core's process: length-prefixed pickles.

Both ends are this server (the socket is a socketpair made at start and
inherited by the child), so pickle is safe here; nothing from the network is
ever unpickled. A frame over MAX_FRAME is a bug, not data: it raises.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

HEADER = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024
LINK_READ = 1 << 20  # bytes read from a link per wake-up


class LinkError(Exception):
    pass


def encode(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(body) > MAX_FRAME:
        raise LinkError(f"a {type(message).__name__} of {len(body)} bytes is over the link's limit")
    return HEADER.pack(len(body)) + body


class FrameReader:
    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        out = []
        while len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            if size > MAX_FRAME:
                raise LinkError(f"a frame of {size} bytes is over the link's limit")
            end = HEADER.size + size
            if len(self._buffer) < end:
                break
            out.append(pickle.loads(memoryview(self._buffer)[HEADER.size:end]))
            del self._buffer[:end]
        return out


def send_some(sock: Any, data: bytearray) -> None:
    """As much of a buffer as the socket takes now, without waiting; the rest stays in it. A
    link that is gone loses what is buffered (its reader will see the link close)."""
    if not data:
        return
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        data.clear()
        return
    del data[:sent]


def send_blocking(sock: Any, data: bytearray) -> None:
    """The last of a buffer, at the end: wait for the peer to take it (or be gone), then clear it."""
    if not data:
        return
    sock.setblocking(True)
    try:
        sock.sendall(data)
    except OSError:
        pass
    data.clear()
