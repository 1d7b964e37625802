"""The server's TLS identity (section 5): its data directory, its key file, a
fingerprint that survives restarts, an operator's certificate."""

from __future__ import annotations

import logging
import stat
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ocm.server.identity import (
    CERT_FILE,
    KEY_FILE,
    IdentityError,
    default_data_dir,
    load_identity,
)
from ocm.wire.fingerprint import fingerprint, is_fingerprint
from tests.kit import running_server


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG is for Linux and the like")
def test_the_data_dir_honours_xdg_data_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_data_dir() == tmp_path / "data" / "ocm"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "ocm"


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG is for Linux and the like")
def test_the_first_start_makes_a_private_key_in_the_data_dir_and_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    first = load_identity()
    assert first.created and first.key_file == tmp_path / "ocm" / KEY_FILE
    assert is_fingerprint(first.fingerprint)
    assert stat.S_IMODE(first.key_file.stat().st_mode) == 0o600
    assert [p.name for p in (tmp_path / "ocm").iterdir()] == sorted([CERT_FILE, KEY_FILE])
    again = load_identity()
    assert not again.created and again.fingerprint == first.fingerprint


def test_a_reissued_certificate_for_the_same_key_keeps_the_fingerprint(tmp_path: Path) -> None:
    first = load_identity(tmp_path)
    (tmp_path / CERT_FILE).unlink()  # made again from the key
    again = load_identity(tmp_path)
    assert not again.created and again.fingerprint == first.fingerprint
    der = serialization.load_pem_private_key((tmp_path / KEY_FILE).read_bytes(), None)
    assert isinstance(der, ec.EllipticCurvePrivateKey)
    assert fingerprint(_der(tmp_path / CERT_FILE)) == first.fingerprint


def _der(path: Path) -> bytes:
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )


async def test_the_server_logs_its_key_at_every_start_and_the_new_one_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ocm.server")
    async with running_server(data_dir=tmp_path) as server:
        print_ = server.identity.fingerprint
    first = caplog.text
    assert f"created a new server key in {tmp_path}" in first
    assert f"server key {print_}" in first
    assert "TLS, plaintext clients allowed" in first
    caplog.clear()
    async with running_server(data_dir=tmp_path, allow_plaintext=False) as server:
        assert server.identity.fingerprint == print_  # stable across restarts
    assert "created a new server key" not in caplog.text
    assert f"server key {print_}" in caplog.text
    assert "TLS, plaintext refused" in caplog.text


def test_a_certificate_and_a_key_that_do_not_belong_together_are_one_line(
    tmp_path: Path,
) -> None:
    one, other = load_identity(tmp_path / "one"), load_identity(tmp_path / "other")
    with pytest.raises(IdentityError, match="is not the key of the certificate") as caught:
        load_identity(cert_file=one.cert_file, key_file=other.key_file)
    assert "\n" not in str(caught.value)
    with pytest.raises(IdentityError, match="cannot read"):
        load_identity(cert_file=tmp_path / "missing.crt", key_file=one.key_file)
    with pytest.raises(IdentityError, match="go together"):
        load_identity(cert_file=one.cert_file)
    assert load_identity(cert_file=one.cert_file, key_file=one.key_file).fingerprint == (
        one.fingerprint
    )


@pytest.mark.parametrize("garbage", [b"not a key\n", b"", b"-----BEGIN PRIVATE KEY-----\nAA\n"])
def test_a_corrupt_key_in_the_data_dir_is_one_line_not_a_traceback(
    tmp_path: Path, garbage: bytes
) -> None:
    """A key file that is not a key (a disk error, a wrong copy), with no certificate
    yet: the server cannot make one, and says what to do in one line."""
    (tmp_path / "server.key").write_bytes(garbage)
    with pytest.raises(IdentityError, match="cannot use the server key") as caught:
        load_identity(tmp_path)
    assert "\n" not in str(caught.value) and "move it away" in str(caught.value)
