"""Writing to a twisted transport's socket at once, while nothing is queued for it.

twisted's ``transport.write`` appends to a buffer and registers the socket for writing; the
bytes leave at the next reactor turn, after whatever the current handler still does, and
cost two epoll_ctl calls and a dispatch. Where that matters (a page to thousands of
listeners, an alert's command to the core) ``send_now`` sends on the socket itself when the
transport holds nothing (so order is kept) and gives the transport only what the socket did
not take: it buffers that, pauses its producer, and reports errors as usual.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import ISSLTransport
from twisted.protocols.policies import ProtocolWrapper


def socket_of(transport: Any) -> Any:
    """The socket of a plain TCP or UNIX transport, or None (TLS, tests' fakes: they get write()).

    A TLS transport (twisted's TLSMemoryBIOProtocol, a ProtocolWrapper) forwards unknown
    attributes to the TCP transport under it, so duck typing alone would find that socket and
    write the clear text on it: wrappers and TLS transports never qualify."""
    if isinstance(transport, ProtocolWrapper) or ISSLTransport.providedBy(transport):
        return None
    if hasattr(transport, "_tempDataBuffer") and hasattr(transport, "dataBuffer"):
        return getattr(transport, "socket", None)
    return None


def send_now(transport: Any, sock: Any, data: bytes) -> None:
    if sock is not None and not transport._tempDataBuffer and len(transport.dataBuffer) == transport.offset:
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # the transport finds the error at its next write and closes the connection
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
