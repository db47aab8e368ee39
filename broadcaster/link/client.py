"""The link's HTTP client: signed requests to one configured peer, off the reactor.

Each request runs in a small thread pool of its own (blocking urllib, with a
timeout), so a slow or silent peer never holds the reactor, and never
delays the storage pool or an alert's speech. Only the configured URL is
asked: redirects are not followed (a 3xx is an error), proxies from the
environment are ignored, and a reply body is read up to ``max_body_bytes``
(past that the request fails), so a peer cannot make this server fetch
elsewhere or hold more than the cap.
"""

from __future__ import annotations

import json
import logging
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from broadcaster.link.signing import REPLY_HEADER, SignatureError, check_reply, sign

log = logging.getLogger(__name__)


class LinkHttpError(Exception):
    """The peer could not be reached, or answered something that is not a reply."""


@dataclass(frozen=True)
class LinkReply:
    status: int
    body: bytes
    content_type: str = ""

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise LinkHttpError(f"the reply is not JSON: {exc}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None  # the 3xx itself is the answer: an error


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def signed_request(method: str, url: str, key: str, secret: bytes, body: bytes | None, now: float,
                   timeout_s: float, max_body_bytes: int) -> LinkReply:
    """One signed request, blocking (call it in a worker thread). A 200 reply must carry the
    peer's reply signature (LinkHttpError otherwise); other statuses are returned as they are."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    data = body or b""
    nonce = secrets.token_urlsafe(18)
    request = urllib.request.Request(url, data=data if method != "GET" else None, method=method)
    request.add_header("Authorization", sign(secret, method, target, key, data, now, nonce))
    request.add_header("Accept", "application/json")
    if method != "GET":
        request.add_header("Content-Type", "application/json; charset=utf-8")
    try:
        response = _OPENER.open(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        payload = exc.read(max_body_bytes + 1) if exc.fp is not None else b""
        exc.close()
        return LinkReply(exc.code, payload[:max_body_bytes])
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise LinkHttpError(f"{method} {url}: {getattr(exc, 'reason', exc)}") from None
    with response:
        payload = response.read(max_body_bytes + 1)
        if len(payload) > max_body_bytes:
            raise LinkHttpError(f"{method} {url}: the reply is larger than {max_body_bytes} bytes")
        try:
            check_reply(secret, key, nonce, response.status, payload, response.headers.get(REPLY_HEADER))
        except SignatureError as exc:
            raise LinkHttpError(f"{method} {url}: {exc}") from None
        return LinkReply(response.status, payload, response.headers.get("Content-Type") or "")


class LinkClient:
    """Signed requests as Deferreds, in a pool of ``threads`` (made on first use unless given)."""

    def __init__(self, reactor: Any, wall: Callable[[], float], timeout_s: float, max_body_bytes: int,
                 pool: Any = None, threads: int = 2) -> None:
        self.reactor, self.wall = reactor, wall
        self.timeout_s, self.max_body_bytes = timeout_s, max_body_bytes
        self._pool = pool
        self._threads = threads

    def _threadpool(self) -> Any:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=self._threads, name="broadcaster-link")
            self._pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        return self._pool

    def request(self, method: str, url: str, key: str, secret: bytes, document: Any = None,
                max_body_bytes: int | None = None) -> Deferred[LinkReply]:
        body = None if document is None else json.dumps(document, ensure_ascii=False,
                                                        separators=(",", ":")).encode("utf-8")
        return deferToThreadPool(self.reactor, self._threadpool(), signed_request, method, url, key, secret, body,
                                 self.wall(), self.timeout_s, max_body_bytes or self.max_body_bytes)

    def stop(self) -> None:
        if self._pool is not None and hasattr(self._pool, "stop"):
            self._pool.stop()
