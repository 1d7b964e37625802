"""Helpers the wire decoders share: the one way they raise, and UTF-8 checking."""

from __future__ import annotations

from ocm.errors import ErrorCode, LocalProtocolError, RemoteProtocolError


def bad(message: str) -> RemoteProtocolError:
    """The peer's bytes break a rule (``bad_request``)."""
    return RemoteProtocolError(ErrorCode.BAD_REQUEST, message)


def refuse(message: str, code: ErrorCode = ErrorCode.BAD_REQUEST) -> LocalProtocolError:
    """What we were asked to encode breaks a rule: nothing is sent."""
    return LocalProtocolError(code, message)


def utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad(f"{what} is not valid UTF-8") from None
