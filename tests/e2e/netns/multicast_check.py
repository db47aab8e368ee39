"""Runs inside a network namespace made by `unshare -n` (only `lo`), so the
multicast group never leaves this test: start the server with a multicast
channel, fetch its SDP, let ffmpeg tune in, print what ffmpeg decoded as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from broadcaster.codecs.pcm import dominant_frequency, rms_dbfs  # noqa: E402
from tests.conftest import start_server, write_config  # noqa: E402

GROUP, PORT = "239.255.42.1", 5906


def main() -> None:
    for command in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", "lo", "multicast", "on"],
                    ["ip", "route", "add", "224.0.0.0/4", "dev", "lo"]):
        subprocess.run(command, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        config = write_config(tmp_path, multicast={"ch-a": {"group": GROUP, "port": PORT, "ttl": 0}})
        server = start_server(config)
        try:
            sdp = server.get("/channels/ch-a.sdp").decode()
            (tmp_path / "ch-a.sdp").write_text(sdp)
            out = tmp_path / "heard.raw"
            result = subprocess.run(
                ["ffmpeg", "-v", "error", "-nostdin", "-protocol_whitelist", "file,udp,rtp",
                 "-i", str(tmp_path / "ch-a.sdp"), "-t", "3",
                 # RFC 7587 SDP always says 2 channels; ffmpeg upmixes mono, so take one side.
                 "-af", "pan=mono|c0=FL", "-f", "f32le", "-ar", "48000", str(out)],
                capture_output=True, text=True, timeout=60)
            audio = np.fromfile(out, dtype=np.float32) if out.exists() else np.zeros(0, np.float32)
            steady = audio[24000:]
            print(json.dumps({
                "sdp": sdp, "returncode": result.returncode, "stderr": result.stderr,
                "seconds": audio.size / 48000,
                "frequency": dominant_frequency(steady) if steady.size > 4800 else 0.0,
                "level": rms_dbfs(steady) if steady.size else -999.0,
            }))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
