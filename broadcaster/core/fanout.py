"""Sending one channel's packet to every subscribed loudspeaker.

The packet is built once per channel per frame; this module only hands the
same bytes to the kernel once per address. The address list is turned into
kernel structures when subscriptions change, never per frame.

On Linux, ``MmsgFanout`` sends to up to 1,024 addresses per system call with
sendmmsg(2): every message header points at one shared buffer holding the
packet, so the per-frame Python work is one copy of the packet and one call
per 1,024 loudspeakers, whatever their number. ``LoopFanout`` (one sendto
per address) is the portable fallback and the baseline in benchmarks/.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
import sys

import numpy as np

Address = tuple[str, int]

UIO_MAXIOV = 1024  # the kernel's limit on messages per sendmmsg call
MSG_DONTWAIT = 0x40
MAX_PACKET = 2048


class LoopFanout:
    """One sendto per address; a full socket buffer drops this packet for that
    address rather than blocking the tick."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._targets: tuple[Address, ...] = ()

    def set_targets(self, addresses: list[Address]) -> None:
        self._targets = tuple(addresses)

    def __len__(self) -> int:
        return len(self._targets)

    def send(self, packet: bytes) -> tuple[int, int]:
        """Returns (sent, failed)."""
        sendto = self.sock.sendto
        failed = 0
        for address in self._targets:
            try:
                sendto(packet, address)
            except OSError:
                failed += 1
        return len(self._targets) - failed, failed


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_IoVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_HEADER_COLUMNS = np.dtype({
    "names": ["name", "namelen", "iov", "iovlen"],
    "formats": [np.uint64, np.uint32, np.uint64, np.uint64],
    "offsets": [_MsgHdr.msg_name.offset, _MsgHdr.msg_namelen.offset, _MsgHdr.msg_iov.offset,
                _MsgHdr.msg_iovlen.offset],
    "itemsize": ctypes.sizeof(_MMsgHdr),
})


def _load_sendmmsg() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    function = getattr(libc, "sendmmsg", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_sendmmsg = _load_sendmmsg()


def _sockaddr_in(address: Address) -> bytes:
    """struct sockaddr_in: family in host order, then port and address in network order."""
    host, port = address[0], address[1]
    return (socket.AF_INET.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
            + socket.inet_aton(host) + bytes(8))


class MmsgFanout:
    """sendmmsg(2) of one shared buffer to many IPv4 addresses."""

    def __init__(self, sock: socket.socket) -> None:
        if _sendmmsg is None or sock.family != socket.AF_INET:
            raise OSError(errno.ENOTSUP, "sendmmsg fan-out needs Linux and an IPv4 socket")
        self.sock = sock
        self._fd = sock.fileno()
        self._buffer = ctypes.create_string_buffer(MAX_PACKET)
        self._iov = _IoVec(ctypes.addressof(self._buffer), 0)
        self._count = 0
        self._names = ctypes.create_string_buffer(0)
        self._messages = (_MMsgHdr * 0)()
        self._packed: dict[Address, bytes] = {}  # sockaddr_in of each current target, reused on rebuild

    def set_targets(self, addresses: list[Address]) -> None:
        count = len(addresses)
        known = self._packed
        packed = {a: known.get(a) or _sockaddr_in(a) for a in addresses}
        names = ctypes.create_string_buffer(b"".join([packed[a] for a in addresses]), 16 * count or 1)
        messages = (_MMsgHdr * count)()
        if count:
            # Filled column-wise through numpy: thousands of headers in microseconds.
            table = np.frombuffer(memoryview(messages), dtype=_HEADER_COLUMNS)
            table["name"] = ctypes.addressof(names) + 16 * np.arange(count, dtype=np.uint64)
            table["namelen"] = 16
            table["iov"] = ctypes.addressof(self._iov)
            table["iovlen"] = 1
        # Swap in whole: a send never sees a half-built table.
        self._names, self._messages, self._count, self._packed = names, messages, count, packed

    def __len__(self) -> int:
        return self._count

    def send(self, packet: bytes) -> tuple[int, int]:
        """Returns (sent, failed). A message the kernel refuses (buffer full,
        bad address) is skipped and counted; the rest still go out."""
        size = len(packet)
        if size > MAX_PACKET:
            raise ValueError(f"packet of {size} bytes exceeds {MAX_PACKET}")
        ctypes.memmove(self._buffer, packet, size)
        self._iov.iov_len = size
        base = ctypes.addressof(self._messages)
        step = ctypes.sizeof(_MMsgHdr)
        sendmmsg = _sendmmsg
        assert sendmmsg is not None
        offset = failed = 0
        count = self._count
        while offset < count:
            batch = min(UIO_MAXIOV, count - offset)
            done = sendmmsg(self._fd, base + offset * step, batch, MSG_DONTWAIT)  # type: ignore[operator]
            if done > 0:
                offset += done
            elif ctypes.get_errno() in (errno.EAGAIN, errno.ENOBUFS):
                failed += count - offset  # the buffer is full: this frame is lost for the rest
                break
            else:
                failed += 1  # this address was refused; skip it and carry on with the next
                offset += 1
        return count - failed, failed


def make_fanout(sock: socket.socket) -> MmsgFanout | LoopFanout:
    try:
        return MmsgFanout(sock)
    except OSError:
        return LoopFanout(sock)
