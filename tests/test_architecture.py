"""docs/architecture.md tells the truth, and the packages keep their rules.

Imports are read from the source with :mod:`ast`, wherever they are made; the names on
the page are looked up in the imported modules.

* The page. Its module diagram is compared with the real imports of every module under
  src/ocm (found with ``rglob``, named ``ocm.server.registry`` and so on): every module
  is a node, every arrow an import and every import an arrow, solid when made at load
  time and dotted when made inside a function. Type-checking-only imports are not
  drawn, nor are the package ``__init__`` files that only re-export (``ocm``,
  ``ocm.wire``, ``ocm.client``, ``ocm.server``, ``ocm.ui``): a name imported through one
  is drawn to the module that defines it. No import points up a layer. In every diagram
  and every backticked name, ``ocm.x.y`` must be a module (``ocm.x.y.Z`` an attribute of
  it), ``Class.attr`` a real attribute, CamelCase names real classes, UPPER_SNAKE names
  real constants or enum members, and a ``call()`` in a sequence message a method of
  the participant that receives it.
* The package rules, each also fed a made-up violation to show it can fail: the client
  never imports the server (not even inside a function or for the type checker), and
  loading it never loads the server; the wire (and ``ocm.errors``) does no I/O and
  imports nothing of ocm but itself; the sans-I/O cores import no I/O module and read
  no clock; and the packages import only downwards: ocm.wire nothing of the others,
  ocm.server and ocm.client nothing of each other's side or of ocm.cli and ocm.ui,
  ocm.ui nothing of ocm.cli.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import sys
import textwrap
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeGuard

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
SRC = ROOT / "src" / "ocm"

# The sequences the architecture page must show (its ### headings), and the life cycles.
SEQUENCES = (
    "Create a room",
    "Join a room",
    "An encrypted join",
    "Chat",
    "The client's timer",
    "A member leaves",
    "The host leaves",
    "A silent member is dropped",
    "The server shuts down",
)
ENUMS = (
    "ocm.wire.Operation",
    "ocm.wire.State",
    "ocm.wire.Kind",
    "ocm.errors.ErrorCode",
)

# ---------------------------------------------------------------------------
# The package rules
# ---------------------------------------------------------------------------

# The client side, which must run (and be installable, one day) without the server.
CLIENT_SIDE = ("ocm.client", "ocm.ui", "ocm.cli.client", "ocm.cli.args")
SERVER_SIDE = ("ocm.server", "ocm.cli.server")
# What both ends share: encodings, names, texts, the error tree. No I/O at all.
WIRE = ("ocm.wire", "ocm.errors")
# The sans-I/O cores: bytes and ``now`` in, decisions out; their adapters do the I/O.
SANS_IO_CORES = (
    "ocm.server.registry",
    "ocm.server.relay",
    "ocm.server.guards",
    "ocm.client.session",
    "ocm.client.delivery",
    "ocm.client.events",
)
# Sockets, event loops, threads and processes: what the cores leave to the adapters.
IO_MODULES = frozenset(
    {
        "asyncio",
        "concurrent",
        "multiprocessing",
        "selectors",
        "signal",
        "socket",
        "ssl",
        "subprocess",
        "threading",
    }
)
# The cores may not read the clock either; the wire may not even touch the system.
CORE_FORBIDDEN = IO_MODULES | {"time"}
WIRE_FORBIDDEN = IO_MODULES | {"time", "os"}
# Reading a clock: time.monotonic(), loop.time(), datetime.now(), monotonic(), ...
CLOCK_READS = frozenset(
    {
        "monotonic",
        "monotonic_ns",
        "now",
        "perf_counter",
        "perf_counter_ns",
        "process_time",
        "process_time_ns",
        "time",
        "time_ns",
        "today",
        "utcnow",
    }
)
# Package -> the packages it must never import from (load time, lazy or type checking):
# wire at the bottom, the server and the client on it, the command and the UIs on top.
PACKAGE_RULES: dict[str, tuple[str, ...]] = {
    "ocm.wire": ("ocm.server", "ocm.client", "ocm.cli", "ocm.ui"),
    "ocm.server": ("ocm.client", "ocm.cli", "ocm.ui"),
    "ocm.client": ("ocm.cli", "ocm.ui"),
    "ocm.ui": ("ocm.cli",),
}

MODULE_REFERENCE = re.compile(r"\bocm(?:\.[A-Za-z_]\w*)+")
DOTTED = re.compile(r"(?<![\w.])([A-Z]\w*)\.([A-Za-z_]\w*)")
CAMEL = re.compile(r"(?<![\w.])([A-Z]\w*[a-z]\w*[A-Z]\w*)\b")
CALLED_CLASS = re.compile(r"(?<![\w.])([A-Z][a-z]\w*)\(")
CALL = re.compile(r"(?<![\w.])([a-z_][a-z0-9_]*)\(")
UPPER_SNAKE = re.compile(r"(?<![\w.])([A-Z][A-Z0-9]*_[A-Z0-9_]+)\b")
BACKTICKED = re.compile(r"`([^`\n]+)`")

NODE = re.compile(r'^\s*(\w+)\[/?"([^"<]+)')
SUBGRAPH = re.compile(r'^\s*subgraph \w+\["(\d+)\.')
EDGE = re.compile(r"^\s*(\w+)\s*(-->|-\.->)\s*(\w+)\s*$")
PARTICIPANT = re.compile(r"^\s*participant (\w+) as (.*)$")
MESSAGE = re.compile(r"^\s*(\w+)\s*(?:->>|-->>|-\)|--\)|->|-->)\s*(\w+)\s*:(.*)$")


def under(module: str, package: str) -> bool:
    """Whether ``module`` is ``package`` or inside it (``ocm.client`` is not in ocm.cli)."""
    return module == package or module.startswith(package + ".")


def under_any(module: str, packages: Iterable[str]) -> bool:
    return any(under(module, package) for package in packages)


@dataclass(frozen=True, slots=True, order=True)
class Edge:
    source: str
    target: str
    lazy: bool

    def mermaid(self, ids: dict[str, str]) -> str:
        return f"{ids.get(self.source, self.source)} {'-.->' if self.lazy else '-->'} " + ids.get(
            self.target, self.target
        )


# ---------------------------------------------------------------------------
# The code: modules and their imports
# ---------------------------------------------------------------------------

When = Literal["load", "lazy", "typing"]


@dataclass(frozen=True, slots=True)
class Import:
    """One module an import statement (or ``importlib.import_module``) loads."""

    source: str  # the importing module, "ocm.client.chat"
    target: str  # the module loaded: "ocm.wire.tcrp", "asyncio", "prompt_toolkit.styles"
    names: tuple[str, ...]  # "from target import a, b": a and b (submodules excepted)
    when: When  # at load time, inside a function, or for the type checker only
    line: int

    def __str__(self) -> str:
        how = {"load": "", "lazy": " inside a function", "typing": " for type checking"}
        return f"{self.source} imports {self.target}{how[self.when]} (line {self.line})"


@dataclass(frozen=True, slots=True)
class Source:
    tree: ast.Module
    is_package: bool  # an __init__.py: relative imports start from the package itself


@cache
def source_paths() -> dict[str, Path]:
    """Every module under src/ocm by its dotted name; a package is its ``__init__``."""
    found: dict[str, Path] = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


@cache
def sources() -> dict[str, Source]:
    return {
        name: Source(ast.parse(path.read_text(encoding="utf-8")), path.name == "__init__.py")
        for name, path in source_paths().items()
    }


def _is_type_checking(node: ast.If) -> bool:
    return ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _base(module: str, source: Source, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative ones resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if source.is_package else module.split(".")[:-1]
    parts = package[: len(package) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def read_imports(module: str, source: Source, known: Collection[str]) -> list[Import]:
    """Every import ``module`` makes, wherever it is made; ``known``: the ocm modules
    (so that ``from ocm.ui import terminal`` counts as loading ocm.ui.terminal)."""
    found: list[Import] = []

    def visit(node: ast.AST, when: When) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for statement in node.body:
                visit(statement, "typing")  # for mypy only: nothing is loaded
            for statement in node.orelse:
                visit(statement, when)
            return
        if when == "load" and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            when = "lazy"  # loaded when the function runs, if ever
        if isinstance(node, ast.Import):
            found.extend(Import(module, a.name, (), when, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, source, node)
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{base}.{n}" in known]
            rest = tuple(n for n in names if n not in submodules)
            if rest:  # the package itself is loaded first in any case (see parents())
                found.append(Import(module, base, rest, when, node.lineno))
            found.extend(Import(module, f"{base}.{n}", (), when, node.lineno) for n in submodules)
        elif isinstance(node, ast.Call) and (target := _dynamic_import(node)) is not None:
            found.append(Import(module, target, (), when, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, when)

    visit(source.tree, "load")
    return found


def _dynamic_import(call: ast.Call) -> str | None:
    """``importlib.import_module("x")`` or ``__import__("x")``: the module, else None."""
    name = ast.unparse(call.func)
    if name not in ("importlib.import_module", "import_module", "__import__"):
        return None
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def imports_of(modules: Mapping[str, Source]) -> list[Import]:
    known = set(modules) | set(source_paths())
    return [i for name, source in modules.items() for i in read_imports(name, source, known)]


@cache
def code_imports() -> tuple[Import, ...]:
    return tuple(imports_of(sources()))


def parse_sources(snippets: Mapping[str, str], packages: Collection[str] = ()) -> dict[str, Source]:
    """Made-up modules for the tests that show a rule can fail."""
    return {
        name: Source(ast.parse(textwrap.dedent(text)), name in packages)
        for name, text in snippets.items()
    }


def fake_imports(snippets: Mapping[str, str]) -> list[Import]:
    return imports_of(parse_sources(snippets))


# ---------------------------------------------------------------------------
# The package rules, as checkers over imports (and sources, for the clock)
# ---------------------------------------------------------------------------


def top(module: str) -> str:
    return module.split(".")[0]


def client_imports_server(imports: Iterable[Import]) -> list[str]:
    """The client side importing anything of the server side, however it imports it."""
    return [
        str(i)
        for i in imports
        if under_any(i.source, CLIENT_SIDE) and under_any(i.target, SERVER_SIDE)
    ]


def parents(module: str) -> list[str]:
    """The packages Python loads before ``module``: ocm.server.tcp -> ocm, ocm.server."""
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def loaded_by(module: str, imports: Iterable[Import]) -> dict[str, str | None]:
    """Every ocm module that importing ``module`` loads (its load-time imports and their
    parent packages, all the way down), each with the module that loaded it."""
    targets: dict[str, list[str]] = {}
    for i in imports:
        if i.when == "load" and top(i.target) == "ocm":
            targets.setdefault(i.source, []).append(i.target)
    seen: dict[str, str | None] = {module: None}
    queue = [module]
    while queue:
        current = queue.pop(0)
        for following in parents(current) + targets.get(current, []):
            if following not in seen:
                seen[following] = current
                queue.append(following)
    return seen


def client_loads_server(imports: Iterable[Import], modules: Iterable[str]) -> list[str]:
    """Loading a client-side module loads a server-side one, by any path."""
    imports = list(imports)
    problems: list[str] = []
    for module in sorted(m for m in modules if under_any(m, CLIENT_SIDE)):
        seen = loaded_by(module, imports)
        for loaded in sorted(m for m in seen if under_any(m, SERVER_SIDE)):
            path: list[str] = [loaded]
            while (step := seen[path[-1]]) is not None:
                path.append(step)
            problems.append(" -> ".join(reversed(path)))
    return problems


def wire_does_io(imports: Iterable[Import]) -> list[str]:
    """The wire (or the error tree) importing an I/O module or any ocm module outside
    the wire and ocm.errors."""
    problems: list[str] = []
    for i in imports:
        if not under_any(i.source, WIRE):
            continue
        if top(i.target) in WIRE_FORBIDDEN:
            problems.append(f"{i}: I/O")
        elif top(i.target) == "ocm" and not under_any(i.target, WIRE):
            problems.append(f"{i}: outside the wire")
    return problems


def core_does_io(imports: Iterable[Import], cores: Collection[str] = SANS_IO_CORES) -> list[str]:
    return [f"{i}: I/O" for i in imports if i.source in cores and top(i.target) in CORE_FORBIDDEN]


def clock_reads(modules: Mapping[str, Source]) -> list[str]:
    """Each place a module reads a clock: ``x.time()``, ``x.monotonic``, ``monotonic()``..."""
    problems: list[str] = []
    for name, source in modules.items():
        reads = [node for node in ast.walk(source.tree) if _reads_clock(node)]
        for node in sorted(reads, key=lambda n: (n.lineno, n.col_offset)):
            what = ast.unparse(node.func if isinstance(node, ast.Call) else node)
            called = "()" if isinstance(node, ast.Call) else ""
            problems.append(f"{name} reads a clock: {what}{called} (line {node.lineno})")
    return problems


def _reads_clock(node: ast.AST) -> TypeGuard[ast.Attribute | ast.Call]:
    """``anything.monotonic`` (called or passed on), or ``monotonic()`` imported bare;
    ``now`` is the name of the parameter the cores take, so only a called name counts."""
    if isinstance(node, ast.Attribute):
        return node.attr in CLOCK_READS
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in CLOCK_READS
    )


def upward_package_imports(imports: Iterable[Import]) -> list[str]:
    """Imports that break :data:`PACKAGE_RULES`, however they are made."""
    return [
        f"{i}: {package} must not import {target}"
        for i in imports
        for package, forbidden in PACKAGE_RULES.items()
        if under(i.source, package)
        for target in forbidden
        if under(i.target, target)
    ]


# ---------------------------------------------------------------------------
# The code as the diagram draws it
# ---------------------------------------------------------------------------


def reexports_only(source: Source) -> bool:
    """A package ``__init__`` that defines nothing (docstring, imports, ``__all__`` and
    such constants only): an import through it is drawn to where the name is defined."""
    return source.is_package and all(
        isinstance(s, ast.Import | ast.ImportFrom | ast.Assign | ast.AnnAssign)
        or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
        for s in source.tree.body
    )


def reexport_tables(modules: Mapping[str, Source]) -> dict[str, dict[str, str]]:
    """Re-exporting package -> {name it binds: the module it takes the name from}."""
    tables: dict[str, dict[str, str]] = {}
    for name, source in modules.items():
        if not reexports_only(source):
            continue
        table = tables.setdefault(name, {})
        for statement in source.tree.body:
            if isinstance(statement, ast.ImportFrom) and statement.module != "__future__":
                base = _base(name, source, statement)
                for alias in statement.names:
                    table[alias.asname or alias.name] = base
    return tables


def defining_module(module: str, name: str, tables: Mapping[str, Mapping[str, str]]) -> str:
    """Where ``from module import name`` really takes ``name`` from."""
    seen: set[str] = set()
    while module in tables and name in tables[module] and module not in seen:
        seen.add(module)
        module = tables[module][name]
    return module


def drawn_edges(
    imports: Iterable[Import], nodes: Collection[str], tables: Mapping[str, Mapping[str, str]]
) -> frozenset[Edge]:
    """The arrows the module diagram must show: ocm modules and third-party packages."""
    solid: dict[tuple[str, str], bool] = {}
    for i in imports:
        if i.when == "typing" or i.source not in nodes:
            continue
        if top(i.target) != "ocm":
            if top(i.target) in sys.stdlib_module_names or i.target == "__future__":
                continue
            targets = [top(i.target)]
        elif i.target in tables:
            # Each name from where it is defined; "import ocm.client" loads them all.
            names = i.names or tuple(tables[i.target])
            targets = [defining_module(i.target, n, tables) for n in names]
        else:
            targets = [i.target]
        for target in targets:
            if target == i.source or (top(target) == "ocm" and target not in nodes):
                continue  # itself, or a package __init__ that is not drawn
            key = (i.source, target)
            solid[key] = solid.get(key, False) or i.when == "load"
    return frozenset(Edge(a, b, not is_solid) for (a, b), is_solid in solid.items())


@cache
def drawn_modules() -> frozenset[str]:
    return frozenset(name for name, source in sources().items() if not reexports_only(source))


@cache
def real_edges() -> frozenset[Edge]:
    return drawn_edges(code_imports(), drawn_modules(), reexport_tables(sources()))


# ---------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------


@cache
def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def mermaid_blocks() -> list[str]:
    return re.findall(r"```mermaid\n(.*?)```", doc_text(), re.DOTALL)


def block_of(kind: str) -> list[str]:
    return [b for b in mermaid_blocks() if b.lstrip().startswith(kind)]


@dataclass(frozen=True, slots=True)
class ModuleDiagram:
    modules: dict[str, str]  # node id -> module or package name
    layers: dict[str, int]  # module -> layer number
    edges: frozenset[Edge]


def read_flowchart(block: str) -> ModuleDiagram:
    modules: dict[str, str] = {}
    layers: dict[str, int] = {}
    layer: int | None = None
    raw_edges: list[tuple[str, str, bool]] = []
    for line in block.splitlines():
        if match := SUBGRAPH.match(line):
            layer = int(match[1])
        elif line.strip() == "end":
            layer = None
        elif match := EDGE.match(line):
            raw_edges.append((match[1], match[3], match[2] == "-.->"))
        elif match := NODE.match(line):
            name = match[2].split()[0]
            modules[match[1]] = name
            if layer is not None:
                layers[name] = layer
    undeclared = sorted({n for a, b, _ in raw_edges for n in (a, b)} - set(modules))
    assert undeclared == [], "arrows between nodes the diagram never declares"
    edges = frozenset(Edge(modules[a], modules[b], lazy) for a, b, lazy in raw_edges)
    return ModuleDiagram(modules, layers, edges)


@cache
def module_diagram() -> ModuleDiagram:
    (block,) = block_of("flowchart")
    return read_flowchart(block)


def diagram_differences(diagram: ModuleDiagram, real: frozenset[Edge]) -> tuple[list[str], ...]:
    """(arrows the diagram lacks, arrows it has that no import makes)."""
    ids = {module: node for node, module in diagram.modules.items()}
    missing = sorted(e.mermaid(ids) for e in real - diagram.edges)
    extra = sorted(e.mermaid(ids) for e in diagram.edges - real)
    return missing, extra


def upward_imports(edges: Iterable[Edge], layers: Mapping[str, int]) -> list[str]:
    return [
        f"{e.source} (layer {layers[e.source]}) imports {e.target} (layer {layers[e.target]})"
        for e in sorted(edges)
        if e.source in layers and e.target in layers and layers[e.target] > layers[e.source]
    ]


# ---------------------------------------------------------------------------
# Names on the page
# ---------------------------------------------------------------------------


@cache
def namespace() -> dict[str, Any]:
    """Every class, function, type alias and constant the ocm modules define."""
    found: dict[str, Any] = {}
    for module_name in source_paths():
        if module_name == "ocm.__main__":
            continue  # importing it runs the command
        module = importlib.import_module(module_name)
        exported = set(getattr(module, "__all__", ()))
        for name, value in vars(module).items():
            defined_here = getattr(value, "__module__", None) == module_name
            if (
                name in exported
                or name.isupper()
                or (defined_here and (inspect.isclass(value) or inspect.isfunction(value)))
            ):
                found.setdefault(name, value)
    return found


@cache
def enum_members() -> frozenset[str]:
    members: set[str] = set()
    for dotted in ENUMS:
        module, name = dotted.rsplit(".", 1)
        enum: type[Enum] = getattr(importlib.import_module(module), name)
        members.update(enum.__members__)
    return frozenset(members)


def instance_attributes(cls: type) -> frozenset[str]:
    """Names a class's methods assign on ``self`` (the attributes of its instances)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] != "ocm":
            continue
        tree = ast.parse(_dedented(klass))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
            ):
                names.add(node.attr)
    return frozenset(names)


