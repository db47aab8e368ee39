"""ICY metadata blocks: where they go, what they hold, and that the audio between them is intact."""

from __future__ import annotations

import pytest

from broadcaster.protocols.icy import MAX_BLOCK, IcyInserter, metadata_block


def split(stream: bytes, metaint: int) -> tuple[bytes, list[bytes]]:
    """A player's parse: metaint bytes of audio, a length byte, length×16 bytes of metadata."""
    audio, blocks, pos = bytearray(), [], 0
    while pos < len(stream):
        audio += stream[pos:pos + metaint]
        pos += metaint
        if pos >= len(stream):
            break
        size = stream[pos] * 16
        blocks.append(stream[pos + 1:pos + 1 + size])
        pos += 1 + size
    return bytes(audio), blocks


def test_blocks_at_every_metaint_bytes_whatever_the_chunking() -> None:
    audio = bytes(range(256)) * 40  # 10,240 bytes
    icy = IcyInserter(1000)
    out = b"".join(icy.insert(audio[i:i + 333], "Tin sáng") for i in range(0, len(audio), 333))
    heard, blocks = split(out, 1000)
    assert heard == audio
    assert len(blocks) == 10
    assert blocks[0].rstrip(b"\0") == "StreamTitle='Tin sáng';".encode()
    assert blocks[1:] == [b""] * 9, "the title again only when it changes, as Icecast does"


def test_a_new_title_goes_out_at_the_next_block() -> None:
    icy = IcyInserter(10)
    first = icy.insert(b"a" * 25, "one")
    second = icy.insert(b"b" * 10, "two")
    _, blocks = split(first + second, 10)
    assert [b.rstrip(b"\0") for b in blocks] == [b"StreamTitle='one';", b"", b"StreamTitle='two';"]


def test_quotes_nuls_and_long_titles_cannot_break_the_block() -> None:
    block = metadata_block("it's\x00 here")
    assert block[1:].rstrip(b"\0") == "StreamTitle='it\u2019s here';".encode()
    long = metadata_block("ư" * 5000)
    assert len(long) == 1 + long[0] * 16 <= 1 + MAX_BLOCK
    long[1:].rstrip(b"\0").decode("utf-8")  # never a cut character
    with pytest.raises(ValueError):
        IcyInserter(0)
