"""Linux, macOS and Windows: nothing in OCM may work on one of them only.

Two kinds of checks:

* static: ``tools/portability.py`` reads the sources with :mod:`ast` (see its
  docstring for the rules); here it must find nothing in src/ and tests/, and must find
  what it is meant to find in small examples;
* at run time: the signal fallback Windows needs, Ctrl-C on ``ocm server``, a relay
  that keeps going when a member vanishes (Windows reports that as a reset), and server
  logs with non-ASCII names on an ASCII console.

``.ci/run`` adds ``mypy --platform win32 src`` and ``--platform darwin src``:
type-checking the package's platform-guarded code as the other systems see it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tools.portability import SRC, TESTS, check_source, check_tree

from ocm import cli
from ocm.cli import server as servercli
from ocm.server.app import STOP_SIGNALS, ServerConfig, on_stop_signals, serve
from ocm.wire import CreateRoom, JoinRoom, Kind
from tests.kit import LOOPBACK, MS, UdpPeer, admit, enter, running_server

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------
# Static checks
# ---------------------------------------------------------------------------


def test_the_package_has_no_platform_only_code_outside_guards() -> None:
    assert check_tree(SRC, tests=False) == []


def test_posix_only_tests_are_marked_and_skipped_on_windows_with_a_reason() -> None:
    assert check_tree(TESTS, tests=True) == []


@pytest.mark.parametrize(
    "source",
    [
        "import fcntl",
        "from termios import tcgetattr",
        "import pexpect",
        "import msvcrt",
        "import os\nos.fork()",
        "import signal\nsignal.signal(signal.SIGKILL, None)",
        "from signal import SIGHUP",
        "import select\nselect.epoll()",
        "open('/proc/self/status', encoding='utf-8')",
        "def serve(loop):\n    loop.add_signal_handler(2, print)",
        "try:\n    loop.add_signal_handler(2, print)\nexcept RuntimeError:\n    pass",
        "open('notes.txt')",
        "from pathlib import Path\nPath('x').read_text()",
        "open('notes.txt', 'w')",
        "log_path.open('w')",
        "def kill(p):\n    if os.name == 'nt':\n        print()\n    os.kill(p, signal.SIGKILL)",
        "def rss():\n    return open('/proc/self/status', encoding='ascii').read()",
    ],
)
def test_the_checker_finds_platform_only_code(source: str) -> None:
    assert check_source(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import sys\nif sys.platform != 'win32':\n    import fcntl",
        "try:\n    import uvloop\nexcept ImportError:\n    uvloop = None",
        "try:\n    import uvloop\nexcept ImportError:\n    pass\nelse:\n    uvloop.install()",
        "import os\nif os.name == 'posix':\n    os.fork()",
        "try:\n    loop.add_signal_handler(2, print)\nexcept NotImplementedError:\n    pass",
        "import signal\nkill = signal.SIGKILL if sys.platform != 'win32' else signal.SIGTERM",
        "import signal\nterm = getattr(signal, 'SIGTERM', None)",
        "open('data.bin', 'rb')",
        "open('notes.txt', encoding='utf-8')",
        "def f():\n    '''Reads /proc/self on Linux only.'''",
        "def kill(p):\n    if os.name == 'nt':\n        return\n    os.kill(p, signal.SIGKILL)",
        "def rss(p=Path('/proc/1/stat')):\n    return p.read_text('ascii') if p.exists() else ''",
        "log_path.open('wb')",
        "peer = UdpPeer.open(9001)",
    ],
)
def test_the_checker_accepts_guarded_code(source: str) -> None:
    assert check_source(source) == []


def test_the_checker_wants_posix_tests_skipped_on_windows_with_a_reason() -> None:
    unskipped = "import pytest\n@pytest.mark.posix\ndef test_pty():\n    import pty\n"
    no_reason = (
        "import pytest, sys\n@pytest.mark.posix\n"
        "@pytest.mark.skipif(sys.platform == 'win32')\ndef test_pty():\n    import pty\n"
    )
    unmarked = "import os\ndef test_fork():\n    os.fork()\n"
    skipped = (
        "import pytest, sys\nposix = [pytest.mark.posix, pytest.mark.skipif("
        "sys.platform == 'win32', reason='no pty on Windows')]\n"
        "@pytest.mark.parametrize('n', [1])\ndef test_a(n):\n    pass\n"
        "pytestmark = posix\ndef test_pty():\n    import pty\n"
    )
    in_a_call = "from pathlib import Path\ndef test_rss():\n    Path(f'/proc/{1}/stat')\n"
    as_data = "def test_send():\n    assert parse('//etc/hosts') == Command('send', '/etc/hosts')\n"
    assert check_source(in_a_call, tests=True) != []
    assert check_source(as_data, tests=True) == []
    assert check_source(unskipped, tests=True) != []
    assert check_source(no_reason, tests=True) != []
    assert check_source(unmarked, tests=True) != []
    assert check_source(skipped, tests=True) == []


# ---------------------------------------------------------------------------
# Signals and Ctrl-C
# ---------------------------------------------------------------------------


def _listening_port(text: str) -> int:
    match = re.search(r"TCP port (\d+)", text)
    assert match, text
    return int(match[1])


async def test_without_add_signal_handler_a_plain_handler_stops_the_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What happens on Windows, where the loop has no add_signal_handler."""
    loop = asyncio.get_running_loop()

    def unsupported(*args: object) -> None:
        raise NotImplementedError

    monkeypatch.setattr(loop, "add_signal_handler", unsupported)
    caplog.set_level(logging.INFO, logger="ocm.server")
    before = signal.getsignal(signal.SIGINT)
    # Plaintext allowed: the test speaks raw TCRP.
    task = asyncio.create_task(serve(ServerConfig(host=LOOPBACK, port=0, allow_plaintext=True)))
    try:
        async with asyncio.timeout(2000 * MS):
            while signal.getsignal(signal.SIGINT) is before:
                await asyncio.sleep(5 * MS)
        port = _listening_port(caplog.text)
        admission = await admit(port, CreateRoom("lobby", "alice"))
        peer = await UdpPeer.open(admission.udp_port)
        peer.send("lobby", admission.token)
        await asyncio.sleep(20 * MS)

        signal.raise_signal(signal.SIGINT)  # Ctrl-C

        async with asyncio.timeout(2000 * MS):
            await task
        closed = await peer.recv()
        assert (closed.kind, closed.text) == (Kind.CLOSED, "server shutting down")
        peer.close()
    finally:
        if not task.done():
            task.cancel()
    assert signal.getsignal(signal.SIGINT) is before  # the handler was put back


