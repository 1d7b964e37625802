"""A room member in a process of its own, for attack 8: it joins, heartbeats, never leaves.

The suite kills it with SIGKILL, the way a laptop lid or a crash ends a client: no LEAVE,
no last datagram. Raw blocking sockets and the protocol codecs only, so the test depends
on no client code. It prints ``ready`` once registered and exits by itself after
``--lifetime`` seconds, so a suite that dies cannot leave it running.

    python tests/hostile/member.py PORT ROOM NAME [--create]
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from ocm.wire import (
    MAX_REPLY_PAYLOAD,
    Admission,
    ClientDatagram,
    CreateRoom,
    JoinRoom,
    TcrpReader,
    encode_client_datagram,
    encode_request,
    parse_reply,
)

HEARTBEAT = 0.1  # seconds; well under the suite's idle timeout


def _read_reply(sock: socket.socket, framer: TcrpReader) -> object:
    """The next reply off a blocking socket, through the wire's framer."""
    while (message := framer.next_message()) is None:
        chunk = sock.recv(64 * 1024)
        if not chunk:
            raise SystemExit("member: the server closed the connection")
        framer.feed(chunk)
    return parse_reply(message)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("room")
    parser.add_argument("name")
    parser.add_argument("--create", action="store_true")
    parser.add_argument("--lifetime", type=float, default=30.0)
    args = parser.parse_args(argv)
    kind = CreateRoom if args.create else JoinRoom
    with socket.create_connection(("127.0.0.1", args.port), timeout=5) as tcp:
        tcp.sendall(encode_request(kind(args.room, args.name)))
        framer = TcrpReader(max_payload=MAX_REPLY_PAYLOAD)
        _read_reply(tcp, framer)  # the ACK
        admission = _read_reply(tcp, framer)
    if not isinstance(admission, Admission):
        raise SystemExit(f"member: not admitted: {admission}")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(("127.0.0.1", admission.udp_port))
    udp.setblocking(False)
    heartbeat = encode_client_datagram(ClientDatagram(args.room, admission.token))
    udp.send(heartbeat)
    print("ready", flush=True)
    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        udp.send(heartbeat)
        try:
            while udp.recv(4096):
                pass  # drain what the room sends; this member only listens
        except BlockingIOError:
            pass
        time.sleep(HEARTBEAT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
