"""The README's server flag table lists exactly the flags of ``ocm server``."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ocm.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def server_parser() -> argparse.ArgumentParser:
    commands = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    parser: argparse.ArgumentParser = commands.choices["server"]
    return parser


def test_server_flag_table_matches_the_parser() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Running a server", 1)[1].split("\n## ", 1)[0]
    documented = dict(re.findall(r"^\| `(--[a-z-]+)` \| `?([^|`]*)`? \|", section, re.M))
    parser = server_parser()
    flags = {
        option: action
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert set(documented) == set(flags)
    for flag, default in documented.items():
        actual = flags[flag].default
        if actual is None:
            continue  # --udp-port: "the TCP port"
        if isinstance(actual, int | float):
            assert float(default) == float(actual), flag
        else:
            assert default == actual, flag
