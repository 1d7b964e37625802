"""Server addresses as people write them: ``host``, ``host:port``, ``[v6]:port``."""

from __future__ import annotations

import ipaddress

from ocm.wire.constants import DEFAULT_PORT

__all__ = ["format_server_address", "parse_server_address"]


def parse_server_address(
    server: str | tuple[str, int], default_port: int = DEFAULT_PORT
) -> tuple[str, int]:
    """``"HOST[:PORT]"`` or ``(host, port)`` to ``(host, port)``.

    IPv6 addresses take brackets when a port follows (``"[::1]:9001"``). A bare IPv6
    address (several colons, no brackets) is taken whole, on the default port, only when
    its last group cannot be a port: it follows ``::`` (``"::1"``, ``"fe80::1"``), or
    it is not a number (``"fe80::abcd"``), or the address has all eight groups. Anything
    else (``"::1:9312"``: port 9312 of ``::1``, or the address ``::1:9312``?) is refused
    with a message that says how to write it; so is a bare IPv6 address followed by
    what can only be a port (``"::1:65536"``: the port is out of range; ``"::1:09001"``:
    it takes brackets). A port is ASCII digits, 1-65535. An empty host means
    ``localhost``.
    Raises ValueError with a one-line readable message.
    """
    if isinstance(server, tuple):
        host, port = server
    else:
        text = server.strip()
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ValueError(f'missing "]" in server address "{server}"')
            host, rest = text[1:end], text[end + 1 :]
            if rest and not rest.startswith(":"):
                raise ValueError(f'unexpected "{rest}" after "]" in "{server}"')
            port_text = rest[1:] if rest else None
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        else:
            if text.count(":") > 1:
                _check_bare_ipv6(text)
            host, port_text = text, None
        if port_text is None:
            port = default_port
        elif not port_text:
            raise ValueError(f'missing port after ":" in "{server}"')
        elif not _is_number(port_text):
            raise ValueError(f'"{port_text}" is not a port number')
        else:
            port = int(port_text)
    host = host or "localhost"
    _check_port(port)
    return host, port


def _is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes "²" (which ``int`` refuses) and
    "٣" (which ``int`` reads as 3)."""
    return text.isascii() and text.isdigit()


def _check_port(port: int) -> None:
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range (1-65535)")


def _check_bare_ipv6(text: str) -> None:
    """Refuse ``text`` (several colons, no brackets) unless it is an IPv6 address whose
    last group cannot be read as a port."""
    head, _, tail = text.rpartition(":")
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        if _is_number(tail) and _is_ipv6(head):
            # An address and a port, not written in brackets: say what is wrong with
            # the port first ("::1:65536"), then where it goes ("::1:09001").
            _check_port(int(tail))
            raise ValueError(
                f'"{text}": an IPv6 address takes brackets when a port follows:'
                f" [{head}]:{int(tail)}"
            ) from None
        raise ValueError(
            f'"{text}" is not a server address: write HOST, HOST:PORT or [IPv6]:PORT'
        ) from None
    if not (_is_number(tail) and 0 < int(tail) < 65536) or head.endswith(":"):
        return  # not a port, or it follows "::" (no one connects to an address "X::")
    if not _is_ipv6(head):
        return  # eight groups: the head alone is no address
    raise ValueError(
        f'"{text}" is ambiguous: write an IPv6 address in brackets: [{head}]:{tail}'
        f" (or [{text}] for that address on the default port)"
    )


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def format_server_address(address: tuple[str, int]) -> str:
    """The inverse of :func:`parse_server_address`: ``host:port`` or ``[v6]:port``."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
