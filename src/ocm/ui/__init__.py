"""The user interfaces on top of the client library (:mod:`ocm.client`).

* :mod:`ocm.ui.chatview` -- what every interface shows: lines, colours, sanitising,
  the input commands (``/me``, ``/who``, ``/exit``); no terminal I/O;
* :mod:`ocm.ui.terminal` -- the interactive chat on a terminal (prompt_toolkit);
* :mod:`ocm.ui.pipe` -- the piped chat: stdin lines in, one stdout line per event.

Nothing here is needed by a script that uses :mod:`ocm.client`.
"""
