"""Output kinds. Each module registers its builder with base.register; adding
a kind (HLS, MP3) is one new module and one name on the import line below."""

from broadcaster.core.outputs import multicast, ogg, rtp  # noqa: F401  (each registers its kind)
from broadcaster.core.outputs.base import EncodedFrame, Output, OutputContext, build_outputs

__all__ = ["EncodedFrame", "Output", "OutputContext", "build_outputs"]
