"""The OCM client library: join a room from a script, a bot or the terminal UI.

``from ocm.client import ChatClient, Message`` is all a script needs:

* :class:`ChatClient` (:mod:`ocm.client.chat`) -- one member of one room: create or join,
  send, iterate the events, close. It asks for the delivery extension (every message
  once and in order, ours resent until confirmed, a dead server noticed) and speaks
  version 1 to a server that does not grant it;
* :func:`list_rooms` (:mod:`ocm.client.exchange`) -- the rooms on a server;
* the events (:mod:`ocm.client.events`): :class:`Message`, :class:`Notice`,
  :class:`Closed`, :class:`ErrorReply`, :class:`Gap`, :class:`Undelivered`,
  :class:`Overflow`;
* the sans-I/O cores: :class:`RoomState` and :class:`SeqTracker` (version 1,
  :mod:`ocm.client.session`), :class:`DeliveryState` (the delivery extension,
  :mod:`ocm.client.delivery`);
* server addresses (:mod:`ocm.client.address`);
* :class:`Security` (:mod:`ocm.client.trust`) -- TLS and whom to trust (section 5).

Nothing here imports :mod:`ocm.server`: the two share only :mod:`ocm.wire`.
"""

from ocm.client.address import format_server_address, parse_server_address
from ocm.client.chat import (
    DEFAULT_CONFIRM_TIMEOUT,
    DEFAULT_MAX_EVENTS,
    DEFAULT_WINDOW,
    ChatClient,
    ChatOptions,
)
from ocm.client.delivery import DeliveryState
from ocm.client.events import (
    COULD_NOT_RESUME,
    DROPPED,
    NETWORK_GONE,
    Closed,
    ErrorReply,
    Event,
    Gap,
    Message,
    Notice,
    Overflow,
    PathChanged,
    Undelivered,
)
from ocm.client.exchange import DEFAULT_TIMEOUT, list_rooms
from ocm.client.session import DEFAULT_HEARTBEAT_INTERVAL, RoomState, SeqTracker
from ocm.client.trust import Security
from ocm.wire.constants import DEFAULT_PORT
from ocm.wire.tcrp import RoomInfo

__all__ = [
    "COULD_NOT_RESUME",
    "DEFAULT_CONFIRM_TIMEOUT",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WINDOW",
    "DROPPED",
    "NETWORK_GONE",
    "ChatClient",
    "ChatOptions",
    "Closed",
    "DeliveryState",
    "ErrorReply",
    "Event",
    "Gap",
    "Message",
    "Notice",
    "Overflow",
    "PathChanged",
    "RoomInfo",
    "RoomState",
    "Security",
    "SeqTracker",
    "Undelivered",
    "format_server_address",
    "list_rooms",
    "parse_server_address",
]