def _dedented(cls: type) -> str:
    lines = inspect.getsource(cls).splitlines()
    indent = len(lines[0]) - len(lines[0].lstrip())
    return "\n".join(line[indent:] for line in lines)


def has_attribute(obj: Any, name: str) -> bool:
    if hasattr(obj, name):
        return True
    return inspect.isclass(obj) and name in instance_attributes(obj)


@cache
def every_callable() -> frozenset[str]:
    """Functions of the ocm modules and methods of their classes."""
    names: set[str] = set()
    for name, value in namespace().items():
        if inspect.isfunction(value):
            names.add(name)
        elif inspect.isclass(value):
            names.update(n for n in dir(value) if callable(getattr(value, n, None)))
    return frozenset(names)


def resolve(reference: str) -> str | None:
    """None if ``ocm.a.b.C.d`` names a real module (and attributes); else why not."""
    parts = reference.split(".")
    for end in range(len(parts), 1, -1):
        module_name = ".".join(parts[:end])
        try:
            spec = importlib.util.find_spec(module_name)
        except (ModuleNotFoundError, ValueError):
            spec = None
        if spec is None:
            continue
        rest = parts[end:]
        if not rest:
            return None
        obj: Any = importlib.import_module(module_name)
        for part in rest:
            if not has_attribute(obj, part):
                return f"{reference}: {module_name} has no {'.'.join(rest)}"
            obj = getattr(obj, part, None)
        return None
    return f"{reference}: no such module"


