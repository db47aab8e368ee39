"""A real browser's MediaRecorder as a webcast client: Chromium's fake microphone plays a tone file, its
WebM/Opus chunks go over a WebSocket (subprotocol webcast) to the server, and the reference loudspeaker
hears the tone; closing the socket ends the session. No console page is involved: the script is what
AzuraCast's Web DJ does, run on a page of the server (http://127.0.0.1 is a secure context)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import soundfile

from broadcaster.codecs.pcm import dominant_frequency
from tests.browser.conftest import make_driver, quit_driver
from tests.conftest import run_speaker, tone_file, wait_until
from tests.e2e.test_studio import live, live_sessions
from tests.e2e.test_studio_formats import PASSWORD, make_server

START = """
const [url, user, password, done] = arguments;
navigator.mediaDevices.getUserMedia({audio: true}).then((microphone) => {
  const recorder = new MediaRecorder(microphone, {mimeType: "audio/webm;codecs=opus", audioBitsPerSecond: 48000});
  const socket = new WebSocket(url, "webcast");
  window.webcast = {socket, recorder, closed: null};
  socket.onclose = (e) => { window.webcast.closed = [e.code, e.reason]; };
  socket.onopen = () => {
    socket.send(JSON.stringify({type: "hello", data: {mime: recorder.mimeType, user, password}}));
    socket.send(JSON.stringify({type: "metadata", data: {title: "Chromium"}}));
    recorder.ondataavailable = async (e) => { if (socket.readyState === 1) socket.send(await e.data.arrayBuffer()); };
    recorder.start(250);
    done(socket.protocol);
  };
  socket.onerror = () => done("error");
}).catch((e) => done("no microphone: " + e));
"""


def test_chromium_mediarecorder_goes_live_over_webcast(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    tone = tone_file(tmp_path / "microphone.wav", 880.0, -12.0, 10.0)
    driver = make_driver("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                         f"--use-file-for-fake-audio-capture={tone}")
    heard = tmp_path / "heard.wav"
    result: dict[str, Any] = {}
    listener = threading.Thread(target=lambda: result.update(run_speaker(server, "spk-1", 12.0, out=heard)))
    try:
        listener.start()
        assert wait_until(lambda: server.get_json("/healthz")["loudspeakers_online"] == 1)
        driver.get(server.url("/healthz"))
        driver.set_script_timeout(30)
        url = f"ws://127.0.0.1:{server.http_port}/ingest/ch-a"
        assert driver.execute_async_script(START, url, "op-a", PASSWORD) == "webcast"
        assert wait_until(lambda: live(server) is not None), "Chromium goes on air"
        assert live_sessions(server) == 1
        time.sleep(5.0)  # on air for a while; what is asserted is what the loudspeaker heard
        driver.execute_script("window.webcast.recorder.stop(); window.webcast.socket.close(1000);")
        assert wait_until(lambda: live(server) is None), "off air once the page closed its socket"
        assert driver.execute_script("return window.webcast.closed")[0] == 1000
        listener.join(40)
    finally:
        quit_driver(driver)
        server.stop()
    assert result["acked"], result
    audio, _ = soundfile.read(str(heard), dtype="float32")
    pitches = [round(dominant_frequency(audio[i:i + 24000])) for i in range(0, audio.size - 24000, 24000)]
    assert sum(abs(f - 880) < 3 for f in pitches) >= 6, pitches  # half-second windows of the microphone's tone
