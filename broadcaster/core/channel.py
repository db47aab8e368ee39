"""A channel: one mix bus, one Opus encoder, one RTP stream, and its outputs.

Each tick the channel mixes and encodes exactly once, then hands the same
bytes to every output (core/outputs: RTP to loudspeakers, multicast, the Ogg
listener stream). A channel that no output needs advances its sources and
media time and does nothing else.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

import numpy as np

from broadcaster import metrics
from broadcaster.codecs.opus import OpusEncoder, OpusSettings, silence_packet
from broadcaster.codecs.pcm import gain_to_db
from broadcaster.config import AudioConfig, HttpConfig
from broadcaster.core.commands import ChannelSpec
from broadcaster.core.mixer import Mixer
from broadcaster.core.outputs import EncodedFrame, Output, OutputContext, build_outputs
from broadcaster.protocols.rtp import OPUS_CLOCK_RATE, OPUS_PAYLOAD_TYPE, RtpPacketizer

LEVEL_FLOOR_DBFS = -96.0  # what silence reads as (a 24-bit floor): the meter needs a number


def _dbfs(amplitude: float) -> float:
    return round(max(LEVEL_FLOOR_DBFS, gain_to_db(amplitude)), 1)  # gain_to_db floors 0 at -240 dB


class Channel:
    def __init__(self, spec: ChannelSpec, audio: AudioConfig, http: HttpConfig, *, sock: Any,
                 fanout: str = "auto", emit: Any = None) -> None:
        self.spec = spec
        self.id = spec.id
        self.frame_samples = audio.frame_samples
        self.mixer = Mixer(audio.frame_samples)
        settings = OpusSettings(frame_samples=audio.frame_samples, bitrate=audio.bitrate,
                                complexity=audio.complexity, dtx=audio.dtx, fec=audio.fec,
                                packet_loss_percent=audio.packet_loss_percent)
        self.encoder = OpusEncoder(settings)
        self.silence = silence_packet(settings)
        self.ssrc = secrets.randbits(32)
        self.packetizer = RtpPacketizer(ssrc=self.ssrc, payload_type=OPUS_PAYLOAD_TYPE,
                                        first_sequence=secrets.randbits(16),
                                        first_timestamp=secrets.randbits(32))
        context = OutputContext(spec=spec, audio=audio, http=http, sock=sock, fanout=fanout,
                                emit=emit or (lambda event: None), ssrc=self.ssrc,
                                pre_skip=self.encoder.lookahead)
        self.outputs: list[Output] = build_outputs(context)
        self.by_kind: dict[str, Any] = {o.kind: o for o in self.outputs}
        self._marker = True
        self._last_tick: int | None = None
        # The level meter (the console's overview): the mixed frames' energy since the last status(),
        # one numpy reduction per frame (np.dot: no temporary array), never per listener; the loudest
        # frame's energy is kept too (a 20 ms peak-of-RMS, at no further reduction).
        self._energy = 0.0
        self._loudest = 0.0
        self._level_samples = 0
        self._encode_seconds = metrics.HistogramTally(metrics.encode_seconds.labels(self.id))
        self._frames_encoded = metrics.Tally(metrics.frames_encoded_total.labels(self.id))
        self._frames_silent = metrics.Tally(metrics.frames_silent_total.labels(self.id))

    @property
    def rtp_info(self) -> dict[str, int | str]:
        return {"codec": "opus", "payload_type": OPUS_PAYLOAD_TYPE, "clock_rate": OPUS_CLOCK_RATE,
                "channels": 1, "ssrc": self.ssrc, "frame_ms": self.frame_samples // 48}

    @property
    def active(self) -> bool:
        for output in self.outputs:
            if output.active:
                return True
        return False

    def tick(self, tick: int) -> None:
        if self._last_tick is not None and tick > self._last_tick + 1:
            # The clock skipped ticks after a stall: keep media time with wall time,
            # so programmes stay on schedule and receivers see the gap in RTP timestamps.
            for _ in range(tick - self._last_tick - 1):
                self.mixer.skip()
                self.packetizer.skip(self.frame_samples)
        self._last_tick = tick
        if not self.active:
            self.mixer.skip()
            self.packetizer.skip(self.frame_samples)
            self._marker = True
            for output in self.outputs:
                output.idle()
            return
        started = time.perf_counter()
        frame = self.mixer.mix()
        self._level_samples += self.frame_samples
        if frame is None:
            packet = self.silence
            self._frames_silent.pending += 1
        else:
            energy = float(np.dot(frame, frame))
            self._energy += energy
            if energy > self._loudest:
                self._loudest = energy
            packet = self.encoder.encode(frame)
            self._frames_encoded.pending += 1
            self._encode_seconds.observe(time.perf_counter() - started)
        # The marker bit flags new content: the stream's start, or a higher class taking over.
        rtp = self.packetizer.packetize(packet, self.frame_samples, marker=self._marker or self.mixer.top_rose)
        self._marker = False
        encoded = EncodedFrame(tick, frame, packet, rtp, self.frame_samples)
        for output in self.outputs:
            output.send(encoded)

    def level(self) -> dict[str, float | None]:
        """The mixed audio since the last call (about a second), in dBFS: ``rms_dbfs`` over all of it,
        ``peak_dbfs`` the RMS of its loudest frame; None when the channel mixed nothing (no output
        needed it). Silence reads LEVEL_FLOOR_DBFS."""
        samples, energy, loudest = self._level_samples, self._energy, self._loudest
        self._level_samples, self._energy, self._loudest = 0, 0.0, 0.0
        if samples == 0:
            return {"rms_dbfs": None, "peak_dbfs": None}
        return {"rms_dbfs": _dbfs(math.sqrt(energy / samples)),
                "peak_dbfs": _dbfs(math.sqrt(loudest / self.frame_samples))}

    def status(self) -> dict[str, Any]:
        described: dict[str, Any] = {"top": None if self.mixer.top is None else int(self.mixer.top),
                                     "level": self.level()}
        for output in self.outputs:
            described.update(output.describe())
        return described