def named_text() -> list[str]:
    """Where the page names code: its diagrams and its backticked spans."""
    return mermaid_blocks() + BACKTICKED.findall(doc_text())


def participants(block: str) -> dict[str, Any]:
    """Participant id -> the class it stands for (None for people and groups)."""
    found: dict[str, Any] = {}
    for line in block.splitlines():
        if match := PARTICIPANT.match(line):
            label = match[2]
            module = re.search(r"\((ocm(?:\.\w+)+)\)", label)
            cls = None
            if module:
                assert resolve(module[1]) is None, f"{label}: no module {module[1]}"
                word = next(w for w in re.findall(r"\w+", label) if w[0].isupper())
                cls = getattr(importlib.import_module(module[1]), word, None)
                assert inspect.isclass(cls), f"{label}: {module[1]} has no class {word}"
            found[match[1]] = cls
    return found


def section(text: str, title: str) -> str:
    """What follows the ``### title`` heading."""
    parts = text.split(f"\n### {title}\n", 1)
    assert len(parts) == 2, f'no "### {title}" section'
    return parts[1]


# ---------------------------------------------------------------------------
# Tests: the names on the page
# ---------------------------------------------------------------------------


def test_every_ocm_module_and_attribute_named_exists() -> None:
    references = sorted(set(MODULE_REFERENCE.findall(doc_text())))
    assert references, "the page names no ocm module at all"
    problems = [why for ref in references if (why := resolve(ref)) is not None]
    assert problems == []


