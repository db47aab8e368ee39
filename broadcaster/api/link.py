"""/api/v1/link/...: the province link's machine routes, and what operators see of it.

The machine routes are authenticated by the link's HMAC signature
(link/signing.py), not by bearer tokens: they are ``public`` in the route
table and check the signature here, the cheap parts (format, key id,
timestamp, nonce) before the body is read, and the HMAC over at most
MAX_LINK_BYTES of it. Every refusal is counted in
``broadcaster_link_signature_rejected_total`` by reason and answered 401 with
no work done. A route for a side this server does not play (no
``link.downstream``, no ``link.upstream``) is 404.

- ``GET  /api/v1/link/bulletins`` (the province): the calling downstream's feed.
- ``POST /api/v1/link/bulletins`` (a commune): the upstream pushes its feed.
- ``POST /api/v1/link/report`` (the province): a downstream's plays, inventory, daily figures.
- ``GET  /api/v1/link/media/{id}`` (the province): a bulletin's recording, to a downstream it goes to.

Every 200 of these is signed back (``X-BCS-Signature``, over the request's
nonce and the reply's bytes).

Operator routes (bearer tokens): ``GET /api/v1/bulletins/{id}/results`` (what
the downstream servers reported for one of our bulletins), ``GET
/api/v1/link/downstreams`` and their loudspeakers and days, ``GET
/api/v1/link/upstream`` (the commune's view of its upstream).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field
from twisted.internet.threads import deferToThreadPool

from broadcaster import metrics
from broadcaster.api.call import ApiError, Call, Param, Raw, Reply, Route, parse_json
from broadcaster.api.models import Out, Page
from broadcaster.link import protocol
from broadcaster.link.signing import REPLY_HEADER, SignatureError, SignedHeader, Verifier, sign_reply

MAX_LINK_BYTES = 1 << 20     # a request's body
MAX_MEDIA_BYTES = 64 << 20   # a recording served down (48 kHz mono FLAC: about 40 minutes)


async def _signed(call: Call, verifier: Verifier) -> tuple[SignedHeader, Any]:
    """(signature, parsed JSON body) of a request whose signature holds; else 401 (counted)."""
    now = call.app.wall()
    request = call.request
    method = request.method.decode("ascii", "replace")
    target = request.uri.decode("utf-8", "replace")
    header: SignedHeader | None = None
    try:
        header = verifier.check_header(request.getHeader("authorization"), now)
        if getattr(request, "too_large", False):
            metrics.link_signature_rejected_total.labels("too_large").inc()
            raise ApiError(413, "too_large", f"link bodies are limited to {MAX_LINK_BYTES} bytes")
        raw = request.content.read(MAX_LINK_BYTES + 1) if request.content else b""
        if len(raw) > MAX_LINK_BYTES:
            metrics.link_signature_rejected_total.labels("too_large").inc()
            raise ApiError(413, "too_large", f"link bodies are limited to {MAX_LINK_BYTES} bytes")
        verifier.check_body(header, method, target, raw, now)
    except SignatureError as exc:
        metrics.link_signature_rejected_total.labels(exc.reason).inc()
        raise ApiError(401, f"signature_{exc.reason}", str(exc)) from None
    return header, parse_json(raw) if raw else None


def _reply(call: Call, verifier: Verifier, header: SignedHeader, body: bytes | Any,
           content_type: str = "application/json; charset=utf-8") -> Reply:
    """A 200 reply signed for the request it answers (link/signing.py sign_reply)."""
    data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False,
                                                           separators=(",", ":")).encode("utf-8")
    call.request.setHeader(REPLY_HEADER.encode("ascii"), sign_reply(verifier.secrets[header.key], header.key,
                                                                    header.nonce, 200, data).encode("ascii"))
    return 200, Raw(content_type, data)


async def serve_feed(call: Call) -> Reply:
    upstream = call.app.link_upstream
    if upstream is None:
        raise ApiError(404, "not_found", "this server feeds no downstream servers (link.downstream)")
    header, _ = await _signed(call, upstream.verifier)
    document = await upstream.feed(upstream.downstreams[header.key])
    call.app.storage.link.touch(header.key, "pull", call.app.wall()).addErrback(lambda f: None)
    return _reply(call, upstream.verifier, header, document)


async def serve_media(call: Call) -> Reply:
    """A bulletin's recording, to a downstream whose feed carries the bulletin."""
    upstream = call.app.link_upstream
    if upstream is None:
        raise ApiError(404, "not_found", "this server feeds no downstream servers (link.downstream)")
    header, _ = await _signed(call, upstream.verifier)
    found = await call.storage.link.feed_media(call.params["id"])
    if found is None or found["state"] not in protocol.ACTIVE_STATES or not upstream.areas_for(
            found["zones"], upstream.downstreams[header.key]):
        raise ApiError(404, "not_found", f"no recording of bulletin {call.params['id']!r} for {header.key}")
    data = await deferToThreadPool(call.app.reactor, call.app.reactor.getThreadPool(), _read, found["path"])
    return _reply(call, upstream.verifier, header, data, "audio/flac")


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read(MAX_MEDIA_BYTES + 1)
    if len(data) > MAX_MEDIA_BYTES:
        raise ApiError(413, "too_large", f"the recording is larger than {MAX_MEDIA_BYTES} bytes")
    return data


