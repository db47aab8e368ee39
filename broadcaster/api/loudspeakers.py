"""/api/v1/loudspeakers: register, edit, re-key, remove; each change touches ONE device.

After a write the handler tells control ``app.device_changed(id)``, which
re-reads that one device (its key opened), never the fleet.
"""

from __future__ import annotations

import secrets
from typing import Any

from broadcaster.api.call import ApiError, Call, Param, Reply, Route, facade
from broadcaster.api.models import Key, Loudspeaker, LoudspeakerCreate, LoudspeakerUpdate, LoudspeakerWithKey, Page
from broadcaster.control.auth import Action


def _view(call: Call, row: dict[str, Any]) -> dict[str, Any]:
    session = call.app.speaker_session(row["id"])
    view = dict(row)
    view["online"] = session is not None
    view["last_heartbeat"] = session.last_seen if session else None
    view["address"] = f"{session.address[0]}:{session.address[1]}" if session else None
    view["status"] = session.status.as_dict() if session else None
    return view


async def _row(call: Call) -> dict[str, Any]:
    """The loudspeaker named by the path; one outside the caller's sight is answered as missing."""
    row = await call.storage.loudspeakers.get(call.params["id"])
    if row is None or not call.may_see(row["zone"]):
        raise ApiError(404, "not_found", f"no loudspeaker {call.params['id']!r}")
    return row


def _check_channel_for_zone(call: Call, channel_id: str) -> None:
    channel = call.app.channels.get(channel_id)
    if channel is None:
        raise ApiError(400, "bad_reference", f"channel: no channel {channel_id!r}")
    call.authorize(Action.WRITE, channel.config.zone)


async def list_speakers(call: Call) -> Reply:
    limit, offset = call.paging()
    page = await call.storage.loudspeakers.page(call.visible(), limit, offset, zone=call.query.get("zone"),
                                                channel=call.query.get("channel"))
    return 200, Page[Loudspeaker](items=[Loudspeaker.model_validate(_view(call, r)) for r in page.items],
                                  total=page.total, limit=limit, offset=offset)


async def get_speaker(call: Call) -> Reply:
    row = await _row(call)
    return 200, Loudspeaker.model_validate(_view(call, row))


async def create_speaker(call: Call) -> Reply:
    body = call.body(LoudspeakerCreate)
    if body.zone not in call.app.zones:
        raise ApiError(400, "bad_reference", f"zone: no zone {body.zone!r}")
    call.authorize(Action.WRITE, body.zone)
    _check_channel_for_zone(call, body.channel)
    key = body.key if body.key is not None else secrets.token_hex(32)
    row = await call.storage.loudspeakers.register(call.actor, body.id, body.zone, body.channel, key,
                                                   name=body.name or "",
                                                   volume=80 if body.volume is None else body.volume,
                                                   lat=body.lat, lon=body.lon)
    await facade(call.app.device_changed, body.id)
    # The key is shown once; only its sealed form is stored.
    return 201, LoudspeakerWithKey.model_validate({**_view(call, row), "key": key})


async def update_speaker(call: Call) -> Reply:
    row = await _row(call)
    call.authorize(Action.WRITE, row["zone"])
    changes = call.body(LoudspeakerUpdate).model_dump(exclude_none=True)
    if "channel" in changes:
        _check_channel_for_zone(call, changes["channel"])
    if changes:
        updated = await call.storage.loudspeakers.update(call.actor, row["id"], changes)
        if updated is None:
            raise ApiError(404, "not_found", f"no loudspeaker {row['id']!r}")
        row = updated
        await facade(call.app.device_changed, row["id"])
    return 200, Loudspeaker.model_validate(_view(call, row))


async def rotate_key(call: Call) -> Reply:
    row = await _row(call)
    call.authorize(Action.WRITE, row["zone"])
    key = secrets.token_hex(32)
    if not await call.storage.loudspeakers.rotate_key(call.actor, row["id"], key):
        raise ApiError(404, "not_found", f"no loudspeaker {row['id']!r}")
    await facade(call.app.device_changed, row["id"])
    return 200, Key(id=row["id"], key=key)


async def delete_speaker(call: Call) -> Reply:
    row = await _row(call)
    call.authorize(Action.WRITE, row["zone"])
    await call.storage.loudspeakers.delete(call.actor, row["id"])
    await facade(call.app.device_changed, row["id"])
    return 204, None


ID = Param("id", "the loudspeaker's id", where="path", required=True)
ROUTES = [
    Route("GET", "/api/v1/loudspeakers", list_speakers, "List loudspeakers with online status and last heartbeat",
          Page[Loudspeaker], paged=True,
          query=(Param("zone", "only this zone"), Param("channel", "only this channel"))),
    Route("POST", "/api/v1/loudspeakers", create_speaker, "Register a loudspeaker; the response shows its key once",
          LoudspeakerWithKey, 201, LoudspeakerCreate, errors=(403, 409)),
    Route("GET", "/api/v1/loudspeakers/{id}", get_speaker, "One loudspeaker", Loudspeaker, errors=(403, 404),
          query=(ID,)),
    Route("PATCH", "/api/v1/loudspeakers/{id}", update_speaker,
          "Assign a channel, set volume, name or position (lat, lon)", Loudspeaker,
          body=LoudspeakerUpdate, errors=(403, 404, 409), query=(ID,)),
    Route("DELETE", "/api/v1/loudspeakers/{id}", delete_speaker, "Remove a loudspeaker; its audio stops at once",
          None, 204, errors=(403, 404, 409), query=(ID,)),
    Route("POST", "/api/v1/loudspeakers/{id}/rotate-key", rotate_key,
          "Give the loudspeaker a new key (shown once); the old one stops working at once", Key,
          errors=(403, 404), query=(ID,)),
]
