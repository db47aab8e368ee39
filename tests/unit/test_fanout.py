"""Both fan-outs deliver the same bytes to every target on real loopback sockets."""

import socket

import pytest

from broadcaster.core.fanout import LoopFanout, MmsgFanout, make_fanout


def receivers(n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        socks.append(s)
    return socks


@pytest.fixture
def sender() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    yield s
    s.close()


@pytest.mark.parametrize("kind", [LoopFanout, MmsgFanout])
def test_every_target_gets_identical_bytes(kind: type, sender: socket.socket) -> None:
    targets = receivers(1100)  # more than one sendmmsg batch of 1024
    fanout = kind(sender)
    fanout.set_targets([s.getsockname() for s in targets])
    assert len(fanout) == 1100
    for packet in (b"\x80\x6f" + bytes(range(100)), b"\x80\x6f" + b"second"):
        assert fanout.send(packet) == (1100, 0)
        for s in targets:
            data, source = s.recvfrom(4096)
            assert data == packet and source == sender.getsockname()
    for s in targets:
        s.close()


@pytest.mark.parametrize("kind", [LoopFanout, MmsgFanout])
def test_refused_address_is_counted_and_the_rest_still_receive(kind: type, sender: socket.socket) -> None:
    good = receivers(3)
    fanout = kind(sender)
    # Port 0 is not a valid destination: the kernel refuses that one message.
    fanout.set_targets([good[0].getsockname(), ("127.0.0.1", 0), good[1].getsockname(), good[2].getsockname()])
    assert fanout.send(b"packet") == (3, 1)
    assert [s.recv(100) for s in good] == [b"packet"] * 3


def test_retargeting_replaces_the_list(sender: socket.socket) -> None:
    a, b = receivers(2)
    fanout = make_fanout(sender)
    assert isinstance(fanout, MmsgFanout)
    fanout.set_targets([a.getsockname()])
    fanout.send(b"one")
    fanout.set_targets([b.getsockname()])
    fanout.send(b"two")
    fanout.set_targets([])
    assert fanout.send(b"none") == (0, 0)
    assert a.recv(10) == b"one" and b.recv(10) == b"two"
    a.settimeout(0.1)
    with pytest.raises(TimeoutError):
        a.recv(10)


def test_ipv6_socket_falls_back_to_the_loop() -> None:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        assert isinstance(make_fanout(s), LoopFanout)
    finally:
        s.close()
