"""/api/v1/media: the media library. An upload is decoded, measured and
normalised in a worker (control.media, imported there too: it pulls in
pyloudnorm/scipy, seconds to import), then stored."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET

from broadcaster import metrics
from broadcaster.api.call import ApiError, Call, Param, Reply, Route, Stream
from broadcaster.api.models import Media, Page
from broadcaster.control.auth import Action
from broadcaster.control.space import DiskFull, free_bytes, is_full, require
from broadcaster.control.workers import Busy
from broadcaster.storage.media import MediaInUse, NewMedia

if TYPE_CHECKING:
    from broadcaster.control.media import ProcessedMedia

MEDIA_ERROR = "broadcaster.control.media.MediaError"


def _view(row: dict[str, Any]) -> Media:
    return Media.model_validate({k: v for k, v in row.items() if k != "path"})


async def _row(call: Call) -> dict[str, Any]:
    row = await call.storage.media.get(call.params["id"])
    if row is None or not call.may_see(row["zone"]):  # another commune's item is answered as missing
        raise ApiError(404, "not_found", f"no media item {call.params['id']!r}")
    return row


async def list_media(call: Call) -> Reply:
    limit, offset = call.paging()
    page = await call.storage.media.page(call.visible(), limit, offset)
    return 200, Page[Media](items=[_view(r) for r in page.items], total=page.total, limit=limit, offset=offset)


async def get_media(call: Call) -> Reply:
    return 200, _view(await _row(call))


AUDIO_TYPES = {".flac": "audio/flac", ".ogg": "audio/ogg", ".opus": "audio/ogg", ".wav": "audio/wav",
               ".mp3": "audio/mpeg"}


async def media_audio(call: Call) -> Reply:
    """The stored (normalised) audio, to play in the console: twisted's static file, so a player's
    Range requests (seeking) work and the file is sent as the socket takes it, never read whole."""
    from twisted.web.static import File

    row = await _row(call)
    path = Path(row["path"])
    content_type = AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream")
    if not path.is_file():
        raise ApiError(404, "not_found", f"media item {row['id']!r} has no stored audio file")

    def start(request: Any) -> None:
        body = File(str(path), defaultType=content_type).render(request)
        if body is not NOT_DONE_YET:  # HEAD, or a range it cannot satisfy: answered whole
            request.write(body)
            request.finish()

    return 200, Stream(content_type, start)


def _process(body: bytes | str, **settings: Any) -> ProcessedMedia:
    """In the worker process. ``body`` is the upload, or the path of the file it was spooled to."""
    from broadcaster.control.media import process_upload  # in the worker: slow to import

    data = Path(body).read_bytes() if isinstance(body, str) else body
    return process_upload(data, **settings)


def _body(request: Any) -> bytes | str:
    """A spooled body by its file's name (the worker reads it), a small one as bytes."""
    content = request.content
    if content is None:
        return b""
    name = getattr(content, "name", None)
    if isinstance(name, str):
        content.flush()
        return name
    content.seek(0)
    return bytes(content.read())


def _refused(failure: Failure, media_dir: Path) -> Failure:
    if failure.check(Busy):
        metrics.uploads_rejected_total.labels("busy").inc()
        raise ApiError(503, "busy", f"uploads are being processed: {failure.value}",
                       retry_after_s=failure.value.retry_after_s)
    if failure.check(MEDIA_ERROR):
        exc: Any = failure.value
        metrics.uploads_rejected_total.labels(exc.code).inc()
        raise ApiError(413 if exc.code == "too_large" else 422, exc.code, exc.message)
    if is_full(failure.value):  # writing the normalised file ran out of space (the worker removed it)
        raise _disk_full(media_dir)
    return failure


def _disk_full(media_dir: Path) -> DiskFull:
    metrics.uploads_rejected_total.labels("disk_full").inc()
    return DiskFull(media_dir, free_bytes(media_dir), "upload refused")


def _room(media_dir: Path, size: int, reserve: int) -> None:
    """Room for the stored file (about the upload's size; FLAC of a long low-bitrate MP3 is larger,
    and a shortfall then is caught when the file is written) with the database's reserve left."""
    try:
        require(media_dir, size, reserve, "upload refused")
    except DiskFull:
        metrics.uploads_rejected_total.labels("disk_full").inc()
        raise


