"""Output kinds: every module in this package registers its builder with
base.register, and is imported here by discovery, so adding a kind (HLS,
MP3) is one new module and nothing else."""

import importlib
import pkgutil

from broadcaster.core.outputs.base import EncodedFrame, Output, OutputContext, build_outputs

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["EncodedFrame", "Output", "OutputContext", "build_outputs"]