def test_every_class_constant_and_attribute_named_exists() -> None:
    names = namespace()
    problems: list[str] = []
    for text in named_text():
        text = MODULE_REFERENCE.sub("", text)
        for owner, attribute in DOTTED.findall(text):
            if owner in names and not has_attribute(names[owner], attribute):
                problems.append(f"{owner}.{attribute}")
        for name in CAMEL.findall(text) + CALLED_CLASS.findall(text):
            if name not in names:
                problems.append(name)
        for name in UPPER_SNAKE.findall(text):
            if name not in names and name not in enum_members():
                problems.append(name)
    assert sorted(set(problems)) == []


def test_participants_are_real_classes_and_calls_real_methods() -> None:
    problems: list[str] = []
    blocks = block_of("sequenceDiagram")
    assert blocks
    for block in blocks:
        actors = participants(block)
        for line in block.splitlines():
            match = MESSAGE.match(line)
            if match is None:
                text = line.split(":", 1)[-1] if line.strip().startswith("Note") else ""
                problems += [c for c in CALL.findall(text) if c not in every_callable()]
                continue
            assert match[1] in actors and match[2] in actors, f"undeclared participant: {line}"
            receiver = actors[match[2]]
            for call in CALL.findall(match[3]):
                if receiver is not None and not has_attribute(receiver, call):
                    problems.append(f"{receiver.__name__} has no method {call}: {line.strip()}")
                elif receiver is None and call not in every_callable():
                    problems.append(f"no function {call}: {line.strip()}")
    assert problems == []


