"""/api/v1/events: the console's live overview as server-sent events (control/overview.py).

Authenticated like every route (the console's cookie or a bearer token); each stream carries only
the channels, and the alerts on them, of the caller's zones. At most a few streams per user and per
address: past that a 429, before the stream's head is written."""

from __future__ import annotations

from twisted.web.server import Request

from broadcaster.api.call import ApiError, Call, Reply, Route, Stream
from broadcaster.control.overview import PER_ADDRESS, PER_USER, Limited


async def events(call: Call) -> Reply:
    overview = call.app.overview
    user, address, visible = call.principal.name, call.remote or "", call.visible()
    try:
        overview.check(user, address)
    except Limited as exc:
        raise ApiError(429, "too_many_streams", str(exc), retry_after_s=10) from None

    def start(request: Request) -> None:  # run by the router as it replies, in the same turn as the check
        overview.open(request, user, address, visible)

    return 200, Stream("text/event-stream; charset=utf-8", start)


ROUTES = [
    Route("GET", "/api/v1/events", events,
          "The overview as server-sent events: about once a second an `overview` event with, per channel the "
          "caller may see, what is on air (class, item, since, who), its level (dBFS), loudspeakers online and "
          "offline, and the alerts on air with their acknowledgement counts; a comment line as heartbeat. At "
          f"most {PER_USER} streams per user and {PER_ADDRESS} per address (429 past that)", errors=(429,),
          reply_media="text/event-stream"),
]
