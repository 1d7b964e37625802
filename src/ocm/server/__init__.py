"""The OCM server: sans-I/O cores first, then the asyncio adapters, then the app.

* cores, with ``now`` passed in and no sockets: :mod:`ocm.server.registry` (rooms,
  members, tokens, expiry, host rules), :mod:`ocm.server.relay` (what to do with each
  datagram), :mod:`ocm.server.guards` (rate limiters),
  :mod:`ocm.server.passwords` (scrypt hashes) and :mod:`ocm.server.exposition` (counts
  as Prometheus text);
* adapters: :mod:`ocm.server.tcp` (TCRP connections), :mod:`ocm.server.udp` (the relay
  socket and batched sending), :mod:`ocm.server.metrics` (the ``--metrics-port``
  endpoint);
* :mod:`ocm.server.app`: :class:`OCMServer` wires them together and owns the life cycle;
  :func:`serve` runs one until SIGINT or SIGTERM.

Nothing in :mod:`ocm.client` imports from here: the two share only :mod:`ocm.wire`.
"""

from ocm.server.app import OCMServer, ServerConfig, serve

__all__ = ["OCMServer", "ServerConfig", "serve"]