def test_flowchart_labels_name_classes_of_their_module() -> None:
    (block,) = block_of("flowchart")
    problems: list[str] = []
    for line in block.splitlines():
        match = re.match(r'^\s*\w+\["(ocm[\w.]*)<br/>([^"]*)"\]', line)
        if match is None:
            continue
        module = importlib.import_module(match[1]) if match[1] != "ocm.__main__" else None
        for word in re.findall(r"\b[A-Z]\w*[a-z]\w*\b", match[2]):
            if module is None or not hasattr(module, word):
                problems.append(f"{match[1]} has no {word}")
    assert problems == []


def test_the_page_shows_every_sequence_and_the_life_cycles() -> None:
    text = doc_text()
    for title in SEQUENCES:
        assert section(text, title).lstrip().startswith("```mermaid\nsequenceDiagram"), title
    for title, cls in (
        ("A room", "ocm.server.registry.Room"),
        ("A member", "ocm.server.registry.Member"),
    ):
        diagram = section(text, title).split("```", 2)[1]
        assert diagram.startswith("mermaid\nstateDiagram") and cls in diagram, title


def test_the_checks_catch_a_wrong_page() -> None:
    """The helpers above fail on made-up names, so the tests can fail."""
    assert resolve("ocm.nonexistent") is not None
    assert resolve("ocm.server.nonexistent") is not None
    assert resolve("ocm.server.registry.NoSuchRegistry") is not None
    assert resolve("ocm.server.registry.RoomRegistry.create_room") is None
    assert resolve("ocm.wire.framer.TcrpReader.next_message") is None
    assert not has_attribute(namespace()["RoomRegistry"], "create_lobby")
    assert has_attribute(namespace()["TcrpHandler"], "writers")  # set in __init__
    assert "ChatClient" in namespace() and "NoSuchClient" not in namespace()
    assert "CREATE_ROOM" in enum_members() and "DELETE_ROOM" not in enum_members()


# ---------------------------------------------------------------------------
# Tests: the module diagram is the imports
# ---------------------------------------------------------------------------


def test_every_module_is_found() -> None:
    """rglob sees the sub-packages: the reading below covers the whole tree."""
    modules = set(source_paths())
    assert {"ocm", "ocm.errors", "ocm.wire", "ocm.wire.tcrp", "ocm.server.registry"} <= modules
    assert {"ocm.client.session", "ocm.cli", "ocm.cli.server", "ocm.ui.terminal"} <= modules
    assert {"ocm", "ocm.wire", "ocm.client", "ocm.server", "ocm.ui"} <= modules - drawn_modules()
    assert "ocm.cli" in drawn_modules()  # the parser and the dispatch: a module of its own


def contributing_tree(text: str) -> set[str]:
    """The files under ``src/ocm/`` in CONTRIBUTING.md's tree, as paths relative to it.

    A line names a file or a folder at two spaces a level; a deeper-indented line goes on
    the description above it, and the tree ends at the first line that is not indented
    (``tools/``).
    """
    block = text.split("```text\nsrc/ocm/\n", 1)[1].split("```", 1)[0]
    folders: list[str] = []
    files: set[str] = set()
    for line in block.splitlines():
        if not line.startswith(" "):
            break
        stripped = line.lstrip(" ")
        depth = (len(line) - len(stripped)) // 2 - 1
        name = stripped.split()[0]
        if depth > len(folders) or not re.fullmatch(r"[\w.]+/?", name):
            continue  # a description's second line
        del folders[depth:]
        if name.endswith("/"):
            folders.append(name)
        else:
            files.add("".join(folders) + name)
    return files


