"""A small fake server that speaks the delivery extension, for the client's adapter tests.

One room, "lobby", on loopback: a TCRP listener that admits anyone (granting
``delivery`` when asked, unless told not to) and a UDP socket that answers the extended
datagrams from :mod:`ocm.wire.delivery` the way section 3 of docs/protocol.md says: PING
with STATUS (or RESTARTED for another boot), DATA relayed once per MsgNo as CHAT (again:
ACCEPTED), REPAIR with the datagrams it keeps and LOST for older ones, LEAVE with
DEPARTED. A test makes the room talk (:meth:`FakeDeliveryServer.say`), loses datagrams
in either direction (``drop_out``, ``drop_in``) and turns answers off, and reads what
the client sent (``log``, ``received``).

It is no model of the real server (tests/server/ tests that one); it is just enough to
drive :class:`~ocm.client.ChatClient` through real sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from ocm.errors import ErrorCode
from ocm.wire import (
    Ack,
    Admission,
    CreateRoom,
    JoinRoom,
    Kind,
    LeaveRoom,
    Left,
    Operation,
    Request,
    ServerDatagram,
    encode_reply,
)
from ocm.wire.delivery import (
    DELIVERY,
    Accepted,
    Chat,
    Data,
    Departed,
    Extended,
    Leave,
    Lost,
    Ping,
    Received,
    Repair,
    Restarted,
    Status,
    decode_extended,
    encode_received,
)
from tests.kit import LOOPBACK, MS, fake_request


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: FakeDeliveryServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server.datagram_received(data, addr)


class FakeDeliveryServer:
    """The room "lobby" (host alice) on one fake server."""

    TOKEN = "d" * 32
    BOOT = "5c2b7e0a91d3f468"

    def __init__(self) -> None:
        self.udp = _Udp(self)
        self.tcp_port = 0
        self.requests: list[Request] = []
        self.log: list[Extended] = []  # every client datagram, decoded, in order
        self.received: asyncio.Queue[Extended] = asyncio.Queue()
        self.client: Any = None  # the client's UDP address, once known
        self.username = ""
        self.room: dict[int, Received] = {}  # Seq -> the datagram as first sent
        self.latest = 0
        self.keep = 1024  # Seqs kept for repair (the COMPLETE's "history")
        self.relayed: dict[int, int] = {}  # the member's MsgNo -> its Seq
        self.boot = self.BOOT  # the incarnation; change it to "restart"
        self.grant = True  # grant delivery when asked
        self.answer = True  # False: a server that went silent
        self.answer_leave = True  # DEPARTED for LEAVE
        self.gone = False  # the member left (LEAVE or LEAVE_ROOM): LEAVE_ROOM is refused
        self.refuse: Callable[[str], bool] = lambda text: False  # ERROR for this DATA text
        # Loss: a datagram to the client for which drop_out returns True is not sent (it
        # is still kept for repair); a client datagram for which drop_in does is ignored.
        self.drop_out: Callable[[Received], bool] = lambda datagram: False
        self.drop_in: Callable[[Extended], bool] = lambda datagram: False

    # -- the room ------------------------------------------------------------------

    def say(self, sender: str, text: str, msg_no: int = 1) -> int:
        """A CHAT from another member: the room's next Seq, sent to the client."""
        self.latest += 1
        return self._publish(Chat(self.latest, sender, msg_no, text))

    def notice(self, text: str, kind: Kind = Kind.NOTICE) -> int:
        self.latest += 1
        return self._publish(ServerDatagram(kind, self.latest, "", text))

    def _publish(self, datagram: Chat | ServerDatagram) -> int:
        self.room[datagram.seq] = datagram
        self.send(datagram)
        return datagram.seq

    def send(self, datagram: Received) -> None:
        if self.client is None or self.drop_out(datagram):
            return
        assert self.udp.transport is not None
        self.udp.transport.sendto(encode_received(datagram), self.client)

    # -- UDP -----------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        datagram = decode_extended(data)  # the client must send only extended datagrams
        self.log.append(datagram)
        self.received.put_nowait(datagram)
        assert datagram.token == self.TOKEN
        if self.drop_in(datagram) or not self.answer:
            return
        self.client = addr
        match datagram:
            case Ping(_, nonce, boot):
                if boot != bytes.fromhex(self.boot):
                    self.send(Restarted("the server restarted"))
                else:
                    self.send(Status(self.latest, nonce))
            case Data(_, msg_no, text):
                if msg_no in self.relayed:
                    self.send(Accepted(self.relayed[msg_no], msg_no))
                elif self.refuse(text):
                    self.send(ServerDatagram(Kind.ERROR, msg_no, "", f"refused: {text}"))
                else:
                    self.latest += 1
                    self.relayed[msg_no] = self.latest
                    self._publish(Chat(self.latest, self.username, msg_no, text))
            case Repair(_, ranges):
                oldest = self.latest - self.keep + 1
                for first, count in ranges:
                    seqs = [s for s in range(first, first + count) if s <= self.latest]
                    gone = [s for s in seqs if s < oldest or s not in self.room]
                    if gone:
                        self.send(Lost(gone[0], len(gone)))
                    for seq in seqs:
                        if seq not in gone:
                            self.send(self.room[seq])
            case Leave():
                if self.answer_leave:
                    self.gone = True
                    self.send(Departed())

    async def next_datagram(self, kind: type[Extended], timeout: float = 1000 * MS) -> Any:
        """The next client datagram of ``kind`` (earlier ones of other kinds skipped)."""
        async with asyncio.timeout(timeout):
            while not isinstance(datagram := await self.received.get(), kind):
                pass
        return datagram

    def sent_of(self, kind: type[Extended]) -> list[Any]:
        return [d for d in self.log if isinstance(d, kind)]

    # -- TCP -----------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        message, request = await fake_request(reader, writer)
        self.requests.append(request)
        port = self.udp.transport.get_extra_info("sockname")[1] if self.udp.transport else 0
        match request:
            case CreateRoom(room, username, _, features) | JoinRoom(room, username, _, features):
                self.username = username
                granted = DELIVERY in features and self.grant
                host = username if isinstance(request, CreateRoom) else "alice"
                members = (host,) if isinstance(request, CreateRoom) else ("alice", username)
                reply: Admission | Left = Admission(
                    message.operation,
                    room,
                    self.TOKEN,
                    port,
                    host,
                    members,
                    features=(DELIVERY,) if granted else (),
                    seq=self.latest if granted else None,
                    boot=self.boot if granted else None,
                    history=self.keep if granted else None,
                )
            case LeaveRoom(room):
                if self.gone:
                    error = Ack(message.operation, room, ErrorCode.INVALID_TOKEN, "no such token")
                    writer.write(encode_reply(error))
                    await writer.drain()
                    writer.close()
                    return
                self.gone = True
                reply = Left(room)
            case _:
                raise AssertionError(f"the fake server does not do {request}")
        writer.write(encode_reply(Ack(Operation(message.operation), room)) + encode_reply(reply))
        await writer.drain()
        writer.close()


@asynccontextmanager
async def delivery_server() -> AsyncIterator[tuple[FakeDeliveryServer, asyncio.Server]]:
    """A fake delivery server on loopback, and its TCP listener (close it to make the
    server unreachable over TCP)."""
    loop = asyncio.get_running_loop()
    fake = FakeDeliveryServer()
    await loop.create_datagram_endpoint(lambda: fake.udp, local_addr=(LOOPBACK, 0))
    listener = await asyncio.start_server(fake.handle, LOOPBACK, 0)
    fake.tcp_port = listener.sockets[0].getsockname()[1]
    try:
        yield fake, listener
    finally:
        listener.close()
        if fake.udp.transport is not None:
            fake.udp.transport.close()
