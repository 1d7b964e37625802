"""No test writes to the real home directory: the whole session gets a temporary one.

The client remembers server keys in ``$XDG_CONFIG_HOME/ocm/known_servers`` and the
server keeps its key in ``$XDG_DATA_HOME/ocm`` (section 5 of docs/protocol.md), so both,
and everything derived from the home directory (macOS, Windows), point into a temporary
directory, for this process and every ``ocm`` process a test starts.

Set in ``pytest_configure``, before any test module is imported, rather than in a
session fixture: some modules copy ``os.environ`` when they load (tests/cli/kit.py's
``ENV``), and a fixture would come too late for those copies. The session fixture below
only hands the directory to the tests that want it.

One server key for the session: every test server (tests/kit.py's ``running_server``,
the server processes) uses this data directory, so a port that a later test's server
gets again shows the key the clients remembered for it. Tests of a changed key use a
data directory (and a known_servers file) of their own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_VARIABLES = ("HOME", "USERPROFILE", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "APPDATA", "LOCALAPPDATA")
_saved: dict[str, str | None] = {}
_home: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    home = Path(tempfile.mkdtemp(prefix="ocm-test-home-"))
    _home.append(home)
    places = {
        "HOME": home,
        "USERPROFILE": home,
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "APPDATA": home / "AppData" / "Roaming",
        "LOCALAPPDATA": home / "AppData" / "Local",
    }
    for name in _VARIABLES:
        _saved[name] = os.environ.get(name)
        os.environ[name] = str(places[name])


def pytest_unconfigure(config: pytest.Config) -> None:
    for name, value in _saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    for home in _home:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def test_home() -> Path:
    """The session's home directory (XDG_CONFIG_HOME, XDG_DATA_HOME are under it)."""
    assert _home and os.environ["HOME"] == str(_home[-1]), "pytest_configure did not run"
    return _home[-1]
