"""The one error tree of OCM.

Every error OCM raises on purpose is an :class:`OCMError` and carries a wire error
code from the protocol (section 1 of docs/protocol.md), so a caller can branch on
``err.code`` and a server can put the same code on the wire.

    OCMError                 root; a human ``message`` and a wire ``code`` (or None)
    ├── ProtocolError        the peer sent malformed bytes or fields (decoders raise it)
    ├── RoomError            the room registry refused a request (room_exists, ...)
    ├── ServerError          the server answered our request with an error ACK (client side)
    └── ConnectionLost       the server cannot be reached or went away (client side)

A decoder never lets an IndexError, KeyError or UnicodeDecodeError escape: malformed
input is always a ProtocolError.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """The error codes of the protocol, exactly as they appear on the wire."""

    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    UNKNOWN_OPERATION = "unknown_operation"
    ROOM_EXISTS = "room_exists"
    NO_SUCH_ROOM = "no_such_room"
    WRONG_PASSWORD = "wrong_password"
    NAME_TAKEN = "name_taken"
    ROOM_FULL = "room_full"
    SERVER_FULL = "server_full"
    RATE_LIMITED = "rate_limited"
    INVALID_TOKEN = "invalid_token"


class OCMError(Exception):
    """Root of every error OCM raises on purpose."""

    code: ErrorCode | None

    def __init__(self, code: ErrorCode | None, message: str) -> None:
        super().__init__(message if code is None else f"{code}: {message}")
        self.code = code
        self.message = message


class ProtocolError(OCMError):
    """Malformed bytes or fields: the peer broke the protocol."""

    code: ErrorCode

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)


class RoomError(OCMError):
    """The room registry refused a well-formed request."""

    code: ErrorCode

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)


class ServerError(OCMError):
    """The server refused our request (an error ACK); ``code`` is the server's."""

    code: ErrorCode

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)


class ConnectionLost(OCMError):
    """The server could not be reached, or closed the connection mid-request (no code)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)
