"""Rooms across several server nodes that share one Redis (``ocm server --redis``).

* :mod:`~ocm.server.cluster.entries` -- what travels between nodes (pure codec);
* :mod:`~ocm.server.cluster.scripts` -- the Lua scripts that change rooms in the store;
* :mod:`~ocm.server.cluster.backend` -- the interface the TCP handler uses, and its
  embedded implementation (a server on its own);
* :mod:`~ocm.server.cluster.redis_backend` -- the cluster's, on Redis (the ``cluster``
  extra: ``pip install "ocm[cluster]"``), imported only when ``--redis`` is given.

docs/architecture.md (section Cluster) draws how a line goes from one node to all.
"""
