"""Opus encoder and decoder over the system libopus (through opuslib-next).

Internal audio is 48 kHz mono float32; these wrappers take and return numpy
frames of exactly one Opus frame size, so nothing else handles raw PCM bytes.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

try:
    import opuslib_next as _opus
    import opuslib_next.api.decoder
    import opuslib_next.api.encoder
except Exception as exc:  # pragma: no cover - depends on the system library
    raise ImportError(
        "libopus is missing: install the system package libopus0 "
        "(Debian/Ubuntu: apt-get install libopus0)") from exc

SAMPLE_RATE = 48000
CHANNELS = 1
VALID_FRAME_SAMPLES = (120, 240, 480, 960, 1920, 2880)
MAX_PACKET_BYTES = 1200  # an RTP datagram of this plus 12 bytes fits any path MTU

Frame = npt.NDArray[np.float32]

# opus_encode_float itself, with pointer arguments passed as plain addresses: the encoder
# below calls it straight into a buffer it keeps, so a frame costs libopus and one bytes
# copy of the packet (opuslib's wrapper copies the PCM once and the packet three times).
_encode_float = _opus.api.libopus.opus_encode_float
_encode_float.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int32)
_encode_float.restype = ctypes.c_int32


class OpusCodecError(ValueError):
    """libopus refused a packet or a frame."""


@dataclass(frozen=True)
class OpusSettings:
    frame_samples: int = 960
    bitrate: int = 32000
    complexity: int = 5
    dtx: bool = False
    fec: bool = False
    packet_loss_percent: int = 0
    application: str = "audio"  # "audio" for programmes, "voip" for speech-only


class OpusEncoder:
    """One per channel: every subscriber of the channel gets its packets."""

    def __init__(self, settings: OpusSettings = OpusSettings()) -> None:
        if settings.frame_samples not in VALID_FRAME_SAMPLES:
            raise ValueError(f"Opus frame size must be one of {VALID_FRAME_SAMPLES}, got {settings.frame_samples}")
        application = {"audio": _opus.APPLICATION_AUDIO, "voip": _opus.APPLICATION_VOIP}[settings.application]
        self.settings = settings
        self.frame_samples = settings.frame_samples
        self._encoder = _opus.Encoder(SAMPLE_RATE, CHANNELS, application)
        self._encoder.bitrate = settings.bitrate
        self._encoder.complexity = settings.complexity
        self._encoder.inband_fec = int(settings.fec)
        self._encoder.packet_loss_perc = settings.packet_loss_percent
        self._encoder.dtx = int(settings.dtx)
        # Pre-skip for Ogg (RFC 7845 4.2): the decoder discards this many samples.
        self.lookahead: int = int(self._encoder.lookahead)
        self._state = ctypes.cast(self._encoder.encoder_state, ctypes.c_void_p).value
        self._out = ctypes.create_string_buffer(MAX_PACKET_BYTES)
        self._out_address = ctypes.addressof(self._out)

    def encode(self, frame: Frame) -> bytes:
        if frame.shape != (self.frame_samples,):
            raise ValueError(f"expected {self.frame_samples} samples, got shape {frame.shape}")
        if frame.dtype != np.float32 or not frame.flags.c_contiguous:
            frame = np.ascontiguousarray(frame, dtype=np.float32)
        # Capped so every packet fits one datagram whatever the bitrate: libopus
        # lowers the quality of a frame rather than exceed the cap.
        size = _encode_float(self._state, frame.ctypes.data, self.frame_samples, self._out_address,
                             MAX_PACKET_BYTES)
        if size < 0:
            raise OpusCodecError(f"Opus encode failed: {_opus.OpusError(size)}")
        return ctypes.string_at(self._out_address, size)


class OpusDecoder:
    def __init__(self, frame_samples: int = 960) -> None:
        self.frame_samples = frame_samples
        self._decoder = _opus.Decoder(SAMPLE_RATE, CHANNELS)

    def decode(self, packet: bytes) -> Frame:
        """Decode one packet; the result may cover a different duration than frame_samples."""
        if not packet:
            raise OpusCodecError("empty Opus packet")
        try:
            pcm = self._decoder.decode_float(packet, 5760, False)
        except _opus.OpusError as exc:
            raise OpusCodecError(f"Opus decode failed: {exc}") from exc
        return np.frombuffer(pcm, dtype=np.float32).copy()

    def conceal(self, samples: int | None = None) -> Frame:
        """Packet-loss concealment for one missing frame (libopus PLC)."""
        n = samples or self.frame_samples
        try:
            # A NULL packet asks libopus for concealment of n samples.
            pcm = _opus.api.decoder.decode_float(
                self._decoder.decoder_state, None, 0, n, False, channels=CHANNELS)
        except _opus.OpusError as exc:
            raise OpusCodecError(f"Opus concealment failed: {exc}") from exc
        return np.frombuffer(pcm, dtype=np.float32).copy()


def silence_packet(settings: OpusSettings) -> bytes:
    """The packet a steady-state encoder produces for digital silence.

    A channel with nothing playing sends this cached packet instead of running
    the encoder: Opus packets are self-contained, so a decoder accepts it in
    the middle of any stream.
    """
    encoder = OpusEncoder(settings)
    zeros = np.zeros(settings.frame_samples, dtype=np.float32)
    packet = b""
    for _ in range(10):
        packet = encoder.encode(zeros)
    return packet
