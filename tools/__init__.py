"""Tooling for OCM's own checks (not part of the package)."""
