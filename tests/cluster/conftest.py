"""The cluster tests' fixtures: a real redis-server per test (tests/redis_kit.py).

Without redis-server the fixture fails with one line saying how to install it; it never
skips, so a machine without it cannot report the cluster as tested.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.redis_kit import NOT_FOUND, RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A running redis-server on a free loopback port, no password; stopped after the test."""
    if shutil.which("redis-server") is None:
        pytest.fail(NOT_FOUND, pytrace=False)
    with RedisServer() as server:
        yield server