def test_contributing_tree_names_every_module() -> None:
    """CONTRIBUTING.md's tree has one line per module, and no module that is gone."""
    listed = contributing_tree((ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8"))
    files = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*") if p.is_file()}
    modules = {p for p in files if p.endswith(".py") and not p.endswith("__init__.py")}
    assert sorted(modules - listed) == [], "modules missing from CONTRIBUTING.md's tree"
    assert sorted(listed - files) == [], "CONTRIBUTING.md's tree names files that are gone"


def test_contributing_tree_can_fail() -> None:
    text = (
        "```text\nsrc/ocm/\n  a.py  x\n  wire/  y\n    b.py   z\n                 more\ntools/\n```"
    )
    assert contributing_tree(text) == {"a.py", "wire/b.py"}


def test_the_package_ships_its_types() -> None:
    """PEP 561: ``py.typed`` is in the package, and pyproject.toml says to install it."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["ocm"]
    assert (SRC / "py.typed").is_file()


def test_module_diagram_shows_every_module() -> None:
    shown = {m for m in module_diagram().modules.values() if m.startswith("ocm.")}
    assert sorted(shown ^ drawn_modules()) == [], "modules missing from the diagram, or gone"


def test_module_diagram_arrows_are_the_real_imports() -> None:
    missing, extra = diagram_differences(module_diagram(), real_edges())
    assert (missing, extra) == ([], []), "add the first list to the diagram, drop the second"


def test_imports_never_point_up_a_layer() -> None:
    layers = module_diagram().layers
    assert set(layers) >= drawn_modules(), "every module sits in a numbered layer"
    assert upward_imports(real_edges(), layers) == []


def test_below_the_front_ends_nothing_outside_the_standard_library_is_imported() -> None:
    """The README's promise: the server runs on the standard library and cryptography
    (TLS certificates and sealed datagrams, section 5) alone."""
    layers = module_diagram().layers
    third_party = [
        f"{e.source} imports {e.target}"
        for e in real_edges()
        if not e.target.startswith("ocm.")
        and e.target.split(".")[0] != "cryptography"
        and not (e.target.split(".")[0] == "redis" and e.source == REDIS_BACKEND)
        and layers.get(e.source, 4) < 4
    ]
    assert third_party == []


REDIS_BACKEND = "ocm.server.cluster.redis_backend"


def test_redis_is_loaded_only_for_a_cluster_node() -> None:
    """redis-py is the cluster extra: only the cluster backend imports it, and nothing
    loads that module but inside a function (``ocm server --redis``), so a server on its
    own, and every client, runs without it."""
    importers = sorted(
        f"{e.source} (lazy: {e.lazy})" for e in real_edges() if e.target == REDIS_BACKEND
    )
    assert importers == ["ocm.server.app (lazy: True)"]
    assert [e.source for e in real_edges() if e.target.split(".")[0] == "redis"] == [REDIS_BACKEND]


def test_the_diagram_checks_can_fail() -> None:
    real = frozenset({Edge("ocm.a", "ocm.b", False), Edge("ocm.b", "ocm.c", True)})
    page = """flowchart TB
    subgraph top["2. top"]
        a["ocm.a<br/>A"]
    end
    subgraph bottom["1. bottom"]
        b["ocm.b<br/>B"]
        c["ocm.c<br/>C"]
    end
    a --> b
    b --> c
    c --> b
"""
    diagram = read_flowchart(page)
    assert diagram.layers == {"ocm.a": 2, "ocm.b": 1, "ocm.c": 1}
    # b -> c is dotted in the code, and nothing makes c -> b.
    assert diagram_differences(diagram, real) == (["b -.-> c"], ["b --> c", "c --> b"])
    assert upward_imports([Edge("ocm.b", "ocm.a", True)], diagram.layers) == [
        "ocm.b (layer 1) imports ocm.a (layer 2)"
    ]
    with pytest.raises(AssertionError, match="never declares"):
        read_flowchart(page + "    a --> d\n")


def test_the_import_reading_sees_every_kind_of_import() -> None:
    """Relative, lazy, type-checking, package and importlib imports are all read, and a
    name is drawn to the module that defines it, not the package that re-exports it."""
    imports = fake_imports(
        {
            "ocm.client.chat": """
                from typing import TYPE_CHECKING
                from . import events
                from ..wire.tcrp import Ack
                from ocm.client import ChatClient, list_rooms
                if TYPE_CHECKING:
                    from ocm.cli.args import port
                def later():
                    import importlib, prompt_toolkit.styles
                    importlib.import_module("ocm.ui.pipe")
                    from ocm.errors import OCMError
                class C:
                    from ocm.wire import constants
            """,
        }
    )
    read = {(i.target, i.when) for i in imports}
    assert read >= {
        ("ocm.client", "load"),
        ("ocm.client.events", "load"),
        ("ocm.wire.tcrp", "load"),
        ("ocm.cli.args", "typing"),
        ("ocm.ui.pipe", "lazy"),
        ("prompt_toolkit.styles", "lazy"),
        ("ocm.errors", "lazy"),
        ("ocm.wire.constants", "load"),  # a class body runs at load time
    }
    nodes = drawn_modules() | {"ocm.client.chat"}
    assert drawn_edges(imports, nodes, reexport_tables(sources())) == {
        Edge("ocm.client.chat", "ocm.client.events", False),
        Edge("ocm.client.chat", "ocm.client.exchange", False),  # list_rooms
        Edge("ocm.client.chat", "ocm.wire.tcrp", False),
        Edge("ocm.client.chat", "ocm.wire.constants", False),
        Edge("ocm.client.chat", "ocm.ui.pipe", True),
        Edge("ocm.client.chat", "ocm.errors", True),
        Edge("ocm.client.chat", "prompt_toolkit", True),
    }
    # A whole re-exporting package: an arrow to each module it takes names from.
    whole = fake_imports({"ocm.ui.pipe": "import ocm.client\n"})
    drawn = {e.target for e in drawn_edges(whole, nodes, reexport_tables(sources()))}
    assert {"ocm.client.chat", "ocm.client.events", "ocm.client.exchange"} <= drawn


# ---------------------------------------------------------------------------
# Tests: the package rules
# ---------------------------------------------------------------------------


def test_the_client_never_imports_the_server() -> None:
    """No module of ocm.client, ocm.ui, ocm.cli.client or ocm.cli.args imports anything
    of ocm.server or ocm.cli.server: not at load time, not inside a function, not even
    for the type checker. The two share only ocm.wire (and ocm.errors)."""
    assert client_imports_server(code_imports()) == []


def test_the_client_never_imports_the_server_can_fail() -> None:
    imports = fake_imports(
        {
            "ocm.client.session": "from ocm.server.registry import Room\n",
            "ocm.ui.pipe": "def run():\n    from ocm.cli import server\n",
            "ocm.cli.args": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from ocm.server.app import OCMServer
            """,
            "ocm.client.chat": "from ..server import tcp\n",
            "ocm.ui.terminal": "import importlib\nimportlib.import_module('ocm.server.udp')\n",
            # Allowed: the server's own command, and the client's own packages.
            "ocm.cli.server": "from ocm.server.app import serve\n",
            "ocm.cli.client": "from ocm.client import ChatClient\nfrom ocm.cli import args\n",
        }
    )
    found = client_imports_server(imports)
    assert [line.split(" imports ")[0] for line in found] == [
        "ocm.client.session",
        "ocm.ui.pipe",
        "ocm.cli.args",
        "ocm.client.chat",
        "ocm.ui.terminal",
    ]
    assert "inside a function" in found[1] and "for type checking" in found[2]


