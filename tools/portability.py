"""The portability checker: platform-only code outside a guard, found by reading the source.

OCM runs on Linux, macOS and Windows. This tool reads Python sources with :mod:`ast`:
they must not import a POSIX-only (or Windows-only) module, touch a platform-only
attribute (``os.fork``, ``signal.SIGKILL``, ...), name a Linux path (``/proc``), call
``loop.add_signal_handler`` without a fallback, or open a text file without an
encoding -- except on a guarded path: under ``if sys.platform ...``, in a ``try`` that
catches the error the other platforms raise, or (in tests) in a test marked ``posix``
and skipped on Windows with a reason.

    python -m tools.portability            # src/ and tests/; exit 1 on a finding

``tests/test_portability.py`` runs it on the tree and on small examples of each rule.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Finding", "PortabilityChecker", "check_source", "check_tree", "main"]

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "ocm"
TESTS = ROOT / "tests"

# Modules that exist only on POSIX systems, or whose wheels install only there
# (pyproject.toml: uvloop is not installed on Windows; pexpect has no Windows pty).
POSIX_ONLY_MODULES = frozenset(
    {
        "crypt",
        "curses",
        "fcntl",
        "grp",
        "nis",
        "pexpect",
        "posix",
        "pty",
        "ptyprocess",
        "pwd",
        "readline",
        "resource",
        "spwd",
        "syslog",
        "termios",
        "tty",
        "uvloop",
    }
)
WINDOWS_ONLY_MODULES = frozenset({"_overlapped", "_winapi", "msvcrt", "nt", "winreg", "winsound"})
# module -> attributes missing on at least one of Linux, macOS and Windows.
PLATFORM_ATTRIBUTES: dict[str, frozenset[str]] = {
    "os": frozenset(
        {
            "O_NONBLOCK",
            "WNOHANG",
            "chown",
            "fchown",
            "fork",
            "forkpty",
            "getegid",
            "geteuid",
            "getgid",
            "getgroups",
            "getloadavg",
            "getpgid",
            "getuid",
            "killpg",
            "lchown",
            "mkfifo",
            "nice",
            "openpty",
            "pipe2",
            "posix_spawn",
            "register_at_fork",
            "sched_getaffinity",
            "sched_setaffinity",
            "setgid",
            "setpgrp",
            "setsid",
            "setuid",
            "statvfs",
            "sync",
            "ttyname",
            "uname",
            "wait3",
            "wait4",
        }
    ),
    "signal": frozenset(
        {
            "CTRL_BREAK_EVENT",
            "CTRL_C_EVENT",
            "ITIMER_REAL",
            "SIGALRM",
            "SIGBREAK",
            "SIGCHLD",
            "SIGCONT",
            "SIGHUP",
            "SIGKILL",
            "SIGPIPE",
            "SIGQUIT",
            "SIGSTOP",
            "SIGTSTP",
            "SIGTTIN",
            "SIGTTOU",
            "SIGUSR1",
            "SIGUSR2",
            "SIGWINCH",
            "SIG_BLOCK",
            "SIG_SETMASK",
            "SIG_UNBLOCK",
            "alarm",
            "getitimer",
            "pause",
            "pthread_kill",
            "pthread_sigmask",
            "setitimer",
            "siginterrupt",
            "sigpending",
            "sigwait",
        }
    ),
    "socket": frozenset(
        {
            "AF_UNIX",
            "SIO_KEEPALIVE_VALS",
            "SIO_LOOPBACK_FAST_PATH",
            "SIO_RCVALL",
            "SO_EXCLUSIVEADDRUSE",
            "SO_REUSEPORT",
            "fromshare",
        }
    ),
    "select": frozenset({"devpoll", "epoll", "kevent", "kqueue", "poll"}),
    "asyncio": frozenset(
        {
            "ProactorEventLoop",
            "WindowsProactorEventLoopPolicy",
            "WindowsSelectorEventLoopPolicy",
            "get_child_watcher",
            "set_child_watcher",
        }
    ),
    "ctypes": frozenset({"FormatError", "GetLastError", "WINFUNCTYPE", "WinDLL", "WinError"}),
    "sys": frozenset({"getwindowsversion", "winver"}),
    "time": frozenset({"clock_gettime", "tzset"}),
}
# Event-loop methods that Windows' proactor loop does not implement (it raises
# NotImplementedError): each call needs a fallback.
LOOP_METHODS_WITHOUT_WINDOWS = frozenset(
    {"add_reader", "add_signal_handler", "add_writer", "remove_reader", "remove_writer"}
)
# Written without their first "/" so this file does not name them itself.
LINUX_PATHS = tuple("/" + p for p in ("proc", "sys/", "dev/", "etc/", "tmp/", "var/run"))
# Calls that make reading such a path optional: the code checks it exists first.
PATH_PROBES = frozenset({"exists", "is_dir", "is_file", "isdir", "isfile"})
# Calls that take a path: in tests, a Linux path passed to one of them is a dependency.
PATH_FUNCTIONS = frozenset(
    {"Path", "PosixPath", "PurePath", "glob", "listdir", "open", "readlink", "scandir", "stat"}
)
# Errors whose handler makes a try a guard: what the missing thing raises elsewhere.
GUARD_ERRORS = frozenset(
    {"AttributeError", "ImportError", "ModuleNotFoundError", "NotImplementedError", "OSError"}
)
GUARD_WORDS = ("platform", "os.name", "hasattr(", "win32", "darwin", "linux")


@dataclass(frozen=True, slots=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _mark_names(node: ast.expr, aliases: dict[str, list[ast.expr]]) -> Iterator[ast.expr]:
    """The ``pytest.mark.X`` expressions a decorator or ``pytestmark`` value stands for."""
    if isinstance(node, ast.Name) and node.id in aliases:
        for item in aliases[node.id]:
            yield from _mark_names(item, aliases)
    elif isinstance(node, ast.List | ast.Tuple):
        for item in node.elts:
            yield from _mark_names(item, aliases)
    else:
        yield node


def _is_posix_mark(node: ast.expr) -> bool:
    return ast.unparse(node) == "pytest.mark.posix"


def _skips_on_windows(node: ast.expr) -> bool:
    """``pytest.mark.skipif(<condition about the platform>, reason=...)``."""
    if not (isinstance(node, ast.Call) and ast.unparse(node.func) == "pytest.mark.skipif"):
        return False
    condition = ast.unparse(node.args[0]) if node.args else ""
    has_reason = any(k.arg == "reason" for k in node.keywords)
    return has_reason and any(word in condition for word in GUARD_WORDS)


def _exits_on_other_platforms(statement: ast.stmt) -> bool:
    """``if <platform test>:`` whose body ends in return, raise or pytest.skip()."""
    if not isinstance(statement, ast.If) or statement.orelse:
        return False
    if not any(word in ast.unparse(statement.test) for word in GUARD_WORDS):
        return False
    last = statement.body[-1]
    if isinstance(last, ast.Return | ast.Raise):
        return True
    return (
        isinstance(last, ast.Expr)
        and isinstance(last.value, ast.Call)
        and ast.unparse(last.value.func) in ("pytest.skip", "sys.exit")
    )


class PortabilityChecker(ast.NodeVisitor):
    """Walks one module; collects every platform-only use outside a guarded path."""

    def __init__(self, path: str, *, tests: bool) -> None:
        self.path = path
        self.tests = tests
        self.findings: list[Finding] = []
        self._guards = 0  # how many guarded paths we are inside
        self._docstrings: set[int] = set()
        self._aliases: dict[str, list[ast.expr]] = {}
        self._module_marks: list[ast.expr] = []
        self._probing: list[bool] = [False]  # per function: does it check paths exist?

    def check(self, tree: ast.Module) -> list[Finding]:
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                first = node.body[0] if node.body else None
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    self._docstrings.add(id(first.value))
        for statement in tree.body:
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target = statement.targets[0]
                if isinstance(target, ast.Name):
                    self._aliases[target.id] = [statement.value]
                    if target.id == "pytestmark":
                        self._module_marks = list(_mark_names(statement.value, self._aliases))
        if self._module_marks:
            self._check_marks(self._module_marks, 1, "the module")
        self.visit(tree)
        return self.findings

    def _report(self, node: ast.AST, what: str) -> None:
        if not self._guards:
            self.findings.append(Finding(self.path, getattr(node, "lineno", 0), what))

    def _guarded(self, nodes: list[ast.stmt]) -> None:
        self._guards += 1
        for node in nodes:
            self.visit(node)
        self._guards -= 1

    def _check_marks(self, marks: list[ast.expr], line: int, what: str) -> bool:
        """Whether ``marks`` make a posix test; flags one not skipped on Windows."""
        if not any(_is_posix_mark(m) for m in marks):
            return False
        if not any(_skips_on_windows(m) for m in marks + self._module_marks):
            self.findings.append(
                Finding(
                    self.path,
                    line,
                    f"{what} is marked posix but has no "
                    "pytest.mark.skipif(sys.platform == 'win32', reason=...)",
                )
            )
        return True

    # -- guards ------------------------------------------------------------------

    def _visit_condition(self, node: ast.If | ast.IfExp) -> None:
        # Both branches of ``if sys.platform == "win32"`` are platform paths.
        guard = any(word in ast.unparse(node.test) for word in GUARD_WORDS)
        self._guards += guard
        self.generic_visit(node)
        self._guards -= guard

    visit_If = _visit_condition
    visit_IfExp = _visit_condition

    def visit_Try(self, node: ast.Try) -> None:
        caught: set[str] = set()
        for handler in node.handlers:
            if handler.type is None:
                continue
            names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught.update(ast.unparse(name) for name in names)
        if caught & GUARD_ERRORS:
            self._guarded(node.body + node.orelse)
        else:
            for statement in node.body + node.orelse:
                self.visit(statement)
        for handler in node.handlers:
            self.visit(handler)
        for statement in node.finalbody:
            self.visit(statement)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        marks = [m for d in node.decorator_list for m in _mark_names(d, self._aliases)]
        is_posix = self.tests and self._check_marks(marks, node.lineno, node.name)
        self._probing.append(
            any(
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr in PATH_PROBES
                for call in ast.walk(node)
            )
        )
        for name, value in ast.iter_fields(node):
            if name != "body":
                for child in value if isinstance(value, list) else [value]:
                    if isinstance(child, ast.AST):
                        self.visit(child)
        if is_posix or (self.tests and any(_is_posix_mark(m) for m in self._module_marks)):
            self._guarded(node.body)
        else:
            self._visit_block(node.body)
        self._probing.pop()

    def _visit_block(self, body: list[ast.stmt]) -> None:
        """A function body; after ``if sys.platform != "win32": return`` all is guarded."""
        for index, statement in enumerate(body):
            self.visit(statement)
            if _exits_on_other_platforms(statement):
                self._guarded(body[index + 1 :])
                return

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function
    visit_ClassDef = _visit_function

    # -- what needs a guard -----------------------------------------------------

    def _check_module(self, node: ast.AST, module: str) -> None:
        top = module.split(".")[0]
        if top in POSIX_ONLY_MODULES:
            self._report(node, f"imports {module}, which Windows does not have")
        elif top in WINDOWS_ONLY_MODULES:
            self._report(node, f"imports {module}, which only Windows has")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_module(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level:
            self._check_module(node, node.module)
            for alias in node.names:
                if alias.name in PLATFORM_ATTRIBUTES.get(node.module, ()):
                    self._report(node, f"imports {node.module}.{alias.name}, not on every system")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name):
            module = node.value.id
            if node.attr in PLATFORM_ATTRIBUTES.get(module, ()):
                self._report(node, f"uses {module}.{node.attr}, not on every system")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in LOOP_METHODS_WITHOUT_WINDOWS:
            self._report(
                node,
                f"calls {func.attr} with no fallback (Windows' loop raises NotImplementedError)",
            )
        name = ast.unparse(func)
        if isinstance(func, ast.Attribute):
            # x.open() is a file only when x looks like a path (UdpPeer.open() is not).
            receiver = ast.unparse(func.value).lower()
            looks_like_a_file = "path" in receiver or "file" in receiver
            if func.attr in ("read_text", "write_text") or (
                func.attr == "open" and (looks_like_a_file or name in ("io.open", "codecs.open"))
            ):
                self._check_encoding(node, name)
        elif name == "open":
            self._check_encoding(node, name)
        if self.tests and name.rsplit(".", 1)[-1] in PATH_FUNCTIONS:
            for argument in node.args:
                self._check_path(node, argument)
        self.generic_visit(node)

    def _check_encoding(self, node: ast.Call, name: str) -> None:
        if any(k.arg == "encoding" for k in node.keywords):
            return
        # Where a positional encoding would stand: read_text(encoding),
        # write_text(data, encoding), Path.open(mode, buffering, encoding), open(f, m, b, e).
        method = name.rsplit(".", 1)[-1]
        position = {"read_text": 0, "write_text": 1}.get(
            method, 3 if name in ("open", "io.open", "codecs.open") else 2
        )
        if len(node.args) > position:
            return
        # open(file, mode) and io.open(file, mode); Path.open(mode); the rest have no mode.
        mode_index = {"read_text": None, "write_text": None}.get(
            method, 1 if name in ("open", "io.open", "codecs.open") else 0
        )
        mode = next((k.value for k in node.keywords if k.arg == "mode"), None)
        if mode is None and mode_index is not None and len(node.args) > mode_index:
            mode = node.args[mode_index]
        if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "b" in mode.value:
            return
        # The default encoding is the locale's: cp1252 on many Windows machines.
        self.findings.append(Finding(self.path, node.lineno, f"{name}() without encoding="))

    def visit_Constant(self, node: ast.Constant) -> None:
        # In the package any such string counts; tests hold chat text like "/etc/hosts"
        # as data, so there only what is passed to a path function counts (visit_Call).
        if not self.tests and id(node) not in self._docstrings:
            self._check_path(node, node)

    def _check_path(self, node: ast.AST, value: ast.expr) -> None:
        if isinstance(value, ast.JoinedStr) and value.values:
            value = value.values[0]  # f"/proc/{pid}/stat"
        text = value.value if isinstance(value, ast.Constant) else None
        if isinstance(text, str) and text.startswith(LINUX_PATHS) and not self._probing[-1]:
            self._report(node, f"names the Linux path {text!r} and does not check it exists")


def check_source(source: str, path: str = "<test>", *, tests: bool = False) -> list[str]:
    checker = PortabilityChecker(path, tests=tests)
    return [str(f) for f in checker.check(ast.parse(source))]


def check_tree(root: Path, *, tests: bool) -> list[str]:
    findings: list[str] = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        findings += check_source(path.read_text(encoding="utf-8"), relative, tests=tests)
    return findings


def main(argv: list[str] | None = None) -> int:
    """Check src/ocm (as package code) and tests/ (as tests); print each finding."""
    del argv  # no options
    findings = check_tree(SRC, tests=False) + check_tree(TESTS, tests=True)
    for finding in findings:
        print(finding)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
