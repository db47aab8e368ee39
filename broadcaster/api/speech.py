"""/api/v1/speech: which languages text can be read in, and a preview of a text read aloud.

A preview runs an engine for seconds of CPU, so only a caller who may write
bulletins somewhere (``bulletin.create`` in at least one zone) gets one; it
runs in the speech pool (control/speech.py), which refuses with 503 when
full rather than queue without bound.
"""

from __future__ import annotations

from broadcaster.api.call import ApiError, Call, Raw, Reply, Route
from broadcaster.api.models import SpeechLanguage, SpeechLanguages, SpeechPreview
from broadcaster.control.auth import Action
from broadcaster.control.speech import TextTooLong
from broadcaster.control.tts import NoVoice, SpeechError
from broadcaster.control.workers import Busy


async def languages(call: Call) -> Reply:
    found = call.app.speech.voices.languages()
    return 200, SpeechLanguages(languages=[SpeechLanguage(language=k, engine=v) for k, v in found.items()],
                                max_text_chars=call.app.config.tts.max_text_chars)


async def preview(call: Call) -> Reply:
    principal = call.principal
    if Action.BULLETIN_CREATE.value not in principal.permissions or (principal.role != "admin"
                                                                     and not principal.zones):
        raise ApiError(403, "forbidden", f"{principal.role} {principal.name!r} lacks the permission bulletin.create "
                       "in any zone: previews are for those who write bulletins")
    body = call.body(SpeechPreview)
    try:
        audio = await call.app.speech.preview(body.text, body.language)
    except NoVoice as exc:
        raise ApiError(400, "no_voice", str(exc)) from None
    except TextTooLong as exc:
        raise ApiError(413, "too_large", str(exc)) from None
    except Busy as exc:
        raise ApiError(503, "busy", f"speech is being made for others: {exc}", retry_after_s=exc.retry_after_s) \
            from None
    except SpeechError as exc:
        raise ApiError(422, "speech_failed", str(exc)) from None
    return 200, Raw("audio/ogg", audio)


ROUTES = [
    Route("GET", "/api/v1/speech/languages", languages,
          "The languages text can be read in (bulletins, alerts), and the engine of each", SpeechLanguages),
    Route("POST", "/api/v1/speech/preview", preview,
          "A text read aloud by its language's engine at the broadcast loudness, as an Ogg/Opus file (audio/ogg) "
          "to hear before approval; 400 no_voice for a language with no engine", body=SpeechPreview,
          errors=(403, 422, 503), reply_media="audio/ogg"),
]
