"""Source kinds. Each module registers its spec with base.register; adding a
kind (a relay, say) is one new module and one name on the import line below."""

from broadcaster.core.sources import alert, live, pcm, tone  # noqa: F401  (each registers its kind)
from broadcaster.core.sources.base import Source, SourceError, build

__all__ = ["Source", "SourceError", "build"]
