"""Real server, real reference loudspeakers on loopback: audio only for the proven.

Nothing here asserts how fast anything happened: waits are bounded by generous timeouts, and what is
asserted is what arrived (fields of the packets, their order, the decoded audio, the server's counters)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from prometheus_client.parser import text_string_to_metric_families

from broadcaster.codecs.pcm import dominant_frequency, rms_dbfs
from broadcaster.protocols.rtp import parse_rtp, seq_delta
from broadcaster.protocols.speaker import MessageType, encode_message, parse_envelope
from tests.conftest import KEYS, RunningServer, run_speaker, wait_until
from tests.e2e.test_http_stream import metric

pytestmark = pytest.mark.solo  # asserts no frame missed or lost: run alone (Makefile)

WAIT_S = 15.0  # a bound on waiting for something that must happen, never an expectation of speed



def metric_sum(server: RunningServer, name: str, labels: dict[str, str]) -> float:
    """The sum over every sample matching ``labels`` (e.g. one channel's packets over all transports)."""
    total = 0.0
    for family in text_string_to_metric_families(server.get("/metrics").decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_loudspeaker_hears_its_channel_tone_without_loss(server: RunningServer, tmp_path: Path) -> None:
    wav = tmp_path / "spk-1.wav"
    stats = run_speaker(server, "spk-1", 4.0, out=wav)
    assert stats["acked"] and stats["refusals"] == []
    assert stats["lost"] == 0 and stats["late"] == 0 and stats["decode_errors"] == 0 and stats["resets"] == 0
    # Every packet the loudspeaker got was sent by the server for ch-a, and every slot it played is 960
    # decoded samples in the file: the audio is the packets, no more and no less.
    assert 0 < stats["played"] <= stats["received"] <= metric_sum(server, "broadcaster_packets_sent_total",
                                                                  {"channel": "ch-a"})
    audio, rate = soundfile.read(str(wav), dtype="float32")
    assert rate == 48000 and audio.size == 960 * (stats["played"] + stats["concealed"])
    assert stats["played"] >= 50, f"too little audio to measure (not a speed check): {stats}"
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
    # At least its first subscribe and its unsubscribe at the end, whatever the timing in between.
    assert wait_until(lambda: metric(server, "broadcaster_datagrams_rejected_total",
                                     {"reason": "bad_mac"}) >= before + 2)


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

    def counted() -> dict[str, float]:
        return {r: metric(server, "broadcaster_datagrams_rejected_total", {"reason": r}) - before[r] for r in bad}

    # Each refusal counted once under its reason: wait (bounded) until all are, then check none twice.
    assert wait_until(lambda: counted() == {r: len(d) for r, d in bad.items()}), counted()
    received = []
    deadline = time.monotonic() + 0.5  # the server has handled them all; anything it sent would be here
    while time.monotonic() < deadline:
        try:
            received.append(sock.recv(2048))
        except TimeoutError:
            pass
    assert received == [], "no reply, and certainly no audio, to unauthenticated datagrams"
    # The server is still serving: the valid datagram gets a cookie, its echo gets audio.
    sock.sendto(valid, target)
    challenge = parse_envelope(sock.recv(2048)).json()
    assert challenge["verified"] is False
    sock.sendto(encode_message(MessageType.SUBSCRIBE, "spk-1", {"channel": "ch-a", "ts": now_ms, "seq": 2,
                                                                 "cookie": challenge["cookie"]}, key), target)
    packets: list[bytes] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and len(packets) < 10:
        try:
            packets.append(sock.recv(2048))
        except TimeoutError:
            pass
    assert len(packets) == 10
    assert packets[0][:4] == b"BCS1" and parse_envelope(packets[0]).json()["verified"] is True
    # Then the channel's RTP stream: one SSRC, Opus PT 111, consecutive sequence numbers, and timestamps
    # 960 apart (one 20 ms frame at the 48 kHz RTP clock), whatever the spacing they arrived with.
    rtp = [parse_rtp(p) for p in packets[1:]]
    assert {p.payload_type for p in rtp} == {111} and len({p.ssrc for p in rtp}) == 1
    assert [seq_delta(a.sequence, b.sequence) for a, b in zip(rtp, rtp[1:], strict=False)] == [1] * 8
    assert [(b.timestamp - a.timestamp) % (1 << 32) for a, b in zip(rtp, rtp[1:], strict=False)] == [960] * 8
    assert all(p.payload for p in rtp)
    sock.close()


def test_subscription_expires_when_keepalives_stop(server: RunningServer) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10.0)  # a bound on waiting for the reply (a loaded CI machine took over 0.5 s), not a speed
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
    expired = metric(server, "broadcaster_subscriptions_expired_total", {"channel": "ch-a"})
    # keepalive_s is 1 and missed_keepalives 3 in the test configuration: it expires (waited for, bounded).
    assert wait_until(lambda: server.get_json("/healthz")["loudspeakers_online"] == 0)
    assert metric(server, "broadcaster_subscriptions_expired_total", {"channel": "ch-a"}) == expired + 1, (
        "expired, not dropped otherwise")
    # Audio stops: a quiet 0.5 s comes within a few seconds (the channel may be played by another core
    # process, which gets the new send list a few frames after control hears of the expiry).
    sock.settimeout(0.5)
    deadline = time.monotonic() + 5.0
    quiet = False
    while not quiet and time.monotonic() < deadline:
        try:
            sock.recv(2048)
        except TimeoutError:
            quiet = True
    assert quiet, "audio stops once the subscription has expired"
    sock.close()


def test_decoded_level_of_silence_channel(tmp_path: Path) -> None:
    """A channel with nothing playing still sends (silent) packets, so a gap means loss."""
    from tests.conftest import start_server, write_config

    running = start_server(write_config(tmp_path, loops={"ch-a": None, "ch-b": None}))
    try:
        wav = tmp_path / "quiet.wav"
        stats = run_speaker(running, "spk-1", 2.0, out=wav)
        assert stats["acked"] and stats["played"] > 0 and stats["lost"] == 0
        audio, _ = soundfile.read(str(wav), dtype="float32")
        assert audio.size == 960 * (stats["played"] + stats["concealed"])
        assert np.abs(audio).max() < 1e-3
        # Every packet it received was a silent frame the server counted as such.
        assert metric(running, "broadcaster_frames_silent_total", {"channel": "ch-a"}) >= stats["received"]
    finally:
        running.stop()


def test_the_server_stops_with_an_error_when_its_audio_core_dies(tmp_path: Path) -> None:
    """Nothing can play without the core: the server exits non-zero for its supervisor
    to restart it, instead of serving a console and an API over silence."""
    import os
    import signal

    from tests.conftest import start_server, write_config

    server = start_server(write_config(tmp_path))
    try:
        children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
        cores = [int(pid) for pid in children
                 if "broadcaster.core.process" in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")]
        assert len(cores) == 1, children
        os.kill(cores[0], signal.SIGKILL)
        assert server.process.wait(20) == 3
        assert "audio core" in (server.process.stderr.read() if server.process.stderr else "")
    finally:
        server.stop()
