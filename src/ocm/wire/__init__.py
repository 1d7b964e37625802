"""The wire: everything both ends of OCM must agree on, and no I/O.

Shared by the server (:mod:`ocm.server`) and the client (:mod:`ocm.client`), and the
only thing they share. Nothing here opens a socket, starts a task or reads a clock
(``tests/test_architecture.py`` enforces it).

* :mod:`ocm.wire.constants` -- ports, sizes, the Seq cycle;
* :mod:`ocm.wire.names` -- the rules for room names and usernames;
* :mod:`ocm.wire.tcrp` -- TCRP messages (section 1), typed requests and replies;
* :mod:`ocm.wire.framer` -- :class:`TcrpReader`, bytes in, whole messages out;
* :mod:`ocm.wire.datagrams` -- relay datagrams (section 2);
* :mod:`ocm.wire.texts` -- the fixed NOTICE, CLOSED and ERROR texts, formatter and parser.

The names are re-exported here, so ``from ocm.wire import JoinRoom, decode_tcrp`` works.
"""

from ocm.wire.constants import (
    CLIENT_HEADER_SIZE,
    DEFAULT_PORT,
    MAX_DATAGRAM,
    MAX_NAME_BYTES,
    MAX_REPLY_PAYLOAD,
    MAX_TCRP_PAYLOAD,
    MAX_TOKEN_BYTES,
    PAYLOAD_SIZE_BYTES,
    SEQ_CYCLE,
    SERVER_HEADER_SIZE,
    TCRP_HEADER_SIZE,
)
from ocm.wire.datagrams import (
    ClientDatagram,
    Kind,
    ServerDatagram,
    decode_client_datagram,
    decode_server_datagram,
    encode_client_datagram,
    encode_server_datagram,
    next_seq,
    server_datagram_prefix,
    split_client_datagram,
)
from ocm.wire.framer import TcrpReader
from ocm.wire.names import name_problem, validate_name
from ocm.wire.tcrp import (
    Ack,
    Admission,
    CreateRoom,
    JoinRoom,
    LeaveRoom,
    Left,
    ListRooms,
    Operation,
    Reply,
    Request,
    RoomInfo,
    RoomList,
    State,
    TcrpHeader,
    TcrpMessage,
    body_size,
    decode_header,
    decode_tcrp,
    decode_tcrp_body,
    encode_error_ack,
    encode_header,
    encode_reply,
    encode_request,
    encode_tcrp,
    parse_reply,
    parse_request,
    reply_message,
    request_message,
)

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
    "Ack",
    "Admission",
    "ClientDatagram",
    "CreateRoom",
    "JoinRoom",
    "Kind",
    "LeaveRoom",
    "Left",
    "ListRooms",
    "Operation",
    "Reply",
    "Request",
    "RoomInfo",
    "RoomList",
    "ServerDatagram",
    "State",
    "TcrpHeader",
    "TcrpMessage",
    "TcrpReader",
    "body_size",
    "decode_client_datagram",
    "decode_header",
    "decode_server_datagram",
    "decode_tcrp",
    "decode_tcrp_body",
    "encode_client_datagram",
    "encode_error_ack",
    "encode_header",
    "encode_reply",
    "encode_request",
    "encode_server_datagram",
    "encode_tcrp",
    "name_problem",
    "next_seq",
    "parse_reply",
    "parse_request",
    "reply_message",
    "request_message",
    "server_datagram_prefix",
    "split_client_datagram",
    "validate_name",
]
