"""The admin API on the real server: roles and zones, validation, uploads, audit, reports, restarts."""

from __future__ import annotations

import io
import json
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from twisted.web.test.requesthelper import DummyRequest

from broadcaster.api import ROUTES, ApiError
from broadcaster.api.call import Call
from broadcaster.api.models import (
    AlertCreate,
    AlertPriority,
    LoudspeakerCreate,
    OnRestart,
    ProgrammeCreate,
    Recurrence,
    ZoneKind,
)
from broadcaster.api.openapi import build, committed
from broadcaster.control.auth import Principal
from tests.conftest import MAX_UPLOAD, Api, prepare, run_speaker, start_server, tone_file, wait_until


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    config, tokens = prepare(tmp_path_factory.mktemp("shared"))
    server = start_server(config)
    yield Api(server, config, tokens)
    server.stop()


def test_openapi_document_matches_the_routes(shared_api: Api) -> None:
    status, document = shared_api("GET", "/api/v1/openapi.json", who=None)
    assert status == 200 and document["openapi"].startswith("3.")
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    routed = {(r.method, r.path) for r in ROUTES}
    assert documented == routed
    # Open to everyone: the document itself and the e-board feeds (published bulletins). The link's
    # routes are public to bearer tokens but checked by their signature, so they answer 401 too; so is
    # the console's sign-in, whose credentials are its body.
    open_to_all = {(r.method, r.path) for r in ROUTES if r.public and not r.path.startswith("/api/v1/link/")
                   and r.path != "/api/v1/session"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], f"{method} {path} documents no responses"
            if (method.upper(), path) not in open_to_all:
                assert "401" in operation["responses"], f"{method} {path} must document 401"
            else:
                assert "401" not in operation["responses"], f"{method} {path} never asks for credentials"


