"""The bare relay: the ceiling of a naive Python relay, the benchmark's baseline.

A blocking UDP socket loop that forwards every datagram, unparsed and unauthenticated,
to every address registered in the sender's room. Registration: the first datagram
from an unknown source address registers that address in the room named by the
datagram's first ``2 + data[0]`` bytes (the RoomNameSize byte, the TokenSize byte and
the room name of an OCM client datagram, so the load generator's first heartbeat does
it) and is not forwarded. No sequence numbers, no token, no UTF-8 check, no expiry.

It is given its best shot: a plain blocking socket (no per-call poll), bound methods in
locals, one dict lookup per datagram, a receive buffer of the protocol's 4096-byte
maximum.

Run: ``python -m bench.bare_relay --port 0 --lifetime 60``; it prints
``bare relay listening on UDP port N`` and exits after ``--lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time

__all__ = ["serve"]

MAX_DATAGRAM = 4096
# How many datagrams between two looks at the clock: the loop stays bounded in time
# without paying for a clock read per datagram.
CHECK_EVERY = 1024

Address = tuple[str, int]


def _wake_up_when_idle(sock: socket.socket, seconds: float) -> None:
    """Make a blocking receive give up after ``seconds`` so the loop sees its deadline.

    SO_RCVTIMEO keeps the socket in plain blocking mode. ``settimeout`` would not do:
    CPython then polls the socket before every send and receive, which would double
    the baseline's system calls and flatter OCM.
    """
    try:
        whole = int(seconds)
        timeval = struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    except (OSError, AttributeError, struct.error):
        sock.settimeout(seconds)  # elsewhere: slower, but still bounded


def serve(port: int, lifetime: float, host: str = "127.0.0.1") -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    _wake_up_when_idle(sock, 0.2)
    print(f"bare relay listening on UDP port {sock.getsockname()[1]}", flush=True)
    rooms: dict[bytes, list[Address]] = {}
    room_of: dict[Address, list[Address]] = {}
    recvfrom = sock.recvfrom
    sendto = sock.sendto
    deadline = time.monotonic() + lifetime
    try:
        while time.monotonic() < deadline:
            for _ in range(CHECK_EVERY):
                try:
                    data, address = recvfrom(MAX_DATAGRAM)
                except (BlockingIOError, TimeoutError):
                    break  # idle for a while: look at the deadline
                except OSError:
                    continue  # ICMP unreachable from a member that went away
                room = room_of.get(address)
                if room is None:
                    key = data[: 2 + data[0]] if data else b""
                    room = rooms.setdefault(key, [])
                    room.append(address)
                    room_of[address] = room
                    continue
                for member in room:
                    # try costs nothing until it catches; contextlib.suppress would be a
                    # context manager per datagram sent.
                    try:  # noqa: SIM105
                        sendto(data, member)
                    except OSError:
                        pass
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        serve(args.port, args.lifetime)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
