"""The UDP adapter: moves relay datagrams between the socket and :class:`RelayCore`.

Bytes arrive, the core says what to send, the endpoint sends it. Nothing here looks
inside a datagram.

Sending is most of a relay's work: the kernel's share of one ``sendto`` dwarfs the
parsing and checking done in Python (docs/performance.md). So while the transport has
nothing queued, the endpoint writes to the socket itself: a plain ``sendto`` per member
for small rooms, and for rooms of :data:`BATCH_FROM` or more, on Linux, every copy in
one ``sendmmsg`` system call (:class:`BatchSender`, through ctypes). That is what lets
the relay outrun a naive loop of ``sendto`` calls. Whatever the socket refuses for
now goes to the transport, which queues it; once anything is queued, the transport
carries everything, so each member still gets its datagrams in order.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import platform
import socket
import struct
import sys
from collections.abc import Callable, Iterable
from typing import Any, cast

from ocm.server.registry import Address, Outgoing
from ocm.server.relay import RelayCore
from ocm.server.tunnel import TunnelLink

__all__ = ["BATCH_FROM", "BatchSender", "RelayEndpoint"]

log = logging.getLogger("ocm.server.udp")

# Rooms this big or bigger get one sendmmsg call; below it the ctypes call costs more
# than the system calls it saves (measured on Linux x86-64, docs/performance.md).
BATCH_FROM = 3
# What the transport may hold for sockets that refuse more (a fan-out larger than the
# link): past it copies are dropped, as a router would, and the members see a Seq gap.
# Without a cap one fast sender in a big room could grow the server's memory forever.
MAX_QUEUED_BYTES = 4 * 1024 * 1024
# Fan-out lists whose split into tunnels and UDP is remembered: more rooms than this
# chatting at once only costs a recomputation now and then.
MAX_SPLITS = 1024


class RelayEndpoint(asyncio.DatagramProtocol):
    def __init__(
        self,
        core: RelayCore,
        clock: Callable[[], float],
        rearm: Callable[[], None] = lambda: None,
        tunnel_linger: float = 2.0,
    ) -> None:
        self.core = core
        self._clock = clock
        # Called when a datagram brought a registry deadline closer (a host's LEAVE
        # closed its room, whose CLOSED copies are due soon): the app re-arms its timer.
        self._rearm = rearm
        self.transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None  # our own handle on the transport's socket
        self._batch: BatchSender | None = None
        self._queued: Callable[[], int] = lambda: 0
        # Counters for the metrics endpoint (ocm.server.metrics): datagrams in (UDP and
        # tunnels), copies out (each address, UDP and tunnels), copies not sent because
        # the transport's queue was full, and datagrams a bug cost.
        self.received = 0
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self.closed = asyncio.Event()  # set once the socket is closed (its port is free)
        # Section 4: tunnelled members' connections, by tunnel address. Their datagrams
        # come in through datagram_received as UDP ones do; what goes to their address
        # goes to the connection instead of the socket.
        self.tunnels: dict[Address, TunnelLink] = {}
        self._tunnel_linger = tunnel_linger
        # How each room's fan-out list splits into tunnels and UDP addresses, by the
        # list's identity (with the list, so the id stays its own): a room's list is one
        # tuple until its members change, so a chat line costs one lookup, and
        # BatchSender gets the same UDP tuple each time (it keys its prepared
        # destinations by it). Emptied whenever the tunnels change.
        self._splits: dict[
            int, tuple[tuple[Address, ...], tuple[TunnelLink, ...], tuple[Address, ...]]
        ] = {}
        self._next_drop_warning = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        # Every datagram transport of asyncio and uvloop has it, though the ABC does not.
        queued = getattr(transport, "get_write_buffer_size", None)
        if queued is not None:
            self._queued = queued
        if sys.platform == "win32" or sock is None or queued is None:
            return  # the proactor owns its socket: the transport sends everything
        try:
            # The transport hands out a wrapper without sendto; a duplicate descriptor
            # is a plain socket on the same file (and non-blocking like it).
            self._sock = sock.dup()
        except OSError:
            return
        self._batch = BatchSender.open(self._sock.fileno(), self._sock.family)

    def connection_lost(self, exc: Exception | None) -> None:
        self._batch = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.closed.set()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1
        try:
            answer = self.core.answer(data, addr, self._clock())
        except Exception:
            # A bug must cost one datagram, never the relay.
            self.failed += 1
            log.exception("unexpected error handling a datagram from %s", addr[0])
            return
        if self.core.registry.deadline_moved:
            self._rearm()
        if answer is None:
            return
        if isinstance(answer, tuple):
            self.send_to(answer[0], answer[1])
        else:
            for datagram, addresses in answer:
                self.send_to(datagram, addresses)

    def send(self, outgoing: Iterable[Outgoing]) -> None:
        for item in outgoing:
            if not item.addresses:
                continue  # nobody to send it to: not even worth sealing
            sealer = item.sealer  # section 5: sealed once, for every member of the room
            datagram = item.datagram if sealer is None else sealer.seal(item.datagram)
            self.send_to(datagram, item.addresses)

    def send_to(self, datagram: bytes, addresses: tuple[Address, ...]) -> None:
        """Send ``datagram`` to each address, straight to the socket when possible."""
        if self.tunnels:  # one check on the hot path while nobody tunnels
            addresses = self._through_tunnels(datagram, addresses)
            if not addresses:
                return
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # (tunnels do not need the UDP socket: a firewall may block it)
        # Counted once here, on the way to the socket or the transport's queue; the
        # rare copies that go neither way are taken back below.
        self.sent += len(addresses)
        sock = self._sock
        if sock is not None and not self._queued():
            if self._batch is not None and len(addresses) >= BATCH_FROM:
                sent = self._batch.send(datagram, addresses)
            else:
                sent = 0
                for address in addresses:
                    try:
                        sock.sendto(datagram, address)
                    except BlockingIOError:
                        break  # the socket buffer is full: the transport queues the rest
                    except OSError as error:
                        self.sent -= 1  # not sent, though the loop moves past it
                        self.error_received(error)  # what the transport would have done
                    sent += 1
            if sent == len(addresses):
                return
            addresses = addresses[sent:]
        room_left = (MAX_QUEUED_BYTES - self._queued()) // max(len(datagram), 1)
        if room_left < len(addresses):
            dropped = len(addresses) - max(room_left, 0)
            self.sent -= dropped
            self._drop(dropped)
            addresses = addresses[: max(room_left, 0)]
        for address in addresses:
            transport.sendto(datagram, address)

    def _through_tunnels(
        self, datagram: bytes, addresses: tuple[Address, ...]
    ) -> tuple[Address, ...]:
        """Write ``datagram`` to the tunnels among ``addresses``; the UDP ones are left."""
        if len(addresses) < BATCH_FROM:  # an answer to one member: not worth a cache
            links, udp = self._split(addresses)
        else:
            split = self._splits.get(id(addresses))
            if split is None or split[0] is not addresses:
                if len(self._splits) >= MAX_SPLITS:
                    self._splits.clear()
                split = self._splits[id(addresses)] = (addresses, *self._split(addresses))
            _, links, udp = split
        for link in links:
            if link.send(datagram):
                self.sent += 1
        return udp

    def _split(
        self, addresses: tuple[Address, ...]
    ) -> tuple[tuple[TunnelLink, ...], tuple[Address, ...]]:
        tunnels = self.tunnels
        links: list[TunnelLink] = []
        udp: list[Address] = []
        for address in addresses:
            link = tunnels.get(address)
            if link is not None:
                links.append(link)
            elif address[1] >= 0:  # a tunnel address whose link is gone goes nowhere
                udp.append(address)
        if len(udp) == len(addresses):
            return (), addresses  # the same tuple: BatchSender keys its prepared lists by it
        return tuple(links), tuple(udp)

    def open_tunnel(self, link: TunnelLink) -> None:
        """Route ``link.address`` to ``link``; :meth:`close_tunnel` ends it."""
        self.tunnels[link.address] = link
        self._splits.clear()

    def close_tunnel(self, link: TunnelLink) -> None:
        """Close ``link``, keeping its address routed (to nowhere) for a while: datagrams
        made for it earlier (a CLOSED's later copies) must not reach the socket with a
        tunnel address, which is no UDP address."""
        link.close()
        asyncio.get_running_loop().call_later(self._tunnel_linger, self._forget_tunnel, link)

    def _forget_tunnel(self, link: TunnelLink) -> None:
        if self.tunnels.get(link.address) is link:
            del self.tunnels[link.address]
            self._splits.clear()

    def _drop(self, copies: int) -> None:
        self.dropped += copies
        now = self._clock()
        if now >= self._next_drop_warning:  # at most one line a minute
            self._next_drop_warning = now + 60.0
            log.warning(
                "UDP send queue full: %d relayed copies dropped so far (members see a gap)",
                self.dropped,
            )

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away: its idle timeout will
        # remove it; nothing to do now.
        log.debug("UDP error: %s", exc)


# -- sendmmsg(2) through ctypes (Linux, glibc, 64-bit) ---------------------------


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


# The most one UDP datagram can carry (IPv4): the shared buffer holds any of them.
_MAX_UDP_PAYLOAD = 65_507
# The kernel takes at most UIO_MAXIOV messages per call.
_MAX_BATCH = 1024
# Destinations kept prepared, over all rooms (about 170 bytes each): past this, start
# over. A bound on addresses, not rooms, so rooms that churn members cannot pile up
# stale lists of a thousand addresses each.
_MAX_PREPARED = 65_536


class _Prepared:
    """The messages of one destination tuple, all pointing at the shared buffer."""

    __slots__ = ("addresses", "messages", "names", "pointer")

    def __init__(self, addresses: tuple[Address, ...], messages: Any, names: list[Any]) -> None:
        self.addresses = addresses  # kept alive, so its id() stays its own
        self.messages = messages
        self.names = names
        self.pointer: int = ctypes.addressof(messages)


class BatchSender:
    """Sends one datagram to many addresses with one ``sendmmsg`` call.

    Every message of a batch points at one buffer and one iovec, so a send is a copy
    into the buffer and a single system call. Destination lists are prepared once per
    address tuple (rooms keep theirs until a member comes or goes). Only built where
    the structure layouts are known: Linux with glibc on a 64-bit machine.
    """

    def __init__(self, sendmmsg: Callable[..., int], fd: int, family: int) -> None:
        self._sendmmsg = sendmmsg
        self._fd = fd
        self._family = family
        self._buffer = ctypes.create_string_buffer(_MAX_UDP_PAYLOAD)
        # Copying through a memoryview is several times cheaper than ctypes.memmove.
        self._view = memoryview(self._buffer).cast("B")
        self._iov = _IoVec(ctypes.addressof(self._buffer), 0)
        self._prepared: dict[int, _Prepared] = {}
        self._prepared_addresses = 0

    @classmethod
    def open(cls, fd: int, family: int) -> BatchSender | None:
        """A sender for socket ``fd``, or None where sendmmsg is not to be had."""
        if (
            not sys.platform.startswith("linux")
            or platform.libc_ver()[0] != "glibc"
            or ctypes.sizeof(ctypes.c_void_p) != 8
            or family not in (socket.AF_INET, socket.AF_INET6)
        ):
            return None
        try:
            # PyDLL keeps the GIL: the socket is non-blocking, so the call never waits,
            # and skipping the release and retake is cheaper.
            sendmmsg = ctypes.PyDLL(None).sendmmsg
        except (OSError, AttributeError):
            return None
        sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        sendmmsg.restype = ctypes.c_int
        return cls(sendmmsg, fd, family)

    def send(self, datagram: bytes, addresses: tuple[Address, ...]) -> int:
        """Send ``datagram`` to the first addresses; return how many it reached.

        Fewer than all (even 0) when the socket buffer fills or an address cannot be
        expressed here; the caller hands the rest to the transport.
        """
        size = len(datagram)
        if size > _MAX_UDP_PAYLOAD:
            return 0  # the socket would refuse it too; the transport will say why
        prepared = self._prepared.get(id(addresses))
        if prepared is None or prepared.addresses is not addresses:
            prepared = self._prepare(addresses)
            if prepared is None:
                return 0
        self._view[:size] = datagram
        self._iov.iov_len = size
        sent = 0
        count = len(addresses)
        while sent < count:
            chunk = min(count - sent, _MAX_BATCH)
            done = self._sendmmsg(self._fd, prepared.pointer + sent * _MMSG_SIZE, chunk, 0)
            if done <= 0:
                break  # EAGAIN or an error: the transport retries and reports
            sent += done
            if done < chunk:
                break
        return sent

    def _prepare(self, addresses: tuple[Address, ...]) -> _Prepared | None:
        if len(addresses) > _MAX_PREPARED:
            return None
        names: list[Any] = []
        try:
            for address in addresses:
                names.append(self._sockaddr(address))
        except (OSError, ValueError, TypeError, struct.error):
            return None  # not an address of this family: leave it to the transport
        messages = (_MMsgHdr * len(addresses))()
        iov = ctypes.addressof(self._iov)
        for message, name in zip(messages, names, strict=True):
            header = message.msg_hdr
            header.msg_name = ctypes.addressof(name)
            header.msg_namelen = ctypes.sizeof(name)
            header.msg_iov = iov
            header.msg_iovlen = 1
        if self._prepared_addresses + len(addresses) > _MAX_PREPARED:
            self._prepared.clear()
            self._prepared_addresses = 0
        prepared = _Prepared(addresses, messages, names)
        self._prepared[id(addresses)] = prepared
        self._prepared_addresses += len(addresses)
        return prepared

    def _sockaddr(self, address: Address) -> Any:
        """``address`` as a struct sockaddr_in or sockaddr_in6, in a ctypes buffer."""
        # An IPv6 address from asyncio is (ip, port, flowinfo, scope_id).
        ip, port, *rest = address
        family = struct.pack("=H", self._family)
        port_bytes = struct.pack("!H", port)
        if self._family == socket.AF_INET:
            raw = family + port_bytes + socket.inet_pton(socket.AF_INET, ip) + bytes(8)
        else:
            if ":" not in ip:
                ip = "::ffff:" + ip  # an IPv4 peer of a dual-stack socket
            flow, scope = (rest[0], rest[1]) if len(rest) >= 2 else (0, 0)
            packed = socket.inet_pton(socket.AF_INET6, ip.split("%", 1)[0])
            raw = family + port_bytes + struct.pack("!I", flow) + packed + struct.pack("=I", scope)
        return ctypes.create_string_buffer(raw, len(raw))


_MMSG_SIZE = ctypes.sizeof(_MMsgHdr)
