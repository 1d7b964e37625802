"""Argument types the ``ocm`` commands share: each parses one flag value or says why not.

Standard library only: the client commands use them without loading the server.
"""

from __future__ import annotations

import argparse

__all__ = ["port", "positive_float", "positive_int"]


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"not a port number: {text}")
    return value
