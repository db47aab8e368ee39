"""What every source is, and the registry of source kinds.

A source yields exactly one 48 kHz mono float32 frame per tick, or ``None``
when it has nothing to play this tick (a finished programme, a studio that
has not sent enough audio yet); the mixer then treats it as silent. Sources
never see the wall clock: one ``read`` is one frame of media time.

Each kind is a module with a frozen, picklable spec (what control sends in an
AddInput command) and a builder registered here with ``@register(Spec)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from broadcaster.codecs.pcm import Audio


class Source(Protocol):
    name: str

    def read(self) -> Audio | None:
        """The next frame, or None if the source has nothing this tick."""

    def skip(self) -> None:
        """Advance one frame without producing audio (nobody is listening)."""

    @property
    def finished(self) -> bool:
        """True once the source will never produce audio again."""


class SourceError(ValueError):
    """A spec the core cannot build (unknown kind, unreadable audio)."""


Builder = Callable[[Any, int], Source]
_BUILDERS: dict[type, Builder] = {}
S = TypeVar("S", bound=Builder)


def register(spec_type: type) -> Callable[[S], S]:
    def decorate(builder: S) -> S:
        _BUILDERS[spec_type] = builder
        return builder
    return decorate


def build(spec: Any, frame_samples: int) -> Source:
    builder = _BUILDERS.get(type(spec))
    if builder is None:
        raise SourceError(f"no source kind for {type(spec).__name__}")
    return builder(spec, frame_samples)