async def receive_push(call: Call) -> Reply:
    downstream = call.app.link_downstream
    if downstream is None:
        raise ApiError(404, "not_found", "this server has no upstream (link.upstream)")
    header, document = await _signed(call, downstream.verifier)
    metrics.link_pushes_total.labels("received").inc()
    try:
        counts = await downstream.take(document)
    except protocol.WireError as exc:
        raise ApiError(400, "bad_feed", str(exc)) from None
    return _reply(call, downstream.verifier, header, {"taken": counts})


async def receive_report(call: Call) -> Reply:
    upstream = call.app.link_upstream
    if upstream is None:
        raise ApiError(404, "not_found", "this server feeds no downstream servers (link.downstream)")
    header, document = await _signed(call, upstream.verifier)
    try:
        stored = await upstream.take_report(header.key, document)
    except protocol.WireError as exc:
        raise ApiError(400, "bad_report", str(exc)) from None
    return _reply(call, upstream.verifier, header, {"stored": stored})


# --- what operators see ------------------------------------------------------------------

class PlayResult(Out):
    downstream: str = Field(description="the downstream server that played it")
    play_id: int = Field(description="its id for the play there")
    channel: str
    area: str = Field(description="the area code of the zone it played in")
    slot: float | None = Field(description="the planned time it played for (Unix seconds)")
    started_at: float
    ended_at: float | None
    duration_s: float | None
    outcome: str | None
    online: int | None = Field(description="loudspeakers online on the channel when it played")
    acknowledged: int | None = Field(description="loudspeakers that acknowledged")
    received_at: float


class BulletinResults(Out):
    bulletin: str
    plays: list[PlayResult]
    downstreams: list[str] = Field(description="the downstream servers that reported a play of it")


class DownstreamState(Out):
    id: str
    zones: list[str]
    webhook: str | None
    last_pull_at: float | None = None
    last_report_at: float | None = None
    last_push_at: float | None = None
    inventory_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    loudspeakers: int = 0
    online: int = 0


class ReportedLoudspeaker(Out):
    id: str
    name: str
    area: str
    channel: str
    lat: float | None
    lon: float | None
    status: str
    last_seen: float | None
    reported_at: float


class ReportedDay(Out):
    day: str
    channel: str
    area: str
    hours_on_air: float
    loudspeakers: int
    online_share: float | None
    reported_at: float


class UpstreamState(Out):
    url: str
    id: str
    origin: str
    poll_s: float
    report_s: float
    last_poll_at: float | None
    last_report_at: float | None
    last_error: str | None
    last_error_at: float | None
    cursors: dict[str, str]


async def bulletin_results(call: Call) -> Reply:
    bulletin = call.params["id"]
    zones = await call.storage.link.bulletin_zones(bulletin)
    if zones is None or not call.may_see(*zones):
        raise ApiError(404, "not_found", f"no bulletin {bulletin!r}")
    plays = await call.storage.link.results(bulletin)
    return 200, BulletinResults(bulletin=bulletin, plays=[PlayResult.model_validate(p) for p in plays],
                                downstreams=sorted({p["downstream"] for p in plays}))


