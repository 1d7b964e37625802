"""Section 5 from the client's side: trust on first use, a changed key, a pinned
fingerprint, a certificate authority, and a server that does not know STARTTLS. Real
servers on loopback; each test has a known_servers file of its own."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ocm.client import ChatClient, Security, list_rooms
from ocm.client.delivery import REFUSED_HERE, DeliveryState
from ocm.client.trust import CA, accept, expect, read_known_servers, remember
from ocm.errors import (
    ConnectionLost,
    ErrorCode,
    OCMError,
    RemoteProtocolError,
    ServerError,
    ServerKeyChanged,
)
from ocm.server.identity import load_identity
from ocm.wire.tcrp import encode_error_ack
from tests.kit import LOOPBACK, RawStream, running_server, server_of


class FirstContacts:
    """The ``on_first_contact`` hook, recording its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, where: str, fingerprint: str) -> None:
        self.calls.append((where, fingerprint))


async def test_first_contact_remembers_the_key_and_reports_it_once(tmp_path: Path) -> None:
    known = tmp_path / "known_servers"
    told = FirstContacts()
    security = Security(known_servers=known, on_first_contact=told)
    async with running_server(data_dir=tmp_path / "server") as server:
        where = f"{LOOPBACK}:{server.tcp_port}"
        key = server.identity.fingerprint
        assert await list_rooms(server_of(server), security=security) == ()
        assert told.calls == [(where, key)]
        assert known.read_text(encoding="utf-8") == f"{where} {key}\n"
        assert await list_rooms(server_of(server), security=security) == ()
        assert told.calls == [(where, key)]  # known now: nothing more to say


async def test_a_changed_key_is_refused_with_both_keys_the_file_and_the_way_to_accept(
    tmp_path: Path,
) -> None:
    known = tmp_path / "known_servers"
    old = load_identity(tmp_path / "old").fingerprint
    async with running_server(data_dir=tmp_path / "new") as server:
        where = f"{LOOPBACK}:{server.tcp_port}"
        new = server.identity.fingerprint
        known.write_text(f"other.example:9001 {new}\n{where} {old}\n", encoding="utf-8")
        security = Security(known_servers=known)
        with pytest.raises(ServerKeyChanged) as caught:
            await ChatClient.create(server_of(server), "lobby", "alice", security=security)
        error = caught.value
        assert (error.where, error.old, error.new) == (where, old, new)
        assert old in error.message and new in error.message
        assert f"{known}, line 2" in error.message
        assert f"run again with --fingerprint {new} to accept it" in error.message
        assert "\n" not in error.message
        assert not server.registry.rooms  # nothing was sent
        assert read_known_servers(known)[where] == (old, 2)  # and nothing forgotten


async def test_the_right_fingerprint_is_accepted_and_remembered_a_wrong_one_refused(
    tmp_path: Path,
) -> None:
    known = tmp_path / "known_servers"
    old = load_identity(tmp_path / "old").fingerprint
    async with running_server(data_dir=tmp_path / "new") as server:
        where = f"{LOOPBACK}:{server.tcp_port}"
        new = server.identity.fingerprint
        known.write_text(f"{where} {old}\n", encoding="utf-8")
        with pytest.raises(ServerKeyChanged, match=r"not .* as --fingerprint says"):
            wrong = Security(fingerprint=old, known_servers=known)
            await list_rooms(server_of(server), security=wrong)
        assert known.read_text(encoding="utf-8") == f"{where} {old}\n"
        # The user checked the new key with the operator, and accepts it.
        await list_rooms(server_of(server), security=Security(fingerprint=new, known_servers=known))
        assert known.read_text(encoding="utf-8") == f"{where} {new}\n"
        await list_rooms(server_of(server), security=Security(known_servers=known))


