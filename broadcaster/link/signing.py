"""HMAC-SHA256 request signatures for the province link, and the replay window.

Every link request, either way, carries one header::

    Authorization: BCS-HMAC-SHA256 key="xa-an-binh", ts="1764662400", nonce="9f...", sig="base64..."

The signature covers the method, the path with its query, the key id, the
timestamp, the nonce and the SHA-256 of the body (``string_to_sign``), so a
request cannot be moved to another route, another server's key, another time
or another body. A verifier accepts a timestamp within ``WINDOW_S`` of its own
clock and each nonce once within the window: a captured request replayed is
refused. Nonces are remembered in memory only, bounded per key (a full memory
refuses, it never forgets early), so a restart forgets them: a request
replayed across a restart is still harmless because everything the link does
is idempotent (bulletins by their upstream id, reports by their play id).

Replies are signed too (``sign_reply``, header ``X-BCS-Signature``): over the
status, the request's own nonce and the reply body's digest, so a reply
cannot be forged on a plain-HTTP path nor an old one replayed to a new request.

Pure: the time is an argument; the HMAC comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

SCHEME = "BCS-HMAC-SHA256"
REPLY_HEADER = "X-BCS-Signature"
WINDOW_S = 300.0
MAX_NONCES_PER_KEY = 20_000  # a downstream polls every few seconds at most: far above any honest rate
MAX_HEADER_CHARS = 512
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_PARAM = re.compile(r'\s*([a-z]+)="([^"]*)"\s*(?:,|$)')


class SignatureError(Exception):
    """A request that is refused; ``reason`` is the metric label (a bounded set)."""

    REASONS = ("missing", "malformed", "unknown_key", "stale", "replay", "bad_signature", "busy")

    def __init__(self, reason: str, message: str) -> None:
        assert reason in self.REASONS
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SignedHeader:
    key: str
    ts: int
    nonce: str
    sig: bytes


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def string_to_sign(method: str, path: str, key: str, ts: int, nonce: str, digest: str) -> bytes:
    return "\n".join(("BCS-LINK-1", method.upper(), path, key, str(ts), nonce, digest)).encode("utf-8")


def sign(secret: bytes, method: str, path: str, key: str, body: bytes, now: float,
         nonce: str | None = None) -> str:
    """The Authorization header value for a request (``path`` with its query, as sent)."""
    ts = int(now)
    nonce = nonce or secrets.token_urlsafe(18)
    mac = hmac.new(secret, string_to_sign(method, path, key, ts, nonce, body_digest(body)), hashlib.sha256)
    return f'{SCHEME} key="{key}", ts="{ts}", nonce="{nonce}", sig="{base64.b64encode(mac.digest()).decode()}"'


def reply_string(key: str, nonce: str, status: int, digest: str) -> bytes:
    return "\n".join(("BCS-LINK-1-REPLY", key, nonce, str(status), digest)).encode("utf-8")


def sign_reply(secret: bytes, key: str, request_nonce: str, status: int, body: bytes) -> str:
    """The X-BCS-Signature value of a reply to the request that carried ``request_nonce``."""
    mac = hmac.new(secret, reply_string(key, request_nonce, status, body_digest(body)), hashlib.sha256)
    return f'{SCHEME} key="{key}", sig="{base64.b64encode(mac.digest()).decode()}"'


def check_reply(secret: bytes, key: str, request_nonce: str, status: int, body: bytes, value: str | None) -> None:
    """SignatureError unless the reply's signature holds (bad_signature; missing, malformed)."""
    if not value:
        raise SignatureError("missing", f"the reply has no {REPLY_HEADER} header")
    m = re.fullmatch(SCHEME + r' key="([^"]*)", sig="([A-Za-z0-9+/=]{1,200})"', value.strip())
    if m is None or m.group(1) != key:
        raise SignatureError("malformed", f"the reply's {REPLY_HEADER} header is not a signature for key {key!r}")
    expected = hmac.new(secret, reply_string(key, request_nonce, status, body_digest(body)), hashlib.sha256).digest()
    try:
        given = base64.b64decode(m.group(2), validate=True)
    except ValueError:
        raise SignatureError("malformed", "the reply's signature is not base64") from None
    if not hmac.compare_digest(expected, given):
        raise SignatureError("bad_signature", "the reply's signature does not match: not from the link partner, or "
                             "changed on the way")


