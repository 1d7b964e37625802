"""The README's server flag table lists exactly the flags of ``ocm server``, and its
limit rows are the ones :func:`ocm.server.limits.markdown_rows` makes from ``Limits``."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ocm.cli import build_parser
from ocm.server.limits import flags, markdown_rows

README = Path(__file__).resolve().parents[1] / "README.md"


def server_parser() -> argparse.ArgumentParser:
    commands = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    parser: argparse.ArgumentParser = commands.choices["server"]
    return parser


def server_section() -> str:
    text = README.read_text(encoding="utf-8")
    return text.split("## Running a server", 1)[1].split("\n## ", 1)[0]


def test_server_flag_table_matches_the_parser() -> None:
    section = server_section()
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
        if isinstance(actual, bool):  # a switch: --allow-plaintext
            assert default == ("on" if actual else "off"), flag
        elif isinstance(actual, int | float):
            assert float(default) == float(actual), flag
        else:
            assert default == actual, flag


def test_limit_rows_are_generated_from_the_limits() -> None:
    """To refresh them, paste in one block what this prints: ``PYTHONPATH=src python -c
    'from ocm.server.limits import markdown_rows; print(*markdown_rows(), sep="\\n")'``."""
    section = server_section()
    options = tuple(f"| `{flag.option}` |" for flag in flags())
    assert [line for line in section.splitlines() if line.startswith(options)] == markdown_rows()
    assert "\n".join(markdown_rows()) in section  # one block, not scattered
