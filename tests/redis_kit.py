"""A real redis-server for the cluster tests: one process, on a free loopback port.

The cluster tests run server nodes against the same Redis an operator runs, not a fake:
the Lua scripts, the stream and the ``ocm:bus`` channel are Redis' own. Each test gets a
server of its own (the ``redis_server`` fixture in tests/cluster/conftest.py), with no
persistence, so ``restart()`` is a Redis that lost everything, as after a crash without a
dump. Only loopback; every wait is bounded.

redis-server is not a Python package: .ci/run and the GitHub workflow install it. Without
it the fixture fails with :data:`NOT_FOUND`, never skips, so a missing install cannot pass
for a green run. Windows has none: the cluster tests are marked ``posix``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType
from typing import IO, Self

LOOPBACK = "127.0.0.1"
NOT_FOUND = (
    "redis-server not found: install it (Debian: apt-get install redis-server); .ci/run does this"
)
# A redis-server without persistence answers within milliseconds; five seconds is for a
# loaded CI machine, and still fails a test long before pytest's timeout.
START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
PING = b"*1\r\n$4\r\nPING\r\n"


def free_port() -> int:
    """A TCP port free on loopback now (another process may take it before we use it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def answers_ping(port: int, timeout: float = 0.2) -> bool:
    """Whether a Redis listens on ``port``: ``+PONG``, or ``-NOAUTH`` when it has a password."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as connection:
            connection.sendall(PING)
            reply = connection.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


class RedisServer:
    """One redis-server process: ``start()``, ``stop()``, ``restart()``, or ``with``.

    ``password`` sets ``--requirepass``. The port is chosen on the first start and kept
    by ``restart()``, so clients reconnect to the same ``url``.
    """

    def __init__(self, password: str | None = None, extra: tuple[str, ...] = ()) -> None:
        self.password = password
        self.extra = extra  # more redis-server options (TLS ones, say)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """What ``ocm server --redis`` takes (without the password: pass that apart)."""
        assert self.port, "start() the server first"
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Run redis-server and return once it answers PING; raise if it does not in time."""
        executable = shutil.which("redis-server")
        if executable is None:
            raise FileNotFoundError(NOT_FOUND)
        if self.running:
            return
        if not self.port:
            self.port = free_port()
        command = [executable, "--port", str(self.port), "--bind", LOOPBACK]
        command += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        command += ["--loglevel", "warning"]
        if self.password is not None:
            command += ["--requirepass", self.password]
        command += self.extra
        # Closed by stop(): it lives as long as the process writing to it.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not answers_ping(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                output = self._output()
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{output}")
            time.sleep(0.01)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``STOP_TIMEOUT``. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        """Stop and start on the same port: without persistence, every key is gone."""
        self.stop()
        self.start()

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
