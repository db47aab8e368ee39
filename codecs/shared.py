"""Decoded audio handed from control to the core without copying it through a socket.

Control decodes a programme, an alert's speech or a loop once, writes the
48 kHz mono float32 samples to a file in memory (/dev/shm when the system
has it) and sends the core a ``SharedPcm`` naming it. The core maps the file
and unlinks it at once: the pages live while a source uses them and are
freed with the last one, so nobody has to track a file's lifetime, and a
30-minute programme costs the core one mmap call, not 345 MB through a pipe.
"""

from __future__ import annotations

import os
import tempfile
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from broadcaster.codecs.pcm import SAMPLE_RATE, Audio

PREFIX = "broadcaster-pcm-"


def shared_dir() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


@dataclass(frozen=True)
class SharedPcm:
    path: str
    samples: int

    @property
    def duration_s(self) -> float:
        return self.samples / SAMPLE_RATE


def share(audio: Audio, directory: Path | None = None) -> SharedPcm:
    """Write audio for the core (blocking: call from a worker thread for long audio)."""
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError("shared audio must be a non-empty 1-D array")
    path = (directory or shared_dir()) / f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex}.f32"
    data = np.ascontiguousarray(audio, dtype=np.float32)
    data.tofile(path)  # no second copy of a long programme in memory
    return SharedPcm(str(path), int(data.size))


_attached: weakref.WeakValueDictionary[str, Audio] = weakref.WeakValueDictionary()


def attach(pcm: SharedPcm) -> Audio:
    """Map the samples read-only and unlink the file (the mapping keeps them).
    Attaching the same audio again, while it is in use, returns the same mapping."""
    mapped = _attached.get(pcm.path)
    if mapped is not None:
        return mapped
    try:
        # A plain ndarray over the mapping (it keeps the mapping alive): slicing a np.memmap
        # runs three Python-level hooks per slice, 20 µs a channel-frame (benchmarks/channels.py).
        mapped = np.memmap(pcm.path, dtype=np.float32, mode="r", shape=(pcm.samples,)).view(np.ndarray)
        _attached[pcm.path] = mapped
        return mapped
    finally:
        try:
            os.unlink(pcm.path)
        except OSError:
            pass


def discard(pcm: SharedPcm) -> None:
    """Control made audio the core never took (the play was cancelled first)."""
    try:
        os.unlink(pcm.path)
    except OSError:
        pass


def sweep(directory: Path | None = None) -> int:
    """At start: remove files that servers no longer running left behind (and any with
    this process's id: a pid reused from before a reboot, since nothing is shared yet)."""
    removed = 0
    for path in (directory or shared_dir()).glob(PREFIX + "*.f32"):
        pid = path.name[len(PREFIX):].split("-", 1)[0]
        try:
            if int(pid) != os.getpid():
                os.kill(int(pid), 0)
                continue  # another server, still running
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        path.unlink(missing_ok=True)
        removed += 1
    return removed
