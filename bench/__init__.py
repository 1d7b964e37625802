"""The OCM benchmarks (see docs/performance.md): ``python -m bench.run`` (the relay),
``python -m bench.relay_cost`` (the relay core alone, before and after a change) and
``python -m bench.lossy`` (delivery on a lossy network)."""
