"""The one error tree of OCM.

Every error OCM raises on purpose is an :class:`OCMError` and carries a wire error
code from the protocol (section 1 of docs/protocol.md), so a caller can branch on
``err.code`` and a server can put the same code on the wire.

    OCMError                 root; a human ``message`` and a wire ``code`` (or None)
    ├── ProtocolError        the protocol was broken; catch it for either side:
    │   ├── RemoteProtocolError  the peer sent malformed bytes or fields (decoders raise it)
    │   └── LocalProtocolError   we were about to break it: a text too long or empty, a
    │                            name over 255 bytes (encoders and checks of our input)
    ├── RoomError            the room registry refused a request (room_exists, ...)
    ├── ServerError          the server answered our request with an error ACK (client side)
    ├── ConnectionLost       the server cannot be reached or went away (client side)
    └── ServerKeyChanged     the server's TLS key is not the one we know or were given:
                             nothing was sent (client side, section 5)

A decoder never lets an IndexError, KeyError or UnicodeDecodeError escape: malformed
input is always a RemoteProtocolError. The split is h11's: "the peer broke the
protocol" asks for an error reply to the peer, "you broke it" is a bug or a user's
input to refuse before anything is sent; both keep the wire ``code``.
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
    # Section 5 (docs/protocol.md): encryption.
    ENCRYPTION_REQUIRED = "encryption_required"  # plaintext where the server wants TLS
    NOT_ENCRYPTED = "not_encrypted"  # an encrypted client asked for a plaintext room
    E2E_REQUIRED = "e2e_required"  # an end-to-end room, joined without the e2e feature


class OCMError(Exception):
    """Root of every error OCM raises on purpose."""

    code: ErrorCode | None

    def __init__(self, code: ErrorCode | None, message: str) -> None:
        super().__init__(message if code is None else f"{code}: {message}")
        self.code = code
        self.message = message


class ProtocolError(OCMError):
    """The protocol was broken, by the peer or by us (the two subclasses say which).

    Abstract, as h11's: catch it, but raise one of the two, so that whoever catches it
    can always tell whose fault it was.
    """

    code: ErrorCode

    def __init__(self, code: ErrorCode, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("raise RemoteProtocolError or LocalProtocolError, not ProtocolError")
        super().__init__(code, message)


class RemoteProtocolError(ProtocolError):
    """Malformed bytes or fields from the peer: answer with ``code`` where the protocol
    has an answer, and drop the input."""


class LocalProtocolError(ProtocolError):
    """What we were about to send breaks the protocol (too long, empty, not encodable):
    nothing was sent."""


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


class ServerKeyChanged(OCMError):
    """The server showed a TLS key other than the one the client trusts for it (its
    known_servers entry, or the fingerprint it was given): the connection was closed
    before anything was sent. ``new`` is the key it showed, ``old`` the one expected
    (None where a certificate authority had vouched for the server)."""

    def __init__(self, message: str, *, where: str, old: str | None, new: str) -> None:
        super().__init__(None, message)
        self.where = where
        self.old = old
        self.new = new
