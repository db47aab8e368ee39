"""ICY metadata (Shoutcast/Icecast): a title block every ``metaint`` bytes of audio.

A player that sends ``Icy-MetaData: 1`` is answered with ``icy-metaint: N``;
after every N bytes of audio comes one length byte L and L×16 bytes of
metadata (``StreamTitle='...';`` padded with NULs), or a single zero byte when
nothing changed. As Icecast does, the title is sent in the first block and
again only when it changes. Pure: bytes and titles in, bytes out.
"""

from __future__ import annotations

MAX_BLOCK = 255 * 16


def metadata_block(title: str) -> bytes:
    """The length byte and the padded ``StreamTitle`` of ``title`` (cut to fit one block).

    A quote would end the title early in most players' parsers, so it is given as a
    typographic one; NULs would end it too, so they go."""
    text = title.replace("\x00", "").replace("'", "\u2019").encode("utf-8")
    text = text[:MAX_BLOCK - len(b"StreamTitle='';")]
    text = text.decode("utf-8", "ignore").encode("utf-8")  # never a cut UTF-8 sequence
    body = b"StreamTitle='" + text + b"';"
    blocks = -(-len(body) // 16)
    return bytes((blocks,)) + body.ljust(blocks * 16, b"\x00")


class IcyInserter:
    """One listener's stream with metadata blocks inserted at its own byte positions."""

    def __init__(self, metaint: int) -> None:
        if metaint <= 0:
            raise ValueError("metaint must be positive")
        self.metaint = metaint
        self._until_block = metaint
        self._sent_title: str | None = None

    def insert(self, audio: bytes, title: str) -> bytes:
        out = bytearray()
        pos = 0
        while len(audio) - pos >= self._until_block:
            out += audio[pos:pos + self._until_block]
            pos += self._until_block
            self._until_block = self.metaint
            if title != self._sent_title:
                out += metadata_block(title)
                self._sent_title = title
            else:
                out += b"\x00"
        out += audio[pos:]
        self._until_block -= len(audio) - pos
        return bytes(out)
