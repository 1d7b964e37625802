"""The OCM relay benchmark: ``python -m bench.run`` (see docs/performance.md)."""