def _visible_downstreams(call: Call) -> list[Any]:
    upstream = call.app.link_upstream
    if upstream is None:
        return []
    return [d for d in upstream.downstreams.values() if any(call.may_see(z) for z in d.zones)]


async def list_downstreams(call: Call) -> Reply:
    found = _visible_downstreams(call)
    stored = await call.storage.link.downstreams()
    items = [DownstreamState.model_validate({**{k: v for k, v in stored.get(d.id, {}).items() if k != "push_digest"},
                                             "id": d.id, "zones": list(d.zones), "webhook": d.webhook})
             for d in found]
    for item in items:
        item.online = item.online or 0
    return 200, Page[DownstreamState](items=items, total=len(items), limit=len(items), offset=0)


def _downstream(call: Call) -> Any:
    found = next((d for d in _visible_downstreams(call) if d.id == call.params["id"]), None)
    if found is None:
        raise ApiError(404, "not_found", f"no downstream server {call.params['id']!r}")
    return found


async def downstream_loudspeakers(call: Call) -> Reply:
    d = _downstream(call)
    limit, offset = call.paging()
    found = await call.storage.link.loudspeakers(d.id, limit, offset)
    return 200, Page[ReportedLoudspeaker](items=[ReportedLoudspeaker.model_validate(r) for r in found.items],
                                          total=found.total, limit=limit, offset=offset)


async def downstream_days(call: Call) -> Reply:
    d = _downstream(call)
    since, until = call.query.get("from", "0000-00-00"), call.query.get("to", "9999-99-99")
    items = await call.storage.link.days(d.id, since, until)
    return 200, Page[ReportedDay](items=[ReportedDay.model_validate(r) for r in items[:5000]],
                                  total=len(items), limit=5000, offset=0)


async def upstream_state(call: Call) -> Reply:
    downstream = call.app.link_downstream
    if downstream is None or call.visible() is not None:
        raise ApiError(404, "not_found", "this server has no upstream (link.upstream), or you are not an admin")
    cursors = await call.storage.link.cursors()
    return 200, UpstreamState.model_validate({**downstream.describe(), "cursors": cursors})


ID = Param("id", "the bulletin's id", where="path", required=True)
DOWNSTREAM = Param("id", "the downstream server's id (link.downstream)", where="path", required=True)
ROUTES = [
    Route("GET", "/api/v1/link/bulletins", serve_feed,
          "The province: the signed caller's bulletin feed (HMAC-signed, docs/source-system.md)", public=True,
          errors=(401, 404)),
    Route("POST", "/api/v1/link/bulletins", receive_push,
          "A commune: the upstream pushes its bulletin feed (HMAC-signed, docs/source-system.md)", public=True,
          errors=(400, 401, 404, 413)),
    Route("GET", "/api/v1/link/media/{id}", serve_media,
          "The province: a bulletin's recording (FLAC), to a downstream whose feed carries it (HMAC-signed)",
          public=True, errors=(401, 404, 413), query=(ID,)),
    Route("POST", "/api/v1/link/report", receive_report,
          "The province: a downstream's plays, loudspeaker inventory and daily figures (HMAC-signed)", public=True,
          errors=(400, 401, 404, 413)),
    Route("GET", "/api/v1/bulletins/{id}/results", bulletin_results,
          "What the downstream servers reported of one bulletin: each play, per channel", BulletinResults,
          errors=(404,), query=(ID,)),
    Route("GET", "/api/v1/link/downstreams", list_downstreams,
          "The downstream servers this one feeds, with their last pull, report, push and error",
          Page[DownstreamState]),
    Route("GET", "/api/v1/link/downstreams/{id}/loudspeakers", downstream_loudspeakers,
          "A downstream server's loudspeaker inventory, as it last reported it", Page[ReportedLoudspeaker],
          errors=(404,), query=(DOWNSTREAM,), paged=True),
    Route("GET", "/api/v1/link/downstreams/{id}/daily", downstream_days,
          "A downstream server's daily figures (hours on air, online share) per channel", Page[ReportedDay],
          errors=(404,), query=(DOWNSTREAM, Param("from", "first day, YYYY-MM-DD"), Param("to", "last day"))),
    Route("GET", "/api/v1/link/upstream", upstream_state,
          "A commune (admins): its upstream, the last poll and report, the reporter's cursors", UpstreamState,
          errors=(404,)),
]
