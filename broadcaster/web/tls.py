"""HTTPS on the HTTP port (``server.tls``): the certificate chain and key, checked once, and the port's TLS.

Browsers give the microphone (going live from the console) only to a secure
context, so a server reached by address on a commune network serves TLS
itself; behind a reverse proxy that terminates TLS it does not need to
(docs/webcast.md). Everything on the port goes over it: listeners, the API
and console, Icecast PUT and webcast ``wss://``.

The files are read and checked when the configuration is loaded
(config.py turns a ``TlsError`` into a ConfigError naming the file and key):
a missing or unreadable file, a certificate file without a certificate, a
key that is not a PEM private key (or is encrypted), a key that does not
belong to the certificate. TLS 1.2 is the minimum; the ciphers are Twisted's
defaults (forward secrecy and AEAD first, no RC4, 3DES or export suites).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from twisted.protocols.tls import TLSMemoryBIOFactory


class TlsError(ValueError):
    """A problem with ``server.tls``'s ``field`` (certificate or key)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


@dataclass(frozen=True)
class TlsMaterial:
    chain: tuple[x509.Certificate, ...]  # the server's certificate first, then its intermediates
    key: PrivateKeyTypes

    @property
    def expires(self) -> datetime.datetime:
        return self.chain[0].not_valid_after_utc


def _read(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(field, f"cannot read {path}: {exc.strerror or exc}") from None


def _public(value: Any) -> bytes:
    return bytes(value.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def load_material(certificate: Path, key: Path) -> TlsMaterial:
    """The chain and key from PEM files, or TlsError saying which is wrong and how."""
    pem = _read(certificate, "certificate")
    try:
        chain = tuple(x509.load_pem_x509_certificates(pem))
    except ValueError:
        raise TlsError("certificate", f"{certificate} holds no PEM certificate (-----BEGIN CERTIFICATE-----)") \
            from None
    data = _read(key, "key")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TlsError("key", f"{key} is encrypted: give the key without a passphrase "
                       "(openssl pkey -in KEY -out PLAIN), readable only by the server's user") from None
    except Exception as exc:  # cryptography raises ValueError or UnsupportedAlgorithm
        raise TlsError("key", f"{key} holds no usable PEM private key: {exc}") from None
    if _public(private.public_key()) != _public(chain[0].public_key()):
        raise TlsError("key", f"{key} is not the key of the certificate in {certificate} "
                       f"({chain[0].subject.rfc4514_string()})")
    return TlsMaterial(chain, private)


def server_options(material: TlsMaterial) -> Any:
    """Twisted's TLS context for the port: the chain, the key, TLS 1.2 at least."""
    from OpenSSL import crypto
    from twisted.internet import ssl

    return ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(material.key),  # type: ignore[arg-type]
        certificate=crypto.X509.from_cryptography(material.chain[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in material.chain[1:]],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2)


class TlsPortFactory(TLSMemoryBIOFactory):
    """TLS around the HTTP port's factory; a connection the port refuses (over its per-address cap)
    is closed before any handshake, as it is without TLS."""

    def __init__(self, options: Any, wrapped: Any) -> None:
        super().__init__(options, False, wrapped)

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        return self.protocol(self, inner)