async def upload_media(call: Call) -> Reply:
    zone = call.query.get("zone", "")
    title = call.query.get("title", "").strip()
    filename = call.query.get("filename", title or "upload")
    if zone not in call.app.zones:
        raise ApiError(400, "bad_reference", f"query parameter 'zone' must name a zone, got {zone!r}")
    if not title:
        raise ApiError(400, "missing_field", "query parameter 'title' is required")
    call.authorize(Action.WRITE, zone)
    settings = call.app.config.storage
    if getattr(call.request, "too_large", False):
        metrics.uploads_rejected_total.labels("too_large").inc()
        raise ApiError(413, "too_large", f"uploads are limited to {settings.max_upload_bytes} bytes")
    media_dir = Path(settings.media_dir)
    if getattr(call.request, "spool_failed", None) is not None:  # the body did not fit on the disk
        raise _disk_full(media_dir)
    data = _body(call.request)
    _room(media_dir, Path(data).stat().st_size if isinstance(data, str) else len(data), settings.min_free_bytes)
    media_id = uuid.uuid4().hex
    path = media_dir / f"{media_id}.flac"
    # Decoding and loudness analysis take seconds of CPU: in a worker process, never on the reactor.
    work = call.app.workers.run(_process, data, filename=filename, out_path=path, max_bytes=settings.max_upload_bytes,
                             target_lufs=settings.loudness_target_lufs, max_duration_s=settings.max_upload_duration_s)
    result: ProcessedMedia = await work.addErrback(_refused, media_dir)
    item = NewMedia(id=media_id, zone=zone, title=title, filename=filename, path=str(path),
                    duration_s=result.duration_s, loudness_lufs=result.loudness_lufs,
                    original_lufs=result.original_lufs, sha256=result.sha256, size_bytes=result.size_bytes)
    try:
        row = await call.storage.media.add(call.actor, item)
    except BaseException:
        path.unlink(missing_ok=True)  # nothing stored half-way
        raise
    return 201, _view(row)


def _in_use(call: Call, exc: MediaInUse) -> ApiError:
    """409 naming the programmes that play the item: those the caller may see by id and title,
    the others only counted (another commune's programmes are not the caller's to learn)."""
    admin = call.visible() is None
    seen = [p for p in exc.programmes if admin or (p["zones"] and call.may_see(*p["zones"]))]
    names = [f"{p['id']} ({p['title']!r})" for p in seen]
    hidden = len(exc.programmes) - len(seen)
    if hidden:
        names.append(f"{hidden} programme{'s' if hidden > 1 else ''} outside your zones")
    return ApiError(409, "in_use", f"media item {exc.media_id!r} is played by {'; '.join(names)}: "
                    "delete those programmes (or schedule them without it) first")


async def delete_media(call: Call) -> Reply:
    row = await _row(call)
    call.authorize(Action.WRITE, row["zone"])
    try:
        deleted = await call.storage.media.delete(call.actor, row["id"])
    except MediaInUse as exc:
        raise _in_use(call, exc) from None
    if deleted is not None:
        Path(deleted["path"]).unlink(missing_ok=True)
    return 204, None


ID = Param("id", "the media item's id", where="path", required=True)
ROUTES = [
    Route("GET", "/api/v1/media", list_media, "List the media library", Page[Media], paged=True),
    Route("POST", "/api/v1/media", upload_media,
          "Upload a WAV, FLAC, Ogg (Vorbis/Opus) or MP3 file as the raw request body; it is decoded, normalised "
          "to the loudness target and stored", Media, 201, body_media="application/octet-stream",
          errors=(400, 403, 413, 422, 503, 507),
          query=(Param("zone", "the zone the item belongs to", required=True),
                 Param("title", "the item's title", required=True),
                 Param("filename", "the uploaded file's name, for messages"))),
    Route("GET", "/api/v1/media/{id}", get_media, "One media item", Media, errors=(403, 404), query=(ID,)),
    Route("GET", "/api/v1/media/{id}/audio", media_audio,
          "The item's stored audio (normalised; FLAC for uploads), for playing; Range requests work",
          errors=(404,), query=(ID,), reply_media="audio/flac"),
    Route("DELETE", "/api/v1/media/{id}", delete_media,
          "Delete a media item and its file; refused with 409 (in_use) naming the programmes while any plays it",
          None, 204,
          errors=(403, 404, 409), query=(ID,)),
]
