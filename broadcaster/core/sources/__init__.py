"""Source kinds: every module in this package registers its spec with
base.register, and is imported here by discovery, so adding a kind (a relay,
say) is one new module and nothing else."""

import importlib
import pkgutil

from broadcaster.core.sources.base import Source, SourceError, build

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["Source", "SourceError", "build"]
