"""Server addresses as people write them: ``host``, ``host:port``, ``[v6]:port``."""

from __future__ import annotations

from ocm.wire.constants import DEFAULT_PORT

__all__ = ["format_server_address", "parse_server_address"]


def parse_server_address(
    server: str | tuple[str, int], default_port: int = DEFAULT_PORT
) -> tuple[str, int]:
    """``"HOST[:PORT]"`` or ``(host, port)`` to ``(host, port)``.

    IPv6 addresses take brackets when a port follows (``"[::1]:9001"``); a bare address
    with several colons (``"::1"``) is taken whole, on the default port. An empty host
    means ``localhost``. Raises ValueError with a readable message.
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
            port_text = rest[1:] if rest else ""
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        else:
            host, port_text = text, ""
        if port_text:
            if not port_text.isdigit():
                raise ValueError(f'"{port_text}" is not a port number')
            port = int(port_text)
        elif text.endswith(":"):
            raise ValueError(f'missing port after ":" in "{server}"')
        else:
            port = default_port
    host = host or "localhost"
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range (1-65535)")
    return host, port


def format_server_address(address: tuple[str, int]) -> str:
    """The inverse of :func:`parse_server_address`: ``host:port`` or ``[v6]:port``."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