def test_loading_the_client_never_loads_the_server() -> None:
    """Python loads a module's parent packages first: importing ocm.cli.client runs
    ocm/cli/__init__.py, so that file may import ocm.cli.server only inside a function.
    Following every load-time import and parent package from each client module never
    reaches the server (tests/cli/test_cli.py checks the same by running ``ocm join``)."""
    assert client_loads_server(code_imports(), source_paths()) == []


def test_loading_the_client_never_loads_the_server_can_fail() -> None:
    # ocm/cli/__init__.py importing the server's command at load time, not in main().
    fake = parse_sources({"ocm.cli": "from ocm.cli import client, server\n"}, ["ocm.cli"])
    found = client_loads_server(imports_of({**sources(), **fake}), source_paths())
    assert "ocm.cli.client -> ocm.cli -> ocm.cli.server" in found
    assert "ocm.cli.args -> ocm.cli -> ocm.cli.server" in found
    # Through the wire, some steps away, it is caught as well.
    fake = parse_sources({"ocm.wire.names": "import ocm.server.guards\n"})
    found = client_loads_server(imports_of({**sources(), **fake}), source_paths())
    assert any(
        p.startswith("ocm.client.address -> ")
        and p.endswith(" -> ocm.wire.names -> ocm.server.guards")
        for p in found
    )


def test_the_wire_does_no_io() -> None:
    """ocm.wire and ocm.errors import no asyncio, socket, selectors, ssl, subprocess,
    threading, time or os, nothing of ocm outside themselves, and read no clock."""
    wire = {name: s for name, s in sources().items() if under_any(name, WIRE)}
    assert {"ocm.errors", "ocm.wire", "ocm.wire.tcrp", "ocm.wire.framer"} <= set(wire)
    assert wire_does_io(code_imports()) == []
    assert clock_reads(wire) == []


def test_the_wire_does_no_io_can_fail() -> None:
    imports = fake_imports(
        {
            "ocm.wire.tcrp": """
                import struct, json
                from os import path
                from ocm.wire.constants import MAX_DATAGRAM
                from ocm.errors import ErrorCode
                def later():
                    import asyncio.streams
            """,
            "ocm.wire": "from ocm import __version__\n",
            "ocm.wire.framer": "from ocm.server.registry import Room\n",
            "ocm.errors": "import threading\nfrom ocm.client.events import Message\n",
            "ocm.client.chat": "import asyncio\n",  # the adapters may
        }
    )
    found = wire_does_io(imports)
    assert [line.split(" (line")[0] for line in found] == [
        "ocm.wire.tcrp imports os",
        "ocm.wire.tcrp imports asyncio.streams inside a function",
        "ocm.wire imports ocm",
        "ocm.wire.framer imports ocm.server.registry",
        "ocm.errors imports threading",
        "ocm.errors imports ocm.client.events",
    ]
    assert clock_reads(parse_sources({"ocm.wire.texts": "import datetime\ndatetime.now()"}))


def test_the_sans_io_cores_do_no_io_and_read_no_clock() -> None:
    """registry, relay, guards (server) and session, events (client), and every other
    module the page draws in a layer-2 box, take ``now`` from their adapter: no asyncio,
    socket, selectors, ssl, subprocess, threading or time import, and no ``time.``,
    ``loop.time`` or ``monotonic`` call."""
    layers = module_diagram().layers
    assert {core: layers.get(core) for core in SANS_IO_CORES} == dict.fromkeys(SANS_IO_CORES, 2)
    # A module the page draws among the cores (layer 2) makes the same promise.
    names = set(SANS_IO_CORES) | {module for module, layer in layers.items() if layer == 2}
    cores = {name: s for name, s in sources().items() if name in names}
    assert set(cores) == names
    assert core_does_io(code_imports(), names) == []
    assert clock_reads(cores) == []


