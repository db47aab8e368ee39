"""Real server, real reference loudspeakers on loopback: audio only for the proven."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import soundfile

from broadcaster.codecs.pcm import dominant_frequency, rms_dbfs
from broadcaster.protocols.speaker import MessageType, encode_message, parse_envelope
from tests.conftest import KEYS, RunningServer, run_speaker
from tests.test_http_stream import metric


def test_loudspeaker_hears_its_channel_tone_without_loss(server: RunningServer, tmp_path: Path) -> None:
    wav = tmp_path / "spk-1.wav"
    stats = run_speaker(server, "spk-1", 4.0, out=wav)
    assert stats["acked"] and stats["refusals"] == []
    assert stats["received"] >= 180  # 4 s at 50 packets/s, less start-up
    assert stats["lost"] == 0 and stats["decode_errors"] == 0
    audio, rate = soundfile.read(str(wav), dtype="float32")
    assert rate == 48000 and audio.size >= 3 * 48000
    steady = audio[48000 // 2:]
    assert abs(dominant_frequency(steady) - 440.0) < 1.0
    assert abs(rms_dbfs(steady) - (-12.0)) < 1.0


def test_each_loudspeaker_hears_only_its_own_channel(server: RunningServer, tmp_path: Path) -> None:
    wav = tmp_path / "spk-3.wav"
    stats = run_speaker(server, "spk-3", 3.0, out=wav)
    assert stats["acked"] and stats["lost"] == 0
    audio, _ = soundfile.read(str(wav), dtype="float32")
    assert abs(dominant_frequency(audio[24000:]) - 1000.0) < 2.0  # ch-b's tone, not ch-a's


def test_wrong_key_gets_no_audio_and_is_counted(server: RunningServer) -> None:
    before = metric(server, "broadcaster_datagrams_rejected_total", {"reason": "bad_mac"})
    stats = run_speaker(server, "spk-1", 2.0, key="not-the-right-key-at-all")
    assert not stats["acked"] and stats.get("received", 0) == 0
    assert metric(server, "broadcaster_datagrams_rejected_total", {"reason": "bad_mac"}) >= before + 2


def test_foreign_channel_is_refused(server: RunningServer) -> None:
    stats = run_speaker(server, "spk-1", 1.5, channel="ch-b")
    assert not stats["acked"] and "channel_not_allowed" in stats["refusals"]
    assert stats.get("received", 0) == 0


def test_bad_datagrams_get_nothing_back(server: RunningServer) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    target = ("127.0.0.1", server.udp_port)
    now_ms = int(time.time() * 1000)
    key = KEYS["spk-1"].encode()
    valid = encode_message(MessageType.SUBSCRIBE, "spk-1", {"channel": "ch-a", "ts": now_ms, "seq": 1}, key)
    bad = {
        "malformed": [b"", b"\x80" * 12, b"BCS1" + b"\xff" * 60, valid[:-3], b"GET / HTTP/1.1\r\n\r\n"],
        "unknown_device": [encode_message(MessageType.SUBSCRIBE, "nobody", {"channel": "ch-a", "ts": now_ms,
                                                                            "seq": 1}, key)],
        "stale_timestamp": [encode_message(MessageType.SUBSCRIBE, "spk-1", {"channel": "ch-a",
                                                                            "ts": now_ms - 3_600_000, "seq": 1}, key)],
    }
    before = {r: metric(server, "broadcaster_datagrams_rejected_total", {"reason": r}) for r in bad}
    for datagrams in bad.values():
        for datagram in datagrams:
            sock.sendto(datagram, target)
    received = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            received.append(sock.recv(2048))
        except TimeoutError:
            pass
    assert received == [], "no reply, and certainly no audio, to unauthenticated datagrams"
    for reason, datagrams in bad.items():
        assert metric(server, "broadcaster_datagrams_rejected_total", {"reason": reason}) == before[reason] + len(
            datagrams)
    # The server is still serving: the valid datagram gets a cookie, its echo gets audio.
    sock.sendto(valid, target)
    challenge = parse_envelope(sock.recv(2048)).json()
    assert challenge["verified"] is False
    sock.sendto(encode_message(MessageType.SUBSCRIBE, "spk-1", {"channel": "ch-a", "ts": now_ms, "seq": 2,
                                                                 "cookie": challenge["cookie"]}, key), target)
    packets = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and len(packets) < 10:
        try:
            packets.append(sock.recv(2048))
        except TimeoutError:
            pass
    assert packets[0][:4] == b"BCS1" and all(p[0] & 0xC0 == 0x80 for p in packets[1:])
    assert len(packets) == 10
    sock.close()


def test_subscription_expires_when_keepalives_stop(server: RunningServer) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    key = KEYS["spk-2"].encode()
    datagram = encode_message(MessageType.SUBSCRIBE, "spk-2", {"channel": "ch-a", "ts": int(time.time() * 1000),
                                                               "seq": 1}, key)
    sock.sendto(datagram, ("127.0.0.1", server.udp_port))
    cookie = parse_envelope(sock.recv(2048)).json()["cookie"]
    sock.sendto(encode_message(MessageType.SUBSCRIBE, "spk-2", {"channel": "ch-a", "ts": int(time.time() * 1000),
                                                                "seq": 2, "cookie": cookie}, key),
                ("127.0.0.1", server.udp_port))
    assert parse_envelope(sock.recv(2048)).json()["verified"] is True
    assert server.get_json("/healthz")["loudspeakers_online"] == 1
    # keepalive_s is 1 and missed_keepalives 3 in the test configuration: gone within about 4 s.
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and server.get_json("/healthz")["loudspeakers_online"]:
        time.sleep(0.25)
    assert server.get_json("/healthz")["loudspeakers_online"] == 0
    sock.setblocking(False)
    try:
        while sock.recv(2048):
            pass
    except BlockingIOError:
        pass
    time.sleep(0.3)
    try:
        late = sock.recv(2048)
    except BlockingIOError:
        late = b""
    assert late == b"", "audio stops once the subscription has expired"
    sock.close()


def test_decoded_level_of_silence_channel(tmp_path: Path) -> None:
    """A channel with nothing playing still sends (silent) packets, so a gap means loss."""
    from tests.conftest import start_server, write_config

    running = start_server(write_config(tmp_path, loops={"ch-a": None, "ch-b": None}))
    try:
        wav = tmp_path / "quiet.wav"
        stats = run_speaker(running, "spk-1", 2.0, out=wav)
        assert stats["acked"] and stats["received"] >= 80 and stats["lost"] == 0
        audio, _ = soundfile.read(str(wav), dtype="float32")
        assert np.abs(audio).max() < 1e-3
        assert metric(running, "broadcaster_frames_silent_total", {"channel": "ch-a"}) >= 80
    finally:
        running.stop()
