"""One server per database. The serving process holds an advisory lock on a file beside the
database for as long as it runs, so a second ``broadcaster serve`` on the same storage, or a
``restore`` over it, is refused naming the process that holds it, instead of two writers sharing
one log or a database replaced under a running server. The lock goes with the process, however it
ends (kill -9 included): nothing stale is left to clear by hand.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class Held(Exception):
    """Another process serves this database."""


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


def hold(database: Path) -> IO[str]:
    """Take the lock for this process's life (keep the returned file open). Raises Held."""
    path = lock_path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="ascii")  # noqa: SIM115 (held until the process ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise Held(f"another server (pid {holder}) is running on {database}; stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def holder(database: Path) -> str | None:
    """The pid of the server running on this database, or None if none is."""
    path = lock_path(database)
    if not path.exists():
        return None
    with open(path, encoding="ascii") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "?"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
