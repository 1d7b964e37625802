"""Server addresses as people write them, and connection errors written the same way.

An unbracketed IPv6 address whose last group could be a port (``::1:9312``) is refused
with the two ways to write what was meant; one whose last group cannot be a port
(``::1``, ``fe80::1``, ``fe80::abcd``, eight groups) is the host, on the default port.
A server that cannot be reached is reported in one line, with the address in the form
people write, never a Python tuple.
"""

from __future__ import annotations

import socket

import pytest

from ocm.client import list_rooms, parse_server_address
from ocm.client.exchange import describe_error
from ocm.errors import ConnectionLost
from tests.kit import LOOPBACK


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("::1", ("::1", 9001)),
        ("::", ("::", 9001)),
        ("fe80::1", ("fe80::1", 9001)),  # "1" follows "::": no one connects to "fe80::"
        ("2001:db8::1", ("2001:db8::1", 9001)),
        ("fe80::abcd", ("fe80::abcd", 9001)),  # not a number: not a port
        ("fe80::1%eth0", ("fe80::1%eth0", 9001)),
        ("2001:db8:0:0:0:0:0:1", ("2001:db8:0:0:0:0:0:1", 9001)),  # eight groups
        ("::ffff:127.0.0.1", ("::ffff:127.0.0.1", 9001)),
        ("[::1:9312]", ("::1:9312", 9001)),
        ("[::1]:9312", ("::1", 9312)),
    ],
)
def test_a_bare_ipv6_address_is_the_host_when_it_cannot_end_in_a_port(
    text: str, expected: tuple[str, int]
) -> None:
    assert parse_server_address(text) == expected


@pytest.mark.parametrize(
    ("text", "bracketed", "whole"),
    [
        ("::1:9312", "[::1]:9312", "[::1:9312]"),
        ("fe80::1:2", "[fe80::1]:2", "[fe80::1:2]"),
        ("2001:db8::1:9001", "[2001:db8::1]:9001", "[2001:db8::1:9001]"),
    ],
)
def test_an_ambiguous_ipv6_address_is_refused_with_how_to_write_it(
    text: str, bracketed: str, whole: str
) -> None:
    with pytest.raises(ValueError) as refused:
        parse_server_address(text)
    message = str(refused.value)
    assert message == (
        f'"{text}" is ambiguous: write an IPv6 address in brackets: {bracketed}'
        f" (or {whole} for that address on the default port)"
    )
    assert "\n" not in message


@pytest.mark.parametrize("text", ["host:1:2", "a:b:c", "fe80::1:x", "::1:+9001"])
def test_several_colons_that_are_no_ipv6_address_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a server address: write HOST, HOST:PORT"):
        parse_server_address(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # str.isdigit takes these, int() refuses "²" and reads "٣" as 3: ASCII only.
        ("host:²", '"²" is not a port number'),
        ("host:٣", '"٣" is not a port number'),
        ("[::1]:٣", '"٣" is not a port number'),
        ("host:", 'missing port after ":" in "host:"'),
        ("host:0", "port 0 is out of range (1-65535)"),
        ("host:65536", "port 65536 is out of range (1-65535)"),
        ("[::1]:65536", "port 65536 is out of range (1-65535)"),
        # No IPv6 address ends in a group that long: the port is what is wrong.
        ("::1:65536", "port 65536 is out of range (1-65535)"),
        ("fe80::1:99999", "port 99999 is out of range (1-65535)"),
        ("::1:00000", "port 0 is out of range (1-65535)"),
    ],
)
def test_a_bad_port_is_named_as_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_server_address(text)
    assert str(refused.value) == message
    assert "invalid literal" not in message


def test_a_bare_ipv6_address_with_what_can_only_be_a_port_is_told_the_brackets() -> None:
    # "09001" is no IPv6 group (five digits), so it can only be port 9001 of ::1.
    with pytest.raises(ValueError) as refused:
        parse_server_address("::1:09001")
    assert str(refused.value) == (
        '"::1:09001": an IPv6 address takes brackets when a port follows: [::1]:9001'
    )
    assert parse_server_address("[::1]:09001") == ("::1", 9001)
    assert parse_server_address("host:09001") == ("host", 9001)


def test_connection_errors_are_words_not_tuples() -> None:
    asyncio_refused = ConnectionRefusedError(111, "Connect call failed ('::1', 9312, 0, 0)")
    assert describe_error(asyncio_refused) == "connection refused"
    unreachable = OSError(113, "Connect call failed ('::1:9312', 9001, 0, 0)")
    assert describe_error(unreachable) == "no route to host"
    several = OSError(
        "Multiple exceptions: [Errno 111] Connect call failed ('::1', 9, 0, 0), "
        "[Errno 101] Connect call failed ('10.0.0.1', 9)"
    )
    assert describe_error(several) == "connection refused; network is unreachable"
    assert describe_error(OSError("Multiple exceptions: ('::1', 9), ('x', 9)")) == (
        "connection failed"
    )
    assert describe_error(socket.gaierror(-2, "Name or service not known")) == "unknown host"


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def unused_port(host: str) -> int:
    """A TCP port nothing listens on (bound, then closed: connecting is refused)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_refused_connection_is_one_line_with_the_address_as_written() -> None:
    host = "::1" if has_ipv6_loopback() else LOOPBACK
    port = unused_port(host)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with pytest.raises(ConnectionLost) as lost:
        await list_rooms(where)
    message = str(lost.value)
    assert message == f"cannot reach server {where} (connection refused)"
    assert "('" not in message and "\n" not in message
