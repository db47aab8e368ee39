"""Control's mirror of who is online, indexed by channel (counts and command targets without a
scan of every loudspeaker): it must follow the core's session events exactly."""

from broadcaster.control.devices import Devices
from broadcaster.core import commands as c
from broadcaster.storage import KeySealer, Storage


def devices() -> Devices:
    d = Devices(Storage(":memory:", KeySealer(b"k" * 32)), lambda command: None, reactor=None, wall=lambda: 0.0)
    d.known = {n: c.Device(id=n, key=b"k" * 20, channel="a", zone="z") for n in ("s1", "s2", "s3")}
    return d


def event(kind: str, device: str, channel: str) -> c.SessionChanged:
    return c.SessionChanged(kind, device, channel, ("127.0.0.1", 9), 1.0)


def test_counts_follow_starts_moves_and_ends() -> None:
    d = devices()
    for name in ("s1", "s2", "s3"):
        d.session_changed(event("start", name, "a"))
    assert d.on_channels(["a"]) == 3 and d.on_channels(["b"]) == 0
    d.session_changed(event("start", "s2", "b"))  # a new subscription elsewhere, before the old one's end
    assert d.on_channels(["a"]) == 2 and d.on_channels(["b"]) == 1 and d.on_channels(["a", "b"]) == 3
    d.session_changed(event("end", "s2", "b"))
    d.session_changed(event("end", "s1", "a"))
    assert d.on_channels(["a", "b"]) == 1 and set(d.online) == {"s3"}