def _ca_and_server_cert(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A test CA, and a certificate it signs for IP 127.0.0.1 and DNS localhost: the
    CA's file, the server's certificate and key."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OCM test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(certificate.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


async def test_a_certificate_a_ca_vouches_for_is_verified_and_remembered_as_ca(
    tmp_path: Path,
) -> None:
    """And later a self-signed server at the same address is refused."""
    ca_file, cert_file, key_file = _ca_and_server_cert(tmp_path)
    known = tmp_path / "known_servers"
    told = FirstContacts()
    security = Security(known_servers=known, cafile=str(ca_file), on_first_contact=told)
    async with running_server(cert_file=cert_file, key_file=key_file) as server:
        where = f"{LOOPBACK}:{server.tcp_port}"
        for host in (LOOPBACK, "localhost"):  # the IP and the name: both in the certificate
            assert await list_rooms((host, server.tcp_port), security=security) == ()
        assert read_known_servers(known)[where] == (CA, 1)
        assert told.calls == []  # nothing to tell: an authority vouched for it
        async with await ChatClient.create(server_of(server), "l", "alice", security=security):
            pass
    async with running_server(data_dir=tmp_path / "self-signed") as impostor:
        # The same address as far as known_servers goes.
        remember(known, f"{LOOPBACK}:{impostor.tcp_port}", CA)
        with pytest.raises(ServerKeyChanged) as caught:
            await list_rooms(server_of(impostor), security=security)
        message = caught.value.message
        assert "verified by a certificate authority" in message
        assert "does not verify" in message
        assert f"--fingerprint {impostor.identity.fingerprint} to accept it" in message


async def test_a_certificate_for_another_name_falls_back_to_trust_on_first_use(
    tmp_path: Path,
) -> None:
    """A CA-signed certificate that does not name the host is no CA-verified server:
    its key is remembered as on first contact, and reported."""
    ca_file, cert_file, key_file = _ca_and_server_cert(tmp_path)
    told = FirstContacts()
    known = tmp_path / "known_servers"
    security = Security(known_servers=known, cafile=str(ca_file), on_first_contact=told)
    async with running_server(cert_file=cert_file, key_file=key_file, host="127.0.0.3") as server:
        await list_rooms(("127.0.0.3", server.tcp_port), security=security)
        assert told.calls == [(f"127.0.0.3:{server.tcp_port}", server.identity.fingerprint)]


async def test_a_server_without_starttls_is_a_clear_error() -> None:
    """A version 1 server answers operation 7 with unknown_operation, and closes."""

    async def old_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await RawStream(reader).message()  # cut raw: as if 7 were unknown
        writer.write(
            encode_error_ack(request[1], "", ErrorCode.UNKNOWN_OPERATION, "unknown operation 7")
        )
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(old_server, LOOPBACK, 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectionLost) as caught:
            await list_rooms((LOOPBACK, port))
        message = caught.value.message
        assert "does not offer encryption" in message and "--insecure" in message
    finally:
        listener.close()


async def test_insecure_is_plaintext_which_a_tls_only_server_refuses(tmp_path: Path) -> None:
    insecure = Security(insecure=True, known_servers=tmp_path / "known_servers")
    async with running_server(allow_plaintext=False) as server:
        with pytest.raises(ServerError) as caught:
            await list_rooms(server_of(server), security=insecure)
        assert caught.value.code is ErrorCode.ENCRYPTION_REQUIRED
    async with running_server(allow_plaintext=True) as server:
        assert await list_rooms(server_of(server), security=insecure) == ()
        chat = await ChatClient.create(server_of(server), "lobby", "alice", security=insecure)
        async with chat:
            assert not chat.encrypted
    assert not (tmp_path / "known_servers").exists()


async def test_a_fingerprint_must_look_like_one_and_security_be_a_security() -> None:
    with pytest.raises(ValueError, match="not a key fingerprint"):
        Security(fingerprint="SHA256:short")
    with pytest.raises(TypeError, match="security must be a Security"):
        # Checked before anything is sent: nothing listens on port 9.
        await ChatClient.join((LOOPBACK, 9), "lobby", "bob", security=True)  # type: ignore[arg-type]


def test_remember_replaces_the_line_of_a_server_and_keeps_the_rest(tmp_path: Path) -> None:
    known = tmp_path / "deep" / "known_servers"
    remember(known, "a:1", CA)
    remember(known, "[::1]:9001", "SHA256:" + "A" * 43)
    remember(known, "a:1", "SHA256:" + "B" * 43)
    assert (
        known.read_text(encoding="utf-8")
        == f"a:1 SHA256:{'B' * 43}\n[::1]:9001 SHA256:{'A' * 43}\n"
    )


@pytest.mark.parametrize(
    "value", ["SHA256:", "sha256:abc", "trust-me", "", "SHA256:{key} # office server"]
)
async def test_a_damaged_known_servers_line_is_refused_not_rewritten(
    tmp_path: Path, value: str
) -> None:
    """Taking a line that cannot be read for a first contact would trust whatever key
    answers, and write over the line that said otherwise."""
    known = tmp_path / "known_servers"
    async with running_server(data_dir=tmp_path / "server") as server:
        where = f"{LOOPBACK}:{server.tcp_port}"
        value = value.format(key=server.identity.fingerprint.removeprefix("SHA256:"))
        known.write_text(f"{where} {value}\n", encoding="utf-8")
        with pytest.raises(OCMError, match=f"line 1 of {known}") as caught:
            await list_rooms(server_of(server), security=Security(known_servers=known))
        assert "correct or delete that line" in caught.value.message
        assert known.read_text(encoding="utf-8") == f"{where} {value}\n"  # untouched


def test_a_certificate_that_cannot_be_read_is_a_protocol_error(tmp_path: Path) -> None:
    """OpenSSL, unverified, takes certificates cryptography's parser does not read."""
    security = Security(known_servers=tmp_path / "known_servers")
    expected = expect(security, (LOOPBACK, 9001))
    with pytest.raises(RemoteProtocolError, match="cannot be read"):
        accept(security, expected, b"\x30\x03\x02\x01\x00", verified=False)
    assert not (tmp_path / "known_servers").exists()  # nothing remembered


async def test_a_key_that_changes_mid_chat_ends_it_with_the_key_change_said(
    tmp_path: Path,
) -> None:
    """A recovery (section 4) reconnects over TLS: if another key answers there, the
    chat ends saying so, not that the server stopped answering."""
    known = tmp_path / "known_servers"
    security = Security(known_servers=known)
    async with running_server(data_dir=tmp_path / "server") as server:
        chat = await ChatClient.create(server_of(server), "lobby", "alice", security=security)
        try:
            where = f"{LOOPBACK}:{server.tcp_port}"
            other = load_identity(tmp_path / "other").fingerprint  # as if it were the key
            known.write_text(f"{where} {other}\n", encoding="utf-8")
            state = chat._state
            assert isinstance(state, DeliveryState)
            await chat._recover(state, REFUSED_HERE)
            closed = chat.closed
            assert closed is not None and closed.reason.startswith(
                f"the key of server {where} has changed"
            )
            assert other in closed.reason and server.identity.fingerprint in closed.reason
        finally:
            await chat.close()
