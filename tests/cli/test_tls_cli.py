"""Section 5 through the ``ocm`` command: what a user sees on first contact, on a
changed key, with --fingerprint and --insecure; ``ocm server``'s identity flags. Real
processes; each test has a config directory (so a known_servers file) of its own."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from ocm.cli import build_parser
from ocm.server.identity import load_identity
from tests.cli.kit import ocm, server_process, spawn


def _env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(tmp_path / "config")}


def _known(tmp_path: Path) -> Path:
    return tmp_path / "config" / "ocm" / "known_servers"


def _server_key() -> str:
    """The session's server key (tests/conftest.py's data directory): every server
    process of these tests uses it."""
    return load_identity().fingerprint


async def test_first_contact_is_told_once_and_remembered(tmp_path: Path) -> None:
    async with server_process() as port:
        where = f"127.0.0.1:{port}"
        first = await ocm("rooms", "--server", where, env=_env(tmp_path))
        key = _server_key()
        assert (first.code, first.err) == (
            0,
            f"ocm: first contact with {where}; its key {key} is now remembered in "
            f"{_known(tmp_path)}\n",
        )
        assert first.out.startswith("no rooms on")
        assert _known(tmp_path).read_text(encoding="utf-8") == f"{where} {key}\n"
        again = await ocm("rooms", "--server", where, env=_env(tmp_path))
        assert (again.code, again.err) == (0, "")


async def test_a_changed_key_exits_5_and_fingerprint_accepts_the_new_one(tmp_path: Path) -> None:
    old = load_identity(tmp_path / "old-server").fingerprint
    async with server_process() as port:
        where = f"127.0.0.1:{port}"
        new = _server_key()
        _known(tmp_path).parent.mkdir(parents=True)
        _known(tmp_path).write_text(f"{where} {old}\n", encoding="utf-8")
        refused = await ocm("join", "lobby", "--name", "bob", "--server", where, env=_env(tmp_path))
        assert refused.code == 5
        assert refused.err.count("\n") == 1 and refused.err.startswith("ocm: the key of server")
        assert old in refused.err and new in refused.err
        assert f"{_known(tmp_path)}, line 1" in refused.err
        assert f"run again with --fingerprint {new} to accept it" in refused.err

        wrong = await ocm("rooms", "--server", where, "--fingerprint", old, env=_env(tmp_path))
        assert wrong.code == 5 and "as --fingerprint says" in wrong.err
        assert _known(tmp_path).read_text(encoding="utf-8") == f"{where} {old}\n"

        accepted = await ocm("rooms", "--server", where, "--fingerprint", new, env=_env(tmp_path))
        assert (accepted.code, accepted.err) == (0, "")
        assert _known(tmp_path).read_text(encoding="utf-8") == f"{where} {new}\n"
        later = await ocm("rooms", "--server", where, env=_env(tmp_path))
        assert (later.code, later.err) == (0, "")


async def test_a_fingerprint_that_is_not_one_is_a_usage_error(tmp_path: Path) -> None:
    result = await ocm("rooms", "--fingerprint", "SHA256:nope", env=_env(tmp_path))
    assert result.code == 2
    assert "not a key fingerprint: SHA256:nope" in result.err
    both = await ocm(
        "--insecure", "rooms", "--fingerprint", load_identity().fingerprint, env=_env(tmp_path)
    )
    assert (both.code, both.err) == (2, "ocm: --insecure and --fingerprint exclude each other\n")


async def test_insecure_is_refused_by_a_server_that_wants_tls(tmp_path: Path) -> None:
    async with server_process() as port:
        where = f"127.0.0.1:{port}"
        result = await ocm("rooms", "--insecure", "--server", where, env=_env(tmp_path))
    assert result.code == 1
    assert result.err == (
        "ocm: this server accepts encrypted clients only (TLS); a plaintext client needs a "
        "server started with --allow-plaintext\n"
    )
    assert not _known(tmp_path).exists()


async def test_ocm_server_says_in_one_line_what_is_wrong_with_its_certificate(
    tmp_path: Path,
) -> None:
    lonely = await ocm("server", "--port", "0", "--cert", str(tmp_path / "x.crt"))
    assert (lonely.code, lonely.err) == (
        1,
        "ocm server: --cert and --key go together: give both, or neither\n",
    )
    mine = load_identity(tmp_path / "mine")
    missing = await ocm(
        "server", "--port", "0", "--cert", str(tmp_path / "x.crt"), "--key", str(mine.key_file)
    )
    assert missing.code == 1 and missing.err.startswith("ocm server: cannot read ")
    assert missing.err.count("\n") == 1


def test_insecure_and_fingerprint_belong_to_every_client_command_and_to_ocm_alone() -> None:
    parser = build_parser()
    key = load_identity().fingerprint
    assert (parser.parse_args([]).insecure, parser.parse_args([]).fingerprint) == (False, None)
    for command in (["rooms"], ["join", "lobby"], ["create", "lobby"]):
        args = parser.parse_args(command)
        assert (args.insecure, args.fingerprint) == (False, None), command
        assert parser.parse_args([*command, "--insecure"]).insecure, command
        assert parser.parse_args(["--insecure", *command]).insecure, command
        assert parser.parse_args([*command, "--fingerprint", key]).fingerprint == key
        assert parser.parse_args(["--fingerprint", key, *command]).fingerprint == key


@asynccontextmanager
async def server_at(port: int, data_dir: Path) -> AsyncIterator[None]:
    """``ocm server`` on 127.0.0.1:``port`` with its key in ``data_dir``."""
    process = await spawn(
        "server", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)
    )
    try:
        assert process.stderr is not None
        async with asyncio.timeout(10):
            line = (await process.stderr.readline()).decode()
        assert "listening" in line, line
        yield
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


def free_port() -> int:
    """A port free for TCP and UDP both, as ocm server wants them."""
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        port = int(tcp.getsockname()[1])
        udp.bind(("127.0.0.1", port))
    return port


async def test_a_server_restarted_with_a_new_data_dir_is_refused(tmp_path: Path) -> None:
    """The real thing: the same address, a server with another key."""
    port = free_port()
    where = f"127.0.0.1:{port}"
    async with server_at(port, tmp_path / "first"):
        met = await ocm("rooms", "--server", where, env=_env(tmp_path))
        assert met.code == 0 and "first contact" in met.err
    async with server_at(port, tmp_path / "second"):
        refused = await ocm("rooms", "--server", where, env=_env(tmp_path))
    old = load_identity(tmp_path / "first").fingerprint
    new = load_identity(tmp_path / "second").fingerprint
    assert refused.code == 5 and refused.out == ""
    assert f"its key was {old}" in refused.err and f"now it is {new}" in refused.err
    assert f"--fingerprint {new} to accept it" in refused.err
