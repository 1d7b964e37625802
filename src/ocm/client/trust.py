"""Whom the client trusts (section 5 of docs/protocol.md): the TLS policy of its
connections and the servers it has met, trust on first use as SSH does it.

:class:`Security` is the policy a caller gives (:class:`~ocm.client.exchange.Channel`,
``ChatClient``, ``list_rooms``): plaintext (``insecure``), one key only
(``fingerprint``), where the list of known servers is, which certificate authorities
to use. The list is a text file, ``known_servers`` in :func:`default_config_dir`, one
line per server: ``HOST:PORT SHA256:...`` (the key it showed on first contact, or the
one the user accepted) or ``HOST:PORT ca`` (its certificate was verified by a
certificate authority, and must go on being so).

:func:`expect` reads what a server must show, :func:`client_context` makes the TLS
context for it, and :func:`accept` checks what it showed, remembers it, or raises
:class:`~ocm.errors.ServerKeyChanged`. The connecting itself is
:mod:`ocm.client.exchange`'s. Nothing here prints: a first contact is reported through
``Security.on_first_contact``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ocm.client.address import format_server_address
from ocm.errors import ErrorCode, OCMError, RemoteProtocolError, ServerKeyChanged
from ocm.wire.fingerprint import fingerprint, is_fingerprint

__all__ = [
    "CA",
    "KNOWN_SERVERS",
    "Expected",
    "Security",
    "accept",
    "client_context",
    "default_config_dir",
    "expect",
    "read_known_servers",
    "remember",
]

KNOWN_SERVERS = "known_servers"
# The value of a known_servers line for a server whose certificate a CA verified.
CA = "ca"


def default_config_dir() -> Path:
    """``$XDG_CONFIG_HOME/ocm`` (else ``~/.config/ocm``) on Linux and other POSIX
    systems, ``~/Library/Application Support/ocm`` on macOS, ``%APPDATA%\\ocm`` on
    Windows."""
    if sys.platform == "win32":
        base = os.environ.get("APPDATA")
        return Path(base) / "ocm" if base else Path.home() / "AppData" / "Roaming" / "ocm"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "ocm"
    base = os.environ.get("XDG_CONFIG_HOME")
    if base and os.path.isabs(base):  # the XDG spec: a relative path is ignored
        return Path(base) / "ocm"
    return Path.home() / ".config" / "ocm"


@dataclass(frozen=True)
class Security:
    """How a client secures its connections to a server.

    ``insecure``: plain TCP, exactly as version 1 (servers started with
    ``--allow-plaintext`` only). Otherwise TLS, and the server must show: the key
    ``fingerprint`` when given (which is then remembered, replacing any other: this is
    how a changed key is accepted); else what ``known_servers`` (None: the file in
    :func:`default_config_dir`) says of it; else, on first contact, a certificate that
    verifies against ``cafile`` (None: the system's authorities, or ``$SSL_CERT_FILE``),
    remembered as ``ca``, or failing that any key, remembered, and reported to
    ``on_first_contact(server, fingerprint)``.
    """

    insecure: bool = False
    fingerprint: str | None = None
    known_servers: Path | None = None
    cafile: str | None = None
    on_first_contact: Callable[[str, str], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.fingerprint is not None and not is_fingerprint(self.fingerprint):
            raise ValueError(
                f"not a key fingerprint: {self.fingerprint!r} (SHA256: and 43 base64 characters)"
            )

    @property
    def path(self) -> Path:
        """The known_servers file in use."""
        if self.known_servers is not None:
            return self.known_servers
        return default_config_dir() / KNOWN_SERVERS


@dataclass(frozen=True, slots=True)
class Expected:
    """What the server at ``where`` must show, and why."""

    where: str  # "host:port", "[v6]:port": its known_servers name
    fingerprint: str | None  # exactly this key; None: a certificate that verifies
    given: bool  # the fingerprint is Security.fingerprint (not a known_servers line)
    line: int | None  # the known_servers line it comes from; None: first contact

    @property
    def first_contact(self) -> bool:
        return self.line is None and not self.given

    @property
    def verify(self) -> bool:
        """Whether the handshake verifies the certificate (CA and host name)."""
        return self.fingerprint is None


def read_known_servers(path: Path) -> dict[str, tuple[str, int]]:
    """Server name -> (its value, its line number), from the first line that names it.
    A missing file is an empty list; blank lines and ``#`` comments are skipped. The
    value is the rest of the line, whatever it is: :func:`expect` refuses one that is
    not a key or ``ca``, rather than take the server for unknown."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise OCMError(None, f"cannot read the known servers in {path}: {error}") from None
    known: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if words and not words[0].startswith("#"):
            known.setdefault(words[0], (" ".join(words[1:]), number))
    return known


def expect(security: Security, address: tuple[str, int]) -> Expected:
    """What the server at ``address`` must show under ``security``."""
    where = format_server_address(address)
    if security.fingerprint is not None:
        return Expected(where, security.fingerprint, True, None)
    value, line = read_known_servers(security.path).get(where, (None, None))
    if value is None:
        return Expected(where, None, False, None)  # first contact
    if value != CA and not is_fingerprint(value):
        # A damaged or hand-edited line: taking it for a first contact would trust
        # whatever key answers now, and write over the line that said otherwise.
        raise OCMError(
            None,
            f"line {line} of {security.path} names server {where} with {value!r}, which is"
            f" neither a key (SHA256:...) nor {CA!r}: correct or delete that line",
        )
    return Expected(where, None if value == CA else value, False, line)


def client_context(security: Security, *, verify: bool) -> ssl.SSLContext:
    """TLS 1.3 at least; with ``verify``, the certificate must verify against the
    authorities (``cafile``, else the system's) for the host name, else anything goes
    (the key is checked afterwards, by :func:`accept`)."""
    if verify:
        context = ssl.create_default_context(cafile=security.cafile)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def accept(
    security: Security, expected: Expected, certificate_der: bytes, *, verified: bool
) -> str:
    """Check the certificate the server showed against ``expected``; remember it when
    that is what the policy asks; return its fingerprint. ServerKeyChanged if it is not
    the key expected (or, for a server known as ``ca``, it did not verify);
    RemoteProtocolError for a certificate that cannot be read (OpenSSL accepts more,
    unverified, than cryptography's parser reads)."""
    try:
        shown = fingerprint(certificate_der)
    except ValueError as error:
        raise RemoteProtocolError(
            ErrorCode.BAD_REQUEST,
            f"server {expected.where} showed a certificate that cannot be read ({error})",
        ) from None
    where = expected.where
    if expected.fingerprint is not None and shown != expected.fingerprint:
        raise _changed(security, expected, shown)
    if expected.line is not None and expected.fingerprint is None and not verified:
        raise _changed(security, expected, shown)  # known as "ca", and now it is not
    if expected.given:
        remember(security.path, where, shown)
    elif expected.first_contact:
        remember(security.path, where, CA if verified else shown)
        if not verified and security.on_first_contact is not None:
            security.on_first_contact(where, shown)
    return shown


def _changed(security: Security, expected: Expected, shown: str) -> ServerKeyChanged:
    where, old = expected.where, expected.fingerprint
    accept_it = f"run again with --fingerprint {shown} to accept it"
    if expected.given:
        message = (
            f"server {where} has the key {shown}, not {old} as --fingerprint says: the "
            f"connection was closed before anything was sent. Check the key with the "
            f"server's operator (the server logs it when it starts); if {shown} is "
            f"right, {accept_it}."
        )
        return ServerKeyChanged(message, where=where, old=old, new=shown)
    known = f"{security.path}, line {expected.line}"
    if old is None:
        before = f"its certificate was verified by a certificate authority ({known})"
        now = f"now its certificate does not verify, and its key is {shown}"
    else:
        before = f"its key was {old} ({known})"
        now = f"now it is {shown}"
    message = (
        f"the key of server {where} has changed: {before}, {now}. The connection was "
        f"closed before anything was sent. Someone may be intercepting it, or the server "
        f"got a new key (a new data directory, a reinstall): ask its operator, who sees "
        f"the key in the server's log. If the new key is right, {accept_it}."
    )
    return ServerKeyChanged(message, where=where, old=old, new=shown)


def remember(path: Path, where: str, value: str) -> None:
    """Set ``where``'s line in the known_servers file at ``path`` to ``value``: the
    line replaced where there was one, else added at the end. Written to a temporary
    file first and renamed over the old one, so a reader never sees half a file."""
    try:
        old = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        old = []
    except (OSError, UnicodeDecodeError) as error:
        raise OCMError(None, f"cannot read the known servers in {path}: {error}") from None
    entry = f"{where} {value}"
    lines: list[str] = []
    for line in old:
        if line.split()[:1] != [where]:
            lines.append(line)
        elif entry not in lines:
            lines.append(entry)  # in the place of the first line for it; no other kept
    if entry not in lines:
        lines.append(entry)
    if lines == old:
        return  # known already, as it is
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        reason = error.strerror or str(error)
        raise OCMError(None, f"cannot remember the server's key in {path}: {reason}") from None
