"""Secrets at rest: device keys sealed under the server secret, API tokens and
passwords kept only as hashes.

Device keys are needed in clear to check HMACs, so they are stored encrypted
(AES-GCM) under a server secret kept in a separate file. Password checks are
slow on purpose (scrypt): call them from a worker thread, never the reactor.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broadcaster.storage.db import StorageError


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        hash_password(password)  # same cost as a real check
        return False
    _, salt, _ = stored.split("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)


@functools.cache
def dummy_hash() -> str:
    """What an unknown user's password is checked against (the same cost as a real check);
    made on first use, not at import: scrypt costs tens of milliseconds of every start."""
    return hash_password("no such user")


class KeySealer:
    """AES-GCM under the server secret; the device id is the associated data,
    so a sealed key copied onto another device's row does not open."""

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(secret)

    @classmethod
    def from_file(cls, path: Path) -> KeySealer:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
        try:
            secret = bytes.fromhex(path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise StorageError(f"{path}: cannot read the server secret (64 hex characters): {exc}") from exc
        if len(secret) != 32:
            raise StorageError(f"{path}: the server secret must be 64 hex characters")
        return cls(secret)

    def seal(self, device_id: str, key: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, key, device_id.encode("utf-8"))

    def open(self, device_id: str, sealed: bytes) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], device_id.encode("utf-8"))
