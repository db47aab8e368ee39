"""Multicast RTP and its SDP, tuned in by ffmpeg inside a private network namespace."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_config

SCRIPT = Path(__file__).parent / "netns" / "multicast_check.py"


def namespaces_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is installed by `make test`")
@pytest.mark.skipif(not namespaces_available(), reason="needs root for `unshare -n`")
def test_ffmpeg_plays_the_multicast_stream_from_its_sdp() -> None:
    result = subprocess.run(["unshare", "-n", sys.executable, str(SCRIPT)], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "m=audio 5906 RTP/AVP 111" in report["sdp"]
    assert "c=IN IP4 239.255.42.1/0" in report["sdp"]
    assert "a=rtpmap:111 opus/48000/2" in report["sdp"]
    assert report["returncode"] == 0, report["stderr"]
    assert report["stderr"].strip() == "", report["stderr"]
    assert report["seconds"] >= 2.5
    assert abs(report["frequency"] - 440.0) < 2.0
    assert abs(report["level"] - (-12.0)) < 1.5


def test_sdp_is_served_for_a_multicast_channel(tmp_path: Path) -> None:
    """IPv6 groups get an IP6 connection line (outside a namespace we only build the SDP, send nothing)."""
    from broadcaster.config import load_config
    from broadcaster.web.sdp import channel_sdp

    config = load_config(write_config(tmp_path, multicast={"ch-a": {"group": "ff15::42", "port": 5008}}))
    channel = config.channel("ch-a")
    assert channel is not None
    sdp = channel_sdp(channel, ssrc=1234, frame_ms=20, origin="::1")
    assert "c=IN IP6 ff15::42\r\n" in sdp and "o=- 1234 1 IN IP6 ::1" in sdp and "a=ptime:20" in sdp
