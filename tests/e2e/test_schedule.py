"""Scheduling through the admin API on the real server: the programme plays at its time,
clashes are refused by name, operators stay in their zones, a restart joins mid-programme.

No assert here is on elapsed time: waits are bounded, and what is asserted is the audio heard, the order of
the server's records and the offsets it reports (how late a start is, is for benchmarks)."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import soundfile

from broadcaster.codecs.pcm import dominant_frequency
from tests.conftest import Api, prepare, run_speaker, start_server, tone_file, wait_until

VN = ZoneInfo("Asia/Ho_Chi_Minh")



def scheduled_log(api: Api) -> list[dict[str, Any]]:
    """The commune's scheduled-programme records, newest first."""
    return [e for e in api("GET", "/api/v1/broadcasts?zone=commune-a")[1]["items"] if e["kind"] == "scheduled"]


def local_in(seconds: float) -> str:
    return (datetime.now(VN) + timedelta(seconds=seconds)).replace(tzinfo=None).isoformat(timespec="seconds")


def upload(api: Api, tmp_path: Path, frequency: float, seconds: float, who: str = "op-a") -> str:
    wav = tone_file(tmp_path / f"{frequency}.wav", frequency, -20.0, seconds)
    audio, rate = soundfile.read(str(wav), dtype="float32")
    flac = tmp_path / f"{frequency}.flac"
    soundfile.write(str(flac), audio, rate, subtype="PCM_16")  # small enough for the test's upload limit
    status, media = api("POST", f"/api/v1/media?zone=commune-a&title=tone{int(frequency)}", who=who,
                        raw=flac.read_bytes())
    assert status == 201, media
    return str(media["id"])


def test_bad_programmes_are_refused(api: Api, tmp_path: Path) -> None:
    media = upload(api, tmp_path, 880.0, 1.0)
    base = {"title": "x", "zones": ["commune-a"], "media": [media], "start": local_in(3600)}
    for patch, code in (({"recurrence": "hourly"}, "bad_value"), ({"recurrence": "weekly"}, "bad_value"),
                        ({"start": "tomorrow"}, "bad_value"), ({"start": "2026-12-01T06:00+07:00"}, "bad_value"),
                        ({"media": ["nope"]}, "bad_reference"), ({"zones": ["nowhere"]}, "bad_reference"),
                        ({"colour": 1}, "unknown_field")):
        status, reply = api("POST", "/api/v1/programmes", who="op-a", body={**base, **patch})
        assert status == 400 and reply["error"]["code"] == code, (patch, reply)
    assert api("GET", "/api/v1/programmes")[1]["total"] == 0


def test_restart_mid_programme_resumes_at_the_offset(tmp_path: Path) -> None:
    config, tokens = prepare(tmp_path)
    server = start_server(config)
    api = Api(server, config, tokens)
    media = upload(api, tmp_path, 880.0, 12.0)
    status, programme = api("POST", "/api/v1/programmes", who="op-a",
                            body={"title": "Dài", "zones": ["commune-a"], "media": [media], "start": local_in(2.0),
                                  "recurrence": "daily"})
    assert status == 201
    assert wait_until(lambda: any(e["outcome"] is None for e in scheduled_log(api))), "the programme starts"
    time.sleep(2.0)  # some of it plays before the stop, so the restart has an offset to resume at
    server.stop()
    server = start_server(config)
    try:
        api = Api(server, config, tokens)
        result: dict[str, Any] = {}
        listener = threading.Thread(target=lambda: result.update(
            run_speaker(server, "spk-1", 3.0, out=tmp_path / "after.wav")))
        listener.start()
        listener.join(30)
        audio, _ = soundfile.read(str(tmp_path / "after.wav"), dtype="float32")
        assert abs(dominant_frequency(audio[24000:]) - 880.0) < 3, "the programme is back on air after the restart"
        log = scheduled_log(api)
        assert [e["outcome"] for e in log] == [None, "stopped"]  # newest first: the resumed play is on air
        resumed, stopped = log
        offset = re.search(r"offset=([0-9.]+)s", resumed["detail"])
        assert offset is not None, resumed
        # It resumed after where the first play was stopped (the programme's clock kept running while the
        # server was down), and inside the 12 s programme: not from the start, not past the end.
        assert stopped["started_at"] < stopped["ended_at"] <= resumed["started_at"]
        assert stopped["ended_at"] - stopped["started_at"] - 0.1 <= float(offset[1]) < 12.0, (offset[1], log)
        assert api("GET", f"/api/v1/programmes/{programme['id']}")[1]["recurrence"] == "daily"
    finally:
        server.stop()
