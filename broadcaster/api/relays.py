"""/api/v1/relays and /api/v1/channels/{id}/relay: the relay library, and relaying on demand.

A relay stored on a zone serves that zone's channels and every channel below
it, so the province stores VOV1 once and each commune may play it; a commune
operator sees the province's relays and its own, and may add its own.
"""

from __future__ import annotations

import uuid
from typing import Any

from broadcaster.api.call import ApiError, Call, Param, Reply, Route
from broadcaster.api.models import Page, Relay, RelayCreate, RelayOnAir, RelayStart
from broadcaster.control.auth import Action
from broadcaster.control.relays import RelayItem, RelaysBusy
from broadcaster.core.mixer import PRIORITY_NAMES
from broadcaster.relay.fetch import url_problem


def _usable_zones(call: Call) -> list[str] | None:
    """Zones whose relays the caller may use: what it sees, and the zones above its own."""
    visible = call.visible()
    if visible is None:
        return None
    zones = set(visible)
    for scope in call.principal.zones:
        zones.update(call.app.zones.ancestors(scope))
    return sorted(zones)


def usable(call: Call, row: dict[str, Any], channel_zone: str) -> bool:
    """Whether a relay may play on a channel of this zone: stored on it or above it."""
    return row["zone"] in call.app.zones.ancestors(channel_zone)


async def relay_row(call: Call, relay_id: str) -> dict[str, Any]:
    """A relay the caller may use, referred to in a body (400 if there is none it may use)."""
    row = await call.storage.relays.get(relay_id)
    zones = _usable_zones(call)
    if row is None or (zones is not None and row["zone"] not in zones):
        raise ApiError(400, "bad_reference", f"relay: no relay {relay_id!r}")
    return row


async def list_relays(call: Call) -> Reply:
    limit, offset = call.paging()
    found = await call.storage.relays.in_zones(_usable_zones(call))
    return 200, Page[Relay](items=[Relay.model_validate(r) for r in found[offset:offset + limit]],
                            total=len(found), limit=limit, offset=offset)


async def create_relay(call: Call) -> Reply:
    body = call.body(RelayCreate)
    if body.zone not in call.app.zones:
        raise ApiError(400, "bad_reference", f"zone: no zone {body.zone!r}")
    call.authorize(Action.WRITE, body.zone)
    problem = url_problem(body.url, call.app.config.relay.allow_private)
    if problem:
        raise ApiError(400, "bad_value", f"url: {problem}")
    row = await call.storage.relays.add(call.actor, "rl-" + uuid.uuid4().hex[:10], body.zone, body.name.strip(),
                                        body.url)
    return 201, Relay.model_validate(row)


async def delete_relay(call: Call) -> Reply:
    row = await call.storage.relays.get(call.params["id"])
    if row is None or not call.may_see(row["zone"]):
        raise ApiError(404, "not_found", f"no relay {call.params['id']!r}")
    call.authorize(Action.WRITE, row["zone"])
    await call.storage.relays.delete(call.actor, row["id"])  # Conflict (409) while a programme relays it
    return 204, None


def _channel(call: Call) -> Any:
    channel = call.app.channels.get(call.params["id"])
    if channel is None or not call.may_see(channel.config.zone):
        raise ApiError(404, "not_found", f"no channel {call.params['id']!r}")
    return channel


async def start_relay(call: Call) -> Reply:
    channel = _channel(call)
    call.authorize(Action.WRITE, channel.config.zone)
    body = call.body(RelayStart)
    row = await relay_row(call, body.relay)
    if not usable(call, row, channel.config.zone):
        raise ApiError(400, "bad_reference", f"relay {row['id']!r} belongs to zone {row['zone']!r}, "
                                             f"not above channel {channel.id!r}")
    before = [r for r in call.app.relays.on_channel(channel.id) if r.kind == "relay"]
    item = RelayItem(row["id"], row["name"], row["url"], row["zone"])
    try:
        run = call.app.relays.start(item, [channel], kind="relay", title=row["name"], by=call.principal.name,
                                    priority=int(PRIORITY_NAMES[body.priority]),
                                    end_at=call.app.wall() + body.duration_s)
    except RelaysBusy as exc:
        raise ApiError(503, "busy", str(exc), retry_after_s=60) from None
    for old in before:
        # One relay on demand per channel: the new one replaces it. Started first, so the same relay
        # asked for again (to extend it) keeps its worker and the channel never drops to its loop.
        old.stop("cut")
    return 201, RelayOnAir.model_validate(run.describe())


async def stop_relay(call: Call) -> Reply:
    channel = _channel(call)
    call.authorize(Action.WRITE, channel.config.zone)
    runs = [r for r in call.app.relays.on_channel(channel.id) if r.kind == "relay"]
    if not runs:
        raise ApiError(404, "not_found", f"no relay on demand is playing on {channel.id!r}")
    for run in runs:
        run.stop("stopped")
    return 204, None


ID = Param("id", "the relay's id", where="path", required=True)
CHANNEL = Param("id", "the channel's id", where="path", required=True)
ROUTES = [
    Route("GET", "/api/v1/relays", list_relays,
          "The relays the caller may play: its zones' and those of the zones above them", Page[Relay], paged=True),
    Route("POST", "/api/v1/relays", create_relay,
          "Add an upstream (Icecast/Shoutcast MP3, AAC, Ogg, or HLS) to a zone's relay library", Relay, 201,
          RelayCreate, errors=(403,)),
    Route("DELETE", "/api/v1/relays/{id}", delete_relay,
          "Remove a relay from the library (refused with 409 while a programme relays it)", None, 204,
          errors=(403, 404, 409), query=(ID,)),
    Route("POST", "/api/v1/channels/{id}/relay", start_relay,
          "Relay an upstream on a channel now, for duration_s; replaces a relay on demand already playing there",
          RelayOnAir, 201, RelayStart, errors=(403, 404), query=(CHANNEL,)),
    Route("DELETE", "/api/v1/channels/{id}/relay", stop_relay,
          "Stop the relay on demand playing on a channel", None, 204, errors=(403, 404), query=(CHANNEL,)),
]