def test_the_sans_io_cores_do_no_io_and_read_no_clock_can_fail() -> None:
    snippets = {
        "ocm.server.relay": "import socket\nfrom logging import getLogger\n",
        "ocm.server.guards": "def f():\n    from concurrent.futures import Executor\n",
        "ocm.client.session": """
            import time
            from time import monotonic
            def deadline(loop, clock):
                return loop.time() + time.monotonic() + monotonic() + clock()
        """,
        "ocm.client.events": "from datetime import datetime\nSTAMP = datetime.now\n",
        "ocm.server.tcp": "import asyncio\n",  # an adapter: allowed
    }
    found = core_does_io(fake_imports(snippets))
    assert [line.split(" (line")[0] for line in found] == [
        "ocm.server.relay imports socket",
        "ocm.server.guards imports concurrent.futures inside a function",
        "ocm.client.session imports time",
        "ocm.client.session imports time",
    ]
    reads = clock_reads(parse_sources(snippets))
    assert [line.split(": ", 1)[1].split(" (")[0] for line in reads] == [
        "loop.time",
        "time.monotonic",
        "monotonic()",
        "datetime.now",
    ]


@pytest.mark.parametrize("package", sorted(PACKAGE_RULES))
def test_packages_import_only_downwards(package: str) -> None:
    """ocm.wire imports nothing of ocm.server, ocm.client, ocm.cli or ocm.ui; ocm.server
    nothing of ocm.client, ocm.cli or ocm.ui; ocm.client nothing of ocm.cli or ocm.ui;
    ocm.ui nothing of ocm.cli. However the import is made."""
    problems = upward_package_imports(i for i in code_imports() if under(i.source, package))
    assert problems == []


def test_packages_import_only_downwards_can_fail() -> None:
    imports = fake_imports(
        {
            "ocm.wire.names": "from ocm.client.address import parse_server_address\n",
            "ocm.server.guards": "def f():\n    import ocm.ui.chatview\n",
            "ocm.server.app": "from ocm import client\n",
            "ocm.client.chat": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from ocm.cli.args import port
            """,
            "ocm.ui.pipe": "from ocm.cli import client\n",
            # Allowed: downwards, and a prefix that is another package.
            "ocm.cli.server": "from ocm.server import app\n",
            "ocm.client.address": "from ocm.wire.constants import DEFAULT_PORT\n",
        }
    )
    found = upward_package_imports(imports)
    assert [line.split(" (line")[0] for line in found] == [
        "ocm.wire.names imports ocm.client.address",
        "ocm.server.guards imports ocm.ui.chatview inside a function",
        "ocm.server.app imports ocm.client",
        "ocm.client.chat imports ocm.cli.args for type checking",
        "ocm.ui.pipe imports ocm.cli.client",
    ]
    assert not under("ocm.client", "ocm.cli") and under("ocm.cli.args", "ocm.cli")


# ---------------------------------------------------------------------------
# Tests: the tests mirror the source
# ---------------------------------------------------------------------------

TESTS = ROOT / "tests"


@cache
def suite_sources() -> dict[str, Source]:
    """Every module under tests/ by its dotted name (``tests.server.test_tls``)."""
    found: dict[str, Source] = {}
    for path in sorted(TESTS.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found[".".join(parts)] = Source(tree, path.name == "__init__.py")
    return found


def imports_of_test_modules(modules: Mapping[str, Source]) -> list[str]:
    """Each import of a module whose last dotted part starts with ``test_``, however it
    is made (``from tests.x.test_y import h``, ``import tests.x.test_y``, ``from tests.x
    import test_y``, relative, inside a function)."""
    known = set(modules) | set(suite_sources())
    return [
        str(i)
        for name, source in modules.items()
        for i in read_imports(name, source, known)
        if i.target.rsplit(".", 1)[-1].startswith("test_")
    ]


def test_no_test_module_imports_another() -> None:
    """Issue 10: a helper that more than one test module needs lives in a kit
    (tests/kit.py, or the folder's own kit.py, conftest.py), never in a test module that
    others import: that would run its tests' module-level code for the importer, and
    tie one test file's helpers to another's tests."""
    modules = suite_sources()
    assert {"tests.kit", "tests.server.test_tls", "tests.cli.kit"} <= set(modules)
    assert imports_of_test_modules(modules) == []


def test_no_test_module_imports_another_can_fail() -> None:
    snippets = {
        "tests.server.test_tls": "from tests.server.test_tunnel import boot, on_udp\n",
        "tests.cli.test_e2e_cli": "import tests.cli.test_cli\n",
        "tests.cluster.test_cluster": "from tests.server import test_metrics\n",
        "tests.ui.test_e2e_ui": "def f():\n    from .test_terminal import screen_for\n",
        # Allowed: the kits, and modules whose names merely contain "test".
        "tests.ui.test_pipe": """
            from tests.kit import running_server
            from tests.ui.kit import NOON
            from tests import strategies
            import pytest
        """,
    }
    found = imports_of_test_modules(parse_sources(snippets))
    assert [line.split(" (line")[0] for line in found] == [
        "tests.server.test_tls imports tests.server.test_tunnel",
        "tests.cli.test_e2e_cli imports tests.cli.test_cli",
        "tests.cluster.test_cluster imports tests.server.test_metrics",
        "tests.ui.test_e2e_ui imports tests.ui.test_terminal inside a function",
    ]
