"""Free disk space, and telling a full disk from other failures.

A full disk must not silence the radio or lose a record (storage/logs.py
queues rows until space returns), but new work that needs space (an upload,
a live session's recording) is refused before it starts, with a 507 that
says where space is short, rather than failing half-way. ``storage.min_free_bytes``
is the reserve kept for the database and its logs: uploads and recordings
stop when less than that would remain.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
SQLITE_FULL = 13


class DiskFull(Exception):
    """There is not room for this: ``where`` is short of space."""

    def __init__(self, where: Path | str, free: int | None, what: str) -> None:
        room = f"{free // (1024 * 1024)} MiB free" if free is not None else "full"
        super().__init__(f"{what}: the disk holding {where} is full ({room}); free space, then try again")
        self.where, self.free = str(where), free


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path``
    (the nearest existing parent, for a folder not made yet)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stat = os.statvfs(probe)
    return stat.f_bavail * stat.f_frsize


def require(path: Path, need: int, reserve: int, what: str) -> None:
    """Raise DiskFull unless ``need`` bytes fit with ``reserve`` left over."""
    free = free_bytes(path)
    if free < need + reserve:
        raise DiskFull(path, free, what)


def is_full(exc: BaseException) -> bool:
    """A write failed because the disk (or a quota, or a file-size limit) is full."""
    if isinstance(exc, DiskFull):
        return True
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == SQLITE_FULL or "disk is full" in str(exc)
    return False