def test_requests_without_a_valid_token_get_401(shared_api: Api) -> None:
    assert shared_api("GET", "/api/v1/zones", who=None)[0] == 401
    status, body = shared_api("GET", "/api/v1/zones", who="bct_not-a-token")
    assert status == 401 and body["error"]["code"] == "unauthenticated"
    assert shared_api("GET", "/api/v1/nothing")[0] == 404
    assert shared_api("PATCH", "/api/v1/zones")[0] == 405  # (PUT belongs to studio ingest)


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("method, path, body, admin, op_a, viewer_a", [
    ("GET", "/api/v1/channels/ch-a", None, 200, 200, 200),
    ("GET", "/api/v1/channels/ch-b", None, 200, 403, 403),
    # What the caller may not see is answered as missing: its id is not the caller's to learn.
    ("GET", "/api/v1/loudspeakers/{speaker-b}", None, 200, 404, 404),
    ("PATCH", "/api/v1/loudspeakers/{speaker-a}", {"volume": 55}, 200, 200, 403),
    ("PATCH", "/api/v1/loudspeakers/{speaker-b}", {"volume": 55}, 200, 404, 404),
    ("PATCH", "/api/v1/loudspeakers/{speaker-a}", {"channel": "ch-b"}, 200, 403, 403),
    ("POST", "/api/v1/loudspeakers", {"id": "{new}", "zone": "hamlet-b", "channel": "ch-b"}, 201, 403, 403),
    ("POST", "/api/v1/loudspeakers/{speaker-b}/rotate-key", None, 200, 404, 404),
    ("DELETE", "/api/v1/loudspeakers/{speaker-b}", None, 204, 404, 404),
    ("POST", "/api/v1/loudspeakers/{speaker-a}/rotate-key", None, 200, 200, 403),
    ("POST", "/api/v1/zones", {"id": "{new}", "name": "Mới", "kind": "commune", "parent": "province"},
     201, 403, 403),
    ("POST", "/api/v1/channels", {"id": "{new}", "name": "Mới", "zone": "commune-a"}, 201, 403, 403),
    ("GET", "/api/v1/broadcasts?zone=commune-b", None, 200, 403, 403),
    ("GET", "/api/v1/audit?zone=commune-b", None, 200, 403, 403),
    ("GET", "/api/v1/reports/broadcast?zone=commune-b", None, 200, 403, 403),
    ("GET", "/api/v1/reports/broadcast?zone=province", None, 200, 403, 403),
    ("POST", "/api/v1/media?zone=commune-b&title=x", None, 422, 403, 403),
])
def test_every_role_against_every_route_family(shared_api: Api, method: str, path: str, body: Any, admin: int,
                                               op_a: int, viewer_a: int) -> None:
    """One server for the table, but every row makes the loudspeakers and ids it
    changes, so no row depends on which rows ran before it."""
    names = {"{new}": fresh("new")}
    for hamlet, channel in (("a", "ch-a"), ("b", "ch-b")):
        name = fresh(f"spk-{hamlet}")
        status, _ = shared_api("POST", "/api/v1/loudspeakers",
                               body={"id": name, "zone": f"hamlet-{hamlet}", "channel": channel})
        assert status == 201
        names["{speaker-" + hamlet + "}"] = name
    for placeholder, name in names.items():
        path = path.replace(placeholder, name)
    if body is not None:
        body = {k: names.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    raw = b"not audio" if "/media" in path else None
    for who, expected in (("viewer-a", viewer_a), ("op-a", op_a), ("admin", admin)):
        status, reply = shared_api(method, path, who=who, body=body, raw=raw)
        assert status == expected, f"{who}: {status} {reply}"
        if status == 403:
            assert reply["error"]["code"] == "forbidden"
        if status == 404:
            assert reply["error"] == {"code": "not_found", "message": f"no loudspeaker {path.split('/')[4]!r}"}


def test_lists_are_scoped_and_paged(api: Api) -> None:
    status, page = api("GET", "/api/v1/loudspeakers", who="op-a")
    assert status == 200 and [s["id"] for s in page["items"]] == ["spk-1", "spk-2"] and page["total"] == 2
    status, page = api("GET", "/api/v1/loudspeakers?limit=1&offset=1")
    assert [s["id"] for s in page["items"]] == ["spk-2"] and page["total"] == 4 and page["limit"] == 1
    assert api("GET", "/api/v1/loudspeakers?limit=0")[0] == 400
    status, page = api("GET", "/api/v1/channels", who="viewer-a")
    assert [c["id"] for c in page["items"]] == ["ch-a"]


@pytest.mark.parametrize("body, code", [
    ({"id": "x", "zone": "hamlet-a"}, "missing_field"),
    ({"id": "x", "zone": "hamlet-a", "channel": "ch-a", "colour": "red"}, "unknown_field"),
    ({"id": "x", "zone": "hamlet-a", "channel": "ch-a", "volume": "loud"}, "wrong_type"),
    ({"id": "x", "zone": "hamlet-a", "channel": "ch-a", "volume": 101}, "bad_value"),
    ({"id": "x'); DROP TABLE loudspeakers;--", "zone": "hamlet-a", "channel": "ch-a"}, "bad_id"),
    ({"id": "x", "zone": "nowhere", "channel": "ch-a"}, "bad_reference"),
    ({"id": "x", "zone": "hamlet-a", "channel": "ch-a", "key": "short"}, "bad_value"),
    ({"id": "spk-1", "zone": "hamlet-a", "channel": "ch-a"}, "exists"),
])
def test_bad_registrations_store_nothing(shared_api: Api, body: Any, code: str) -> None:
    before = shared_api("GET", "/api/v1/loudspeakers")[1]["total"]
    audit_before = shared_api("GET", "/api/v1/audit")[1]["total"]
    status, reply = shared_api("POST", "/api/v1/loudspeakers", body=body)
    assert 400 <= status < 500 and reply["error"]["code"] == code, reply
    assert shared_api("GET", "/api/v1/loudspeakers")[1]["total"] == before
    assert shared_api("GET", "/api/v1/audit")[1]["total"] == audit_before


def test_bad_json_is_a_clear_400(shared_api: Api) -> None:
    for raw, code in ((b"{not json", "bad_json"), (b"[1, 2]", "bad_json"), (b"x" * 70_000, "too_large"),
                      (b"[" * 30_000 + b"]" * 30_000, "bad_json"), (b'{"name": "\\udc00"}', "bad_json")):
        status, reply = shared_api("PATCH", "/api/v1/loudspeakers/spk-1", raw=raw)
        assert status in (400, 413) and reply["error"]["code"] == code


def test_sql_metacharacters_in_names_are_just_text(api: Api) -> None:
    name = "Loa ấp 1'); DELETE FROM zones; --"
    status, speaker = api("PATCH", "/api/v1/loudspeakers/spk-1", body={"name": name})
    assert status == 200 and speaker["name"] == name
    assert api("GET", "/api/v1/zones")[1]["total"] == 5


def test_registered_loudspeaker_plays_without_restart_and_rotation_locks_out_the_old_key(api: Api) -> None:
    status, created = api("POST", "/api/v1/loudspeakers", who="op-a",
                          body={"id": "new-a", "zone": "hamlet-a", "channel": "ch-a", "volume": 60})
    assert status == 201 and len(created["key"]) == 64
    stats = run_speaker(api.server, "new-a", 2.0, channel="ch-a", key=created["key"])
    assert stats["acked"] and stats["received"] > 50 and stats["lost"] == 0
    status, rotated = api("POST", "/api/v1/loudspeakers/new-a/rotate-key", who="op-a")
    assert status == 200 and rotated["key"] != created["key"]
    assert not run_speaker(api.server, "new-a", 1.5, channel="ch-a", key=created["key"])["acked"]
    assert run_speaker(api.server, "new-a", 1.5, channel="ch-a", key=rotated["key"])["acked"]
    actions = [e["action"] for e in api("GET", "/api/v1/audit?zone=hamlet-a")[1]["items"]]
    assert actions[:2] == ["loudspeaker.rotate_key", "loudspeaker.register"]


def test_upload_library_audit_and_refusals(api: Api, tmp_path: Path) -> None:
    wav = tone_file(tmp_path / "bulletin.wav", 440.0, -30.0, 3.0).read_bytes()
    status, media = api("POST", "/api/v1/media?zone=commune-a&title=B%E1%BA%A3n%20tin&filename=bulletin.wav",
                        who="op-a", raw=wav)
    assert status == 201, media
    assert media["title"] == "Bản tin" and abs(media["duration_s"] - 3.0) < 0.05
    assert abs(media["loudness_lufs"] - (-16.0)) < 0.5 and media["original_lufs"] < -25
    listed = api("GET", "/api/v1/media", who="viewer-a")[1]
    assert [m["id"] for m in listed["items"]] == [media["id"]]
    media_dir = api.config.parent / "var" / "media"
    files_before = sorted(media_dir.iterdir())
    for raw, status_code, code in ((b"garbage" * 100, 422, "undecodable"), (b"", 422, "empty"),
                                   (b"\0" * (MAX_UPLOAD + 1), 413, "too_large")):
        status, reply = api("POST", "/api/v1/media?zone=commune-a&title=x", who="op-a", raw=raw)
        assert (status, reply["error"]["code"]) == (status_code, code)
    assert sorted(media_dir.iterdir()) == files_before, "refused uploads leave no file"
    assert api("GET", "/api/v1/media")[1]["total"] == 1
    audit = api("GET", "/api/v1/audit")[1]["items"]
    assert audit[0]["action"] == "media.upload" and audit[0]["actor"] == "op-a" and audit[0]["remote"] == "127.0.0.1"
    assert api("DELETE", f"/api/v1/media/{media['id']}", who="viewer-a")[0] == 403
    status, programme = api("POST", "/api/v1/programmes", who="op-a", body={
        "title": "Bản tin sáng", "zones": ["commune-a"], "media": [media["id"]],
        "start": (datetime.now() + timedelta(days=2)).strftime("%Y-%m-%dT06:00")})
    assert status == 201, programme
    status, reply = api("DELETE", f"/api/v1/media/{media['id']}", who="op-a")
    assert status == 409 and reply["error"]["code"] == "in_use" and programme["id"] in reply["error"]["message"]
    assert api("DELETE", f"/api/v1/programmes/{programme['id']}", who="op-a")[0] == 204
    assert api("DELETE", f"/api/v1/media/{media['id']}", who="op-a")[0] == 204
    assert sorted(p.name for p in media_dir.iterdir()) == [".incoming"] and not any((media_dir / ".incoming").iterdir())


def test_csv_report_and_broadcast_log(api: Api) -> None:
    # Each channel's loop is decoded in a worker and its play written after: both come soon after start.
    assert wait_until(lambda: len(api("GET", "/api/v1/broadcasts")[1]["items"]) >= 2)
    status, log = api("GET", "/api/v1/broadcasts")
    assert status == 200 and {e["channel"] for e in log["items"]} == {"ch-a", "ch-b"}
    assert all(e["kind"] == "loop" and e["ended_at"] is None for e in log["items"])
    status, text = api("GET", "/api/v1/reports/broadcast?zone=province&format=csv&from=2020-01-01")
    assert status == 200
    header, *rows = text.strip().splitlines()
    assert header.startswith("zone,name,hours_loop,hours_total,loudspeakers,availability")
    assert [r.split(",")[0] for r in rows] == ["commune-a", "commune-b"]


def test_state_and_keys_survive_a_restart(tmp_path: Path) -> None:
    config, tokens = prepare(tmp_path)
    server = start_server(config)
    api = Api(server, config, tokens)
    status, created = api("POST", "/api/v1/loudspeakers",
                          body={"id": "kept", "zone": "hamlet-b", "channel": "ch-b"})
    assert status == 201
    assert api("PATCH", "/api/v1/loudspeakers/spk-3", body={"volume": 33})[0] == 200
    assert run_speaker(server, "kept", 1.5, channel="ch-b", key=created["key"])["acked"]
    server.stop()
    server = start_server(config)
    try:
        api = Api(server, config, tokens)
        status, speaker = api("GET", "/api/v1/loudspeakers/kept")
        assert status == 200 and speaker["channel"] == "ch-b"
        assert api("GET", "/api/v1/loudspeakers/spk-3")[1]["volume"] == 33
        stats = run_speaker(server, "kept", 2.0, channel="ch-b", key=created["key"])
        assert stats["acked"] and stats["lost"] == 0
        log = api("GET", "/api/v1/broadcasts?limit=10")[1]["items"]
        assert {e["outcome"] for e in log if e["ended_at"] is not None} == {"stopped"}
    finally:
        server.stop()


# --- models and the generated document (no server) ------------------------------------------------

def body_error(model: Any, body: Any) -> tuple[int, str, str]:
    request = DummyRequest([b""])
    request.content = io.BytesIO(json.dumps(body).encode())  # type: ignore[attr-defined]
    call = Call(request, Principal("t", "admin"), {}, {}, app=None)  # type: ignore[arg-type]
    with pytest.raises(ApiError) as info:
        call.body(model)
    return info.value.status, info.value.code, info.value.message


@pytest.mark.parametrize("model, body, code, message", [
    (LoudspeakerCreate, {"id": "x", "zone": "z", "channel": "c", "volume": 101}, "bad_value", "volume: must be ≤ 100"),
    (LoudspeakerCreate, {"id": "x", "zone": "z", "channel": "c", "volume": -1}, "bad_value", "volume: must be ≥ 0"),
    (LoudspeakerCreate, {"id": "x", "zone": "z", "channel": "c", "volume": True}, "wrong_type",
     "volume: must be an integer, got bool"),
    (LoudspeakerCreate, {"id": "x", "zone": "z"}, "missing_field", "channel: is required"),
    (LoudspeakerCreate, {"id": "x", "zone": "z", "channel": "c", "colour": 1}, "unknown_field", "colour: unknown"),
    (LoudspeakerCreate, {"id": "a b", "zone": "z", "channel": "c"}, "bad_id", "id: must be letters"),
    (LoudspeakerCreate, {"id": "x", "zone": "z", "channel": "c", "key": "ngắn"}, "bad_value",
     "key: must be at least 16 bytes"),
    (ProgrammeCreate, {"title": "t", "zones": ["z"], "media": ["m"], "start": "s", "weekdays": [0, 7]},
     "bad_value", "weekdays.1: must be ≤ 6"),
    (ProgrammeCreate, {"title": "t", "zones": ["z", 5], "media": ["m"], "start": "s"}, "wrong_type",
     "zones.1: must be a string, got int"),
    (ProgrammeCreate, {"title": "t", "zones": ["z"], "relay": 5, "start": "s"}, "wrong_type",
     "relay: must be a string"),
    (ProgrammeCreate, {"title": "t", "zones": ["z"], "media": ["m"], "start": "s", "duration_s": 1e11},
     "bad_value", "duration_s: must be ≤ 86400"),
    (AlertCreate, {"title": "t", "zones": ["z"], "priority": "scheduled"}, "bad_value", "priority: must be one of"),
    (AlertCreate, {"title": "t", "zones": ["z"], "repeat": 21}, "bad_value", "repeat: must be ≤ 20"),
    (AlertCreate, {"title": "t", "zones": ["z"], "text": "x" * 5001}, "bad_value", "text: must be at most 5000"),
])
def test_validation_errors_name_the_key_path(model: Any, body: Any, code: str, message: str) -> None:
    status, got_code, got_message = body_error(model, body)
    assert (status, got_code) == (400, code) and got_message.startswith(message), got_message


def test_a_valid_body_gives_a_typed_object_and_null_means_absent() -> None:
    request = DummyRequest([b""])
    request.content = io.BytesIO(b'{"id": "s1", "zone": "z", "channel": "c", "volume": 0, "name": null}')  # type: ignore[attr-defined]
    body = Call(request, Principal("t", "admin"), {}, {}, app=None).body(LoudspeakerCreate)  # type: ignore[arg-type]
    assert (body.id, body.volume, body.name, body.key) == ("s1", 0, None, None)


def test_model_choices_follow_control() -> None:
    from typing import get_args

    from broadcaster.config import ZONE_KINDS
    from broadcaster.control.schedule import ON_RESTART, RECURRENCES
    from broadcaster.core.mixer import PRIORITY_NAMES, Priority

    assert get_args(Recurrence) == RECURRENCES and get_args(OnRestart) == ON_RESTART
    assert get_args(ZoneKind) == ZONE_KINDS
    for name in get_args(AlertPriority):
        level = PRIORITY_NAMES[name] if isinstance(name, str) else Priority(name)
        assert level in (Priority.ANNOUNCEMENT, Priority.EMERGENCY)


def test_the_committed_openapi_document_is_the_generated_one() -> None:
    document = build()
    assert committed() == document, "run: python -m broadcaster.api.openapi"
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert documented == {(r.method, r.path) for r in ROUTES}
    schemas = document["components"]["schemas"]
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        if route.body is not None:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert schemas[ref.rsplit("/", 1)[1]]["additionalProperties"] is False
    assert schemas["LoudspeakerCreate"]["properties"]["volume"]["anyOf"][0] == {"maximum": 100, "minimum": 0,
                                                                                "type": "integer"}
    assert set(schemas["Report"]["properties"]) == {"zone", "from", "to", "communes"}


def test_users_made_by_the_cli_can_use_the_api(tmp_path: Path) -> None:
    from tests.conftest import cli, write_config

    config = write_config(tmp_path)
    out = cli(config, "user", "add", "op-b", "--role", "operator", "--zone", "commune-b", "--token")
    token = out.strip().splitlines()[-1]
    assert token.startswith("bct_")
    again = cli(config, "user", "token", "op-b").strip().splitlines()[-1]
    assert again.startswith("bct_") and again != token
    server = start_server(config)
    try:
        api = Api(server, config, {"op-b": token, "op-b-2": again})
        ids = {}
        for who in ("op-b", "op-b-2"):
            status, me = api("GET", "/api/v1/me", who=who)
            assert status == 200 and {k: me[k] for k in ("name", "role", "zones")} == {
                "name": "op-b", "role": "operator", "zones": ["commune-b"]}
            ids[who] = me["token"]
    finally:
        server.stop()
    listed = cli(config, "user", "tokens", "op-b")
    assert ids["op-b"] in listed and ids["op-b-2"] in listed
    assert cli(config, "user", "revoke", ids["op-b"]).strip() == f"token {ids['op-b']} revoked"
    assert ids["op-b"] not in cli(config, "user", "tokens")
    server = start_server(config)
    try:
        api = Api(server, config, {"op-b": token, "op-b-2": again})
        assert api("GET", "/api/v1/me", who="op-b")[0] == 401, "a revoked token is refused"
        assert api("GET", "/api/v1/me", who="op-b-2")[0] == 200, "the user's other token still works"
    finally:
        server.stop()


def test_a_password_set_by_the_cli_signs_in_to_the_console_and_must_change_if_temporary(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT, cli, write_config

    config = write_config(tmp_path)
    cli(config, "user", "add", "op-b", "--role", "operator", "--zone", "commune-b")
    command = [sys.executable, "-m", "broadcaster", "user", "password", "op-b", "--temporary", "-c", str(config)]
    short = subprocess.run(command, input="short\n", capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert short.returncode == 2 and "8 characters" in short.stderr
    done = subprocess.run(command, input="mot-mat-khau-tam\n", capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0 and "next sign-in" in done.stdout
    nobody = subprocess.run([*command[:5], "nobody", *command[6:]], input="mot-mat-khau-tam\n", capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert nobody.returncode == 1 and "no user named 'nobody'" in nobody.stderr
    server = start_server(config)
    try:
        request = urllib.request.Request(server.url("/api/v1/session"), method="POST",
                                         data=json.dumps({"name": "op-b", "password": "mot-mat-khau-tam"}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert json.loads(reply.read())["must_change_password"] is True
    finally:
        server.stop()
