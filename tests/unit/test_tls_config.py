"""``server.tls`` in the configuration: a bad certificate or key is a ConfigError naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broadcaster.config import ConfigError, load_config
from tests.certs import self_signed


def config_with(tmp_path: Path, tls: object) -> Path:
    path = tmp_path / "broadcaster.yaml"
    path.write_text(yaml.safe_dump({"server": {"host": "127.0.0.1", "tls": tls}}), encoding="utf-8")
    return path


def test_a_good_pair_loads_relative_to_the_file(tmp_path: Path) -> None:
    self_signed(tmp_path)
    config = load_config(config_with(tmp_path, {"certificate": "server.crt", "key": "server.key"}))
    assert config.server.tls is not None and config.server.tls.certificate == (tmp_path / "server.crt").resolve()
    assert load_config(config_with(tmp_path, None)).server.tls is None
    redirecting = load_config(config_with(tmp_path, {"certificate": "server.crt", "key": "server.key",
                                                     "redirect_port": 80}))
    assert redirecting.server.tls is not None and redirecting.server.tls.redirect_port == 80


def test_bad_files_name_the_key(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    other_cert, other_key = self_signed(tmp_path, "other")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    cases = [({"certificate": "missing.crt", "key": str(key)}, "server.tls.certificate", "cannot read"),
             ({"certificate": "junk.pem", "key": str(key)}, "server.tls.certificate", "no PEM certificate"),
             ({"certificate": str(cert), "key": "missing.key"}, "server.tls.key", "cannot read"),
             ({"certificate": str(cert), "key": "junk.pem"}, "server.tls.key", "no usable PEM private key"),
             ({"certificate": str(cert), "key": str(encrypted)}, "server.tls.key", "encrypted"),
             ({"certificate": str(cert), "key": str(other_key)}, "server.tls.key", "is not the key of"),
             ({"certificate": str(cert)}, "server.tls.key", "required"),
             ({"certificate": str(cert), "key": str(key), "ciphers": "x"}, "server.tls.ciphers", "unknown key"),
             ({"certificate": str(cert), "key": str(key), "redirect_port": 70000}, "server.tls.redirect_port",
              "from 0 to 65535"),
             ({"certificate": str(cert), "key": str(key), "redirect_port": "80"}, "server.tls.redirect_port", ""),
             ("yes", "server.tls", "expected a mapping")]
    for tls, where, expected in cases:
        path = config_with(tmp_path, tls)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.file == str(path) and info.value.key == where, (tls, info.value)
        assert expected in info.value.message, (tls, info.value)
    assert other_cert.exists()
