"""OCM, the Online Chat Messenger: a self-hosted, terminal-first chat server and client.

The packages are the layers (see docs/architecture.md):

* :mod:`ocm.wire` and :mod:`ocm.errors` -- what both ends agree on, with no I/O: TCRP
  messages, relay datagrams, the delivery extension, the fixed texts, the error tree;
* :mod:`ocm.server` -- the sans-I/O cores (registry, relay, history, guards) under the
  asyncio adapters (TCP, UDP) and the app that wires them;
* :mod:`ocm.client` -- the library for scripts and bots: a sans-I/O session under the
  :class:`~ocm.client.ChatClient` adapter. It never imports :mod:`ocm.server`;
* :mod:`ocm.cli` and :mod:`ocm.ui` -- the ``ocm`` command, the terminal and pipe chats.
"""

__version__ = "0.1.0"
