"""docs/protocol.md's byte examples decode, and re-encode to the same bytes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ocm.wire import (
    State,
    decode_client_datagram,
    decode_server_datagram,
    decode_tcrp,
    encode_client_datagram,
    encode_reply,
    encode_request,
    encode_server_datagram,
    parse_reply,
    parse_request,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
EXAMPLE = re.compile(r"<!-- example: (\w+) ([\w-]+) -->\n```text\n(.*?)\n```", re.S)
EXAMPLES = EXAMPLE.findall(DOC.read_text(encoding="utf-8"))


def reencode(kind: str, data: bytes) -> bytes:
    if kind == "tcrp":
        message = decode_tcrp(data)
        if message.state is State.REQUEST:
            return encode_request(parse_request(message))
        return encode_reply(parse_reply(message))
    if kind == "client":
        return encode_client_datagram(decode_client_datagram(data))
    assert kind == "server"
    return encode_server_datagram(decode_server_datagram(data))


def test_every_message_kind_has_an_example() -> None:
    names = {name for _, name, _ in EXAMPLES}
    assert {"create-request", "join-request", "list-request", "leave-request"} <= names
    assert {"create-ack", "join-error-ack", "create-complete", "list-complete"} <= names
    assert {"heartbeat", "chat", "message", "notice", "closed", "error"} <= names


@pytest.mark.parametrize(("kind", "name", "hex_dump"), EXAMPLES, ids=[e[1] for e in EXAMPLES])
def test_example_round_trips(kind: str, name: str, hex_dump: str) -> None:
    data = bytes.fromhex(hex_dump)
    assert reencode(kind, data) == data