def test_stop_signals_off_the_main_thread_install_nothing_and_do_not_fail() -> None:
    results: list[object] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        try:
            restore = on_stop_signals(loop, lambda: None)
            restore()
            results.append("ok")
        except Exception as error:  # reported below, with its type
            results.append(error)
        finally:
            loop.close()

    before = {
        name: signal.getsignal(getattr(signal, name))
        for name in STOP_SIGNALS
        if hasattr(signal, name)
    }
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)
    assert results == ["ok"]
    after = {name: signal.getsignal(getattr(signal, name)) for name in before}
    assert after == before


def test_ctrl_c_before_the_server_is_up_exits_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def interrupted(config: ServerConfig) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(servercli, "serve", interrupted)
    assert cli.main(["server", "--port", "0", "--host", LOOPBACK]) == 130
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err


def _server_process(*extra_env: tuple[str, str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **dict(extra_env)}
    return subprocess.Popen(
        # --allow-plaintext: the tests speak raw TCRP.
        [
            sys.executable,
            "-m",
            "ocm",
            "server",
            "--host",
            LOOPBACK,
            "--port",
            "0",
            "--allow-plaintext",
        ],
        stderr=subprocess.PIPE,
        env=env,
    )


async def _first_line(process: subprocess.Popen[bytes]) -> str:
    assert process.stderr is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stderr.readline), 10)
    return line.decode("ascii", "replace")


