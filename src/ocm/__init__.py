"""OCM, the Online Chat Messenger: a self-hosted, terminal-first chat server and client.

Layers, each its own module (see docs/architecture.md):

1. :mod:`ocm.protocol` -- pure encode/decode of TCRP messages and relay datagrams;
2. :mod:`ocm.registry` and :mod:`ocm.relay` -- rooms, members, tokens and the relay
   rules, with time passed in and no sockets;
3. :mod:`ocm.tcp`, :mod:`ocm.udp`, :mod:`ocm.server` and :mod:`ocm.client` -- thin
   asyncio adapters;
4. :mod:`ocm.cli` -- the ``ocm`` command.
"""

__version__ = "0.1.0"