def parse_header(value: str | None) -> SignedHeader:
    """The header's fields, or SignatureError (missing, malformed). Bounded: a long header is refused unread."""
    if not value:
        raise SignatureError("missing", f"send 'Authorization: {SCHEME} key=..., ts=..., nonce=..., sig=...'")
    if len(value) > MAX_HEADER_CHARS or not value.startswith(SCHEME + " "):
        raise SignatureError("malformed", f"the Authorization header is not a {SCHEME} signature")
    params: dict[str, str] = {}
    rest = value[len(SCHEME) + 1:]
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            raise SignatureError("malformed", "the signature's fields are not key=\"value\" pairs")
        params[m.group(1)] = m.group(2)
        pos = m.end()
    try:
        key, ts, nonce, sig = params["key"], int(params["ts"]), params["nonce"], base64.b64decode(
            params["sig"], validate=True)
    except (KeyError, ValueError) as exc:
        raise SignatureError("malformed", f"the signature needs key, ts (Unix seconds), nonce and sig (base64): "
                             f"{exc}") from None
    if not _NONCE.fullmatch(nonce):
        raise SignatureError("malformed", "nonce: 16 to 64 characters of A-Z a-z 0-9 _ -")
    return SignedHeader(key, ts, nonce, sig)


class NonceWindow:
    """The nonces seen per key within the replay window, in arrival order, oldest forgotten
    once they are older than the window. Bounded per key: a key that sends more than
    MAX_NONCES_PER_KEY requests in a window is refused (``busy``) until its oldest age out,
    never by forgetting a nonce early (that would reopen a replay)."""

    def __init__(self, window_s: float = WINDOW_S, max_per_key: int = MAX_NONCES_PER_KEY) -> None:
        self.window_s = window_s
        self.max_per_key = max_per_key
        self._seen: dict[str, OrderedDict[str, float]] = {}

    def _prune(self, key: str, now: float) -> OrderedDict[str, float]:
        seen = self._seen.setdefault(key, OrderedDict())
        # A nonce must be kept as long as its timestamp may still be accepted: 2 windows from arrival.
        while seen and next(iter(seen.values())) < now - 2 * self.window_s:
            seen.popitem(last=False)
        return seen

    def seen(self, key: str, nonce: str, now: float) -> bool:
        return nonce in self._prune(key, now)

    def remember(self, key: str, nonce: str, now: float) -> None:
        seen = self._prune(key, now)
        if len(seen) >= self.max_per_key:
            raise SignatureError("busy", f"key {key!r}: more than {self.max_per_key} requests within "
                                 f"{self.window_s:.0f} s; try again later")
        seen[nonce] = now

    def __len__(self) -> int:
        return sum(len(s) for s in self._seen.values())


class Verifier:
    """Checks signed requests against the known keys. Call ``check_header`` before reading the
    body (cheap refusals: malformed, unknown key, stale, replay, busy) and ``check_body`` with
    the body (at most the route's limit) to verify the HMAC and remember the nonce."""

    def __init__(self, secrets_by_key: Mapping[str, bytes], window_s: float = WINDOW_S,
                 nonces: NonceWindow | None = None) -> None:
        self.secrets = dict(secrets_by_key)
        self.window_s = window_s
        self.nonces = nonces or NonceWindow(window_s)

    def check_header(self, value: str | None, now: float) -> SignedHeader:
        header = parse_header(value)
        if header.key not in self.secrets:
            raise SignatureError("unknown_key", f"no link partner has the key id {header.key!r}")
        if abs(header.ts - now) > self.window_s:
            raise SignatureError("stale", f"the timestamp is {header.ts - now:+.0f} s from this server's clock "
                                 f"(at most ±{self.window_s:.0f} s); check both clocks (NTP)")
        if self.nonces.seen(header.key, header.nonce, now):
            raise SignatureError("replay", "this nonce was used already: a request is accepted once")
        return header

    def check_body(self, header: SignedHeader, method: str, path: str, body: bytes, now: float) -> str:
        """The key id of a valid request (its nonce now used), or SignatureError (bad_signature, busy)."""
        expected = hmac.new(self.secrets[header.key],
                            string_to_sign(method, path, header.key, header.ts, header.nonce, body_digest(body)),
                            hashlib.sha256).digest()
        if not hmac.compare_digest(expected, header.sig):
            raise SignatureError("bad_signature", "the signature does not match (wrong secret, or the method, path "
                                 "or body changed on the way)")
        self.nonces.remember(header.key, header.nonce, now)
        return header.key

    def verify(self, value: str | None, method: str, path: str, body: bytes, now: float) -> str:
        """Both checks at once (tests, and callers that already hold the body)."""
        return self.check_body(self.check_header(value, now), method, path, body, now)
