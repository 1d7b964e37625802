"""The server's TLS identity (section 5 of docs/protocol.md): its key and certificate,
and the :class:`ssl.SSLContext` that STARTTLS upgrades connections with.

An operator's own certificate (``--cert``/``--key``) is loaded as it is. Otherwise the
server keeps a key of its own in its data directory (:func:`default_data_dir`, or
``--data-dir``): ``server.key`` (ECDSA P-256, PEM, mode 0600) and ``server.crt`` (a
self-signed certificate for it), made on the first start. Clients trust that key on
first use and remember its fingerprint (:mod:`ocm.wire.fingerprint`), so it must stay
the same across restarts: it is only ever created when absent, and created atomically
(written to a temporary file, then linked into place, which fails if another server
process made one meanwhile: theirs is used).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ocm.wire.fingerprint import fingerprint

__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "Identity",
    "IdentityError",
    "default_data_dir",
    "load_identity",
    "server_context",
]

KEY_FILE = "server.key"
CERT_FILE = "server.crt"
# A self-signed certificate is trusted for its key, not its dates: clients pin the key.
# Long enough that it never expires in a server's life; X.509's GeneralizedTime still
# holds it.
SELF_SIGNED_DAYS = 100 * 365
COMMON_NAME = "OCM server"


class IdentityError(Exception):
    """The key or certificate cannot be used; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Where the server's certificate and key are, and the key's fingerprint."""

    cert_file: Path
    key_file: Path
    fingerprint: str
    created: bool = False  # made on this start (the first in its data directory)


def default_data_dir() -> Path:
    """Where the server keeps its key: ``$XDG_DATA_HOME/ocm`` (else
    ``~/.local/share/ocm``) on Linux and other POSIX systems, ``~/Library/Application
    Support/ocm`` on macOS, ``%LOCALAPPDATA%\\ocm`` on Windows."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return Path(base) / "ocm" if base else Path.home() / "AppData" / "Local" / "ocm"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "ocm"
    base = os.environ.get("XDG_DATA_HOME")
    # The XDG spec: a relative path is invalid, and ignored.
    if base and os.path.isabs(base):
        return Path(base) / "ocm"
    return Path.home() / ".local" / "share" / "ocm"


def load_identity(
    data_dir: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> Identity:
    """The operator's certificate and key when given, else the data directory's (made on
    the first start). IdentityError, one line, when they cannot be used."""
    if (cert_file is None) != (key_file is None):
        raise IdentityError("--cert and --key go together: give both, or neither")
    if cert_file is not None and key_file is not None:
        return _check_pair(cert_file, key_file, created=False)
    where = data_dir if data_dir is not None else default_data_dir()
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)  # the key is in it
        key_path, cert_path = where / KEY_FILE, where / CERT_FILE
        created = False
        if not key_path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            created = _create_exclusive(key_path, pem, 0o600)
        if not cert_path.exists():
            key = _read_key(key_path)
            _create_exclusive(cert_path, _self_signed(key), 0o644)
    except OSError as error:
        raise IdentityError(f"cannot keep the server key in {where}: {_reason(error)}") from None
    except (ValueError, TypeError) as error:  # a key file that is not a key
        raise IdentityError(
            f"cannot use the server key {where / KEY_FILE}: {_reason(error)} (move it away,"
            " and the server makes a new key: clients will see it as a changed key)"
        ) from None
    return _check_pair(cert_path, key_path, created=created)


def server_context(identity: Identity) -> ssl.SSLContext:
    """The context STARTTLS upgrades connections with: TLS 1.3 only."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(identity.cert_file, identity.key_file)
    except (OSError, ssl.SSLError) as error:
        raise IdentityError(
            f"cannot use {identity.cert_file} with {identity.key_file}: {_reason(error)}"
        ) from None
    return context


def _create_exclusive(path: Path, data: bytes, mode: int) -> bool:
    """Write ``path`` whole or not at all; False if another process made it first.

    The bytes go to a new temporary file (O_EXCL, with its final mode from the start:
    the key is never readable by others, not even for a moment), which is then linked
    to ``path``: a link fails if ``path`` exists, where a rename would replace it.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    descriptor = os.open(temporary, flags, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{path} is not the ECDSA key OCM makes")
    return key


def _self_signed(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def _check_pair(cert_file: Path, key_file: Path, *, created: bool) -> Identity:
    """The identity of a certificate and key that belong together, or IdentityError."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except OSError as error:
        raise IdentityError(f"cannot read {error.filename}: {_reason(error)}") from None
    except (ValueError, TypeError) as error:
        raise IdentityError(
            f"cannot load {cert_file} and {key_file} (PEM, key without a passphrase): {error}"
        ) from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = key.public_key().public_bytes(serialization.Encoding.DER, spki)
    theirs = certificate.public_key().public_bytes(serialization.Encoding.DER, spki)
    if mine != theirs:
        raise IdentityError(f"{key_file} is not the key of the certificate {cert_file}")
    der = certificate.public_bytes(serialization.Encoding.DER)
    return Identity(cert_file, key_file, fingerprint(der), created)


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return " ".join(str(error).split()) or type(error).__name__
