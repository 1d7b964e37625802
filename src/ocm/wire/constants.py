"""The numbers both ends of the protocol must agree on (docs/protocol.md).

Each is defined here once: the server, the client and the tests import it, so a size or
a port cannot differ between two modules that both "know" it.
"""

from __future__ import annotations

__all__ = [
    "CLIENT_HEADER_SIZE",
    "DEFAULT_PORT",
    "MAX_DATAGRAM",
    "MAX_NAME_BYTES",
    "MAX_REPLY_PAYLOAD",
    "MAX_TCRP_PAYLOAD",
    "MAX_TOKEN_BYTES",
    "PAYLOAD_SIZE_BYTES",
    "SEQ_CYCLE",
    "SERVER_HEADER_SIZE",
    "TCRP_HEADER_SIZE",
]

# PROTOCOL.md: port 9001 for both TCP and UDP unless the server says otherwise (the
# COMPLETE of CREATE/JOIN carries the UDP port).
DEFAULT_PORT = 9001
TCRP_HEADER_SIZE = 32
# Header bytes 3-31: a 29-byte big-endian size, so a peer may announce up to 2**232 - 1.
PAYLOAD_SIZE_BYTES = 29
# Default cap on a TCRP payload. Real requests are a few hundred bytes; the cap bounds
# what one connection can make the server buffer.
MAX_TCRP_PAYLOAD = 64 * 1024
# What a client accepts in a reply. The request cap does not fit replies: LIST_ROOMS of
# the default 10,000 rooms, each a 255-byte name that JSON escaping may double, is under
# 6 MB. Still bounded, so a hostile server cannot make a client allocate without limit.
MAX_REPLY_PAYLOAD = 16 * 1024 * 1024
# Section 2: at most 4096 bytes per datagram in either direction (fits one loopback or
# jumbo-free path MTU after fragmentation; bounds every buffer).
MAX_DATAGRAM = 4096
MAX_NAME_BYTES = 255
MAX_TOKEN_BYTES = 255
# Client-to-server relay header: RoomNameSize (1) + TokenSize (1).
CLIENT_HEADER_SIZE = 2
# Server-to-client relay header: Kind (1) + Seq (4) + SenderSize (1).
SERVER_HEADER_SIZE = 6
# Seq is a uint32 counting 1, 2, ..., 2**32 - 1, then 1 again (0 only on ERROR): the
# cycle has 2**32 - 1 values. Comparisons are modulo that (RFC 1982 serial numbers).
SEQ_CYCLE = 0xFFFFFFFF
