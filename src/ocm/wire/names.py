"""The rules for room names and usernames (section 1, Rules), for both ends.

The server applies them to what it decodes (a :class:`~ocm.errors.RemoteProtocolError`),
the client to what its user typed, before sending (a
:class:`~ocm.errors.LocalProtocolError`): one rule, two ways to be wrong.
"""

from __future__ import annotations

from ocm.errors import ErrorCode, ProtocolError, RemoteProtocolError
from ocm.wire.constants import MAX_NAME_BYTES

__all__ = ["name_problem", "validate_name"]

# Invisible characters that let one name pass for another ("alice" + U+200B) or turn a
# line around (U+202E): zero-width space and directional marks, bidi embeddings,
# overrides and isolates, line and paragraph separators, the BOM. Joiners (U+200C/D)
# stay allowed: scripts and emoji sequences need them.
_INVISIBLE = frozenset("\u200b\u200e\u200f\u2028\u2029\ufeff") | frozenset(
    map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
)


def _has_control(text: str) -> bool:
    # C0 controls, DEL and C1 controls: they would let a name rewrite a terminal line.
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in _INVISIBLE for c in text)


def name_problem(name: str, what: str) -> str | None:
    """What is wrong with ``name`` as a room name or username, or None.

    1-255 bytes of UTF-8, no control characters and none of the invisible ones above.
    Usernames are trimmed of spaces by the caller first.
    """
    size = len(name.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_NAME_BYTES:
        return f"{what} must be 1-{MAX_NAME_BYTES} bytes, got {size}"
    if _has_control(name):
        return f"{what} must not contain control or invisible characters"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} is not valid Unicode"
    return None


def validate_name(name: str, what: str, *, error: type[ProtocolError] = RemoteProtocolError) -> str:
    """``name`` if :func:`name_problem` finds nothing wrong, else ``error`` (a peer's
    name by default; pass :class:`~ocm.errors.LocalProtocolError` for our own)."""
    problem = name_problem(name, what)
    if problem is not None:
        raise error(ErrorCode.BAD_REQUEST, problem)
    return name
