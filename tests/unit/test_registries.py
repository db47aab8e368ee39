"""Adding a source or output kind is one new module: every module of the two
packages is found and registers itself, with no list to edit elsewhere."""

import pkgutil

from broadcaster.core import outputs, sources
from broadcaster.core.outputs import base as output_base
from broadcaster.core.sources import base as source_base


def modules(package: object) -> set[str]:
    return {f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)  # type: ignore[attr-defined]
            if m.name != "base"}


def test_every_source_module_registers_a_spec() -> None:
    registered = {spec.__module__ for spec in source_base._BUILDERS}
    assert modules(sources) == registered == {f"broadcaster.core.sources.{n}" for n in ("alert", "live", "pcm", "tone")}


def test_every_output_module_registers_a_builder() -> None:
    registered = {builder.__module__ for builder in output_base.BUILDERS}
    assert modules(outputs) == registered == {f"broadcaster.core.outputs.{n}" for n in ("multicast", "ogg", "rtp")}


def test_an_unknown_spec_is_refused_clearly() -> None:
    try:
        sources.build(object(), 960)
    except sources.SourceError as exc:
        assert "no source kind for object" in str(exc)
    else:
        raise AssertionError("an unregistered spec was built")
