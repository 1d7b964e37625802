"""Argument types the ``ocm`` commands share: each parses one flag value or says why not.

Standard library only: the client commands use them without loading the server. The
server's limit flags take theirs from :mod:`ocm.server.limits`, with the limits.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["count", "port", "positive_float"]


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"not a port number: {text}")
    return value


def count(most: int) -> Callable[[str], int]:
    """The type of a flag that takes a whole number from 0 to ``most``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not 0 <= value <= most:
            raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {most}, got {text}")
        return value

    return parse