@pytest.mark.posix
@pytest.mark.skipif(sys.platform == "win32", reason="a console Ctrl-C cannot be sent on Windows")
async def test_ctrl_c_stops_ocm_server_cleanly() -> None:
    process = _server_process()
    try:
        port = _listening_port(await _first_line(process))
        admission = await admit(port, CreateRoom("lobby", "alice"))
        peer = await UdpPeer.open(admission.udp_port)
        peer.send("lobby", admission.token)
        await asyncio.sleep(50 * MS)

        process.send_signal(signal.SIGINT)

        closed = await peer.recv(timeout=5)
        assert (closed.kind, closed.text) == (Kind.CLOSED, "server shutting down")
        assert await asyncio.to_thread(process.wait, 10) == 0
        assert process.stderr is not None
        log = process.stderr.read().decode("ascii", "replace")
        assert "Traceback" not in log and "KeyboardInterrupt" not in log
        assert "OCM server stopped" in log
        peer.close()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.mark.skipif(sys.platform != "win32", reason="Ctrl-Break is a Windows console event")
async def test_ctrl_break_stops_ocm_server_cleanly_on_windows() -> None:
    """Windows' loop has no add_signal_handler: the signal.signal fallback does the work."""
    if sys.platform != "win32":
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "ocm", "server", "--host", LOOPBACK, "--port", "0"],
        stderr=subprocess.PIPE,
        env=env,
        # Its own process group, so the Ctrl-Break reaches the server and not pytest.
        creationflags=subprocess.CREATE_NEW_PROCESS_GROUP,
    )
    try:
        port = _listening_port(await _first_line(process))
        admission = await admit(port, CreateRoom("lobby", "alice"))
        peer = await UdpPeer.open(admission.udp_port)
        peer.send("lobby", admission.token)
        await asyncio.sleep(50 * MS)
        try:
            process.send_signal(signal.CTRL_BREAK_EVENT)
        except OSError as error:  # no console to send it through
            pytest.skip(f"cannot send Ctrl-Break here: {error}")

        closed = await peer.recv(timeout=5)
        assert (closed.kind, closed.text) == (Kind.CLOSED, "server shutting down")
        assert await asyncio.to_thread(process.wait, 10) == 0
        peer.close()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


# ---------------------------------------------------------------------------
# UDP: a member that vanishes
# ---------------------------------------------------------------------------


async def test_a_member_that_vanishes_does_not_stop_the_relay() -> None:
    """Relaying to a closed port brings an ICMP "port unreachable" back.

    Linux and macOS do not report it on an unconnected socket; Windows reports it as a
    reset on the next receive, which stops asyncio's proactor from reading the socket at
    all unless the server turns that report off (ocm.server, SIO_UDP_CONNRESET).
    """
    async with running_server() as server:
        alice = await enter(server, CreateRoom("lobby", "alice"))
        bob = await enter(server, JoinRoom("lobby", "bob"))
        carol = await enter(server, JoinRoom("lobby", "carol"))
        await alice.peer.drain()
        await bob.peer.drain()
        carol.peer.close()  # gone without LEAVE_ROOM: the server still relays to her

        for n in range(3):
            alice.say(f"into the void {n}")
            assert (await bob.peer.recv()).text == f"into the void {n}"
            await asyncio.sleep(20 * MS)  # time for the ICMP error to come back
            bob.say(f"still here {n}")
            texts = [(await alice.peer.recv()).text for _ in range(2)]
            assert texts == [f"into the void {n}", f"still here {n}"]
            assert (await bob.peer.recv()).text == f"still here {n}"
        alice.peer.close()
        bob.peer.close()


# ---------------------------------------------------------------------------
# Console encoding
# ---------------------------------------------------------------------------


async def test_server_logs_non_ascii_names_on_an_ascii_console() -> None:
    """A console that cannot show the name gets an escape, never a logging error."""
    process = _server_process(("PYTHONIOENCODING", "ascii:strict"), ("PYTHONUTF8", "0"))
    try:
        port = _listening_port(await _first_line(process))
        await admit(port, CreateRoom("café ☕", "zoë"))
        await asyncio.sleep(50 * MS)
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)
    assert process.stderr is not None
    log = process.stderr.read().decode("ascii")  # every byte is ASCII
    assert "Logging error" not in log and "Traceback" not in log
    assert 'room "caf\\xe9 \\u2615" created by zo\\xeb' in log
