"""The operator console's files: the page at ``/`` and its scripts and styles under ``/ui/``.

They are plain files in the package (broadcaster/console/): no build step, nothing
fetched from elsewhere. The console talks only to /api/v1 with its session cookie
(api/session.py). Every reply carries a Content-Security-Policy that allows scripts,
styles and connections from this server alone (plus a configured map tile host for
images), so injected markup cannot run or send anything anywhere.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlsplit

from twisted.web.resource import Resource
from twisted.web.server import Request

from broadcaster import metrics
from broadcaster.config import Config

ROOT = Path(__file__).resolve().parent.parent / "console"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
         ".json": "application/json; charset=utf-8", ".ico": "image/x-icon", ".woff2": "font/woff2"}
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")  # each path part: no dot-dot, no hidden files


def policy(config: Config | None) -> bytes:
    images = "'self' data: blob:"
    tile_url = config.console.tile_url if config is not None else None
    if tile_url:
        parts = urlsplit(tile_url)
        images += f" {parts.scheme}://{parts.netloc}"
    return (f"default-src 'self'; img-src {images}; media-src 'self' blob:; connect-src 'self'; "
            "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'").encode("ascii")


def _headers(request: Request, content_type: str, csp: bytes) -> None:
    request.setHeader(b"Content-Type", content_type.encode("ascii"))
    request.setHeader(b"Content-Security-Policy", csp)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"same-origin")
    request.setHeader(b"X-Frame-Options", b"DENY")


_CACHE: dict[Path, tuple[int, bytes, bytes]] = {}  # path -> (mtime_ns, bytes, etag): a few small files


def _read(path: Path) -> tuple[bytes, bytes]:
    """A console file and its ETag, read and hashed once (again only if it changed on disk)."""
    mtime = path.stat().st_mtime_ns
    cached = _CACHE.get(path)
    if cached is None or cached[0] != mtime:
        data = path.read_bytes()
        cached = _CACHE[path] = (mtime, data, b'"' + hashlib.sha256(data).hexdigest()[:20].encode("ascii") + b'"')
    return cached[1], cached[2]


def serve(request: Request, path: Path, csp: bytes) -> bytes:
    """A console file, revalidated on every load (no-cache with an ETag): an upgrade's new
    scripts are never mixed with a cached old page."""
    try:
        data, etag = _read(path)
    except OSError:
        request.setResponseCode(404)
        metrics.http_requests_total.labels("console", "404").inc()
        _headers(request, "text/plain; charset=utf-8", csp)
        return b"not found\n"
    _headers(request, TYPES.get(path.suffix, "application/octet-stream"), csp)
    request.setHeader(b"Cache-Control", b"no-cache")
    request.setHeader(b"ETag", etag)
    if request.getHeader("if-none-match") == etag.decode("ascii"):
        request.setResponseCode(304)
        metrics.http_requests_total.labels("console", "304").inc()
        return b""
    metrics.http_requests_total.labels("console", "200").inc()
    return data


class ConsolePage(Resource):
    """``/``: the console's one HTML page (it routes between its pages itself)."""

    isLeaf = True

    def __init__(self, server_config: Config | None = None) -> None:
        super().__init__()
        self.csp = policy(server_config)

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        return serve(request, ROOT / "index.html", self.csp)

    render_HEAD = render_GET


class ConsoleFiles(Resource):
    """``/ui/...``: the console's scripts, styles and images, from the package only."""

    isLeaf = True

    def __init__(self, server_config: Config | None = None) -> None:
        super().__init__()
        self.csp = policy(server_config)

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        parts = [p.decode("utf-8", "replace") for p in (request.postpath or [])]
        if not parts or not all(NAME.fullmatch(p) for p in parts) or Path(parts[-1]).suffix not in TYPES:
            request.setResponseCode(404)
            metrics.http_requests_total.labels("console", "404").inc()
            _headers(request, "text/plain; charset=utf-8", self.csp)
            return b"not found\n"
        return serve(request, ROOT.joinpath(*parts), self.csp)

    render_HEAD = render_GET
