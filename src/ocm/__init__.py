"""OCM, the Online Chat Messenger: a self-hosted, terminal-first chat server and client.

Layers, each its own module (see docs/architecture.md):

1. :mod:`ocm.wire` (and :mod:`ocm.errors`) -- pure encode/decode of TCRP messages
   and relay datagrams;
2. the cores, with time passed in and no sockets: :mod:`ocm.server.registry` (rooms, members,
   tokens, expiry), :mod:`ocm.server.relay` (what to do with each datagram) and
   :mod:`ocm.client.session` (a client's view of one room);
3. thin asyncio adapters: :mod:`ocm.server.tcp`, :mod:`ocm.server.udp` and :mod:`ocm.server` on the
   server side, :mod:`ocm.client` (the library for scripts and bots) on the client side;
4. the ``ocm`` command: :mod:`ocm.cli` dispatching to :mod:`ocm.cli.server` and
   :mod:`ocm.cli.client`, with :mod:`ocm.ui.terminal`, :mod:`ocm.ui.pipe` and
   :mod:`ocm.ui.chatview` for the interactive and piped client.
"""

__version__ = "0.1.0"
