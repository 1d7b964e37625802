"""docs/architecture.md tells the truth: its names exist and its arrows are the imports.

The module diagram is compared with the imports read (with :mod:`ast`) from src/ocm:
every module is a node, every arrow is an import and every import an arrow (solid when
made at load time, dotted when made inside a function; type-checking-only imports and
the package ``__init__`` are left out), and no import points up a layer. In every
diagram and every backticked name, ``ocm.x`` must be a module (``ocm.x.Y`` an attribute
of it), ``Class.attr`` a real attribute, CamelCase names real classes, UPPER_SNAKE names
real constants or enum members, and a ``call()`` in a sequence message a method of the
participant that receives it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
SRC = ROOT / "src" / "ocm"

# The sequences the architecture page must show (its ### headings), and the life cycles.
SEQUENCES = (
    "Create a room",
    "Join a room",
    "Chat",
    "A member leaves",
    "The host leaves",
    "A silent member is dropped",
    "The server shuts down",
)
# Modules of the lower layers may not do I/O themselves (STYLE.md: sans-I/O core).
IO_MODULES = frozenset({"asyncio", "selectors", "socket", "ssl", "subprocess", "threading"})
ENUMS = (
    "ocm.wire.Operation",
    "ocm.wire.State",
    "ocm.wire.Kind",
    "ocm.errors.ErrorCode",
)

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


def module_diagram() -> ModuleDiagram:
    (block,) = block_of("flowchart")
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


# ---------------------------------------------------------------------------
# The code
# ---------------------------------------------------------------------------


def source_modules() -> dict[str, Path]:
    return {f"ocm.{p.stem}": p for p in sorted(SRC.glob("*.py")) if p.stem != "__init__"}


def _is_type_checking(node: ast.If) -> bool:
    return ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    """What an import statement loads, as ``ocm.x`` modules or third-party top names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif node.level:  # relative: only inside the ocm package
        names = [f"ocm.{node.module}" if node.module else "ocm"]
    else:
        names = [node.module or ""]
    loaded: list[str] = []
    for name in names:
        if name == "ocm" and isinstance(node, ast.ImportFrom):
            # "from ocm import terminal" loads a module; "from ocm import __version__" not.
            loaded += [f"ocm.{a.name}" for a in node.names if (SRC / f"{a.name}.py").exists()]
        elif name.startswith("ocm."):
            loaded.append(".".join(name.split(".")[:2]))
        elif name != "ocm":
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top != "__future__":
                loaded.append(top)
    return loaded


def real_edges() -> frozenset[Edge]:
    edges: dict[tuple[str, str], bool] = {}

    def walk(module: str, node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue  # for mypy only: nothing is loaded
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import | ast.ImportFrom):
                for target in _imported(child):
                    # Loaded at import time anywhere in the module: a solid arrow.
                    edges[(module, target)] = edges.get((module, target), True) and inner
            walk(module, child, inner)

    for module, path in source_modules().items():
        walk(module, ast.parse(path.read_text(encoding="utf-8")), False)
    return frozenset(Edge(a, b, lazy) for (a, b), lazy in edges.items() if a != b)


def stdlib_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@cache
def namespace() -> dict[str, Any]:
    """Every class, function, type alias and constant the ocm modules define."""
    found: dict[str, Any] = {}
    for module_name in source_modules():
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


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------


def named_text() -> list[str]:
    """Where the page names code: its diagrams and its backticked spans."""
    return mermaid_blocks() + BACKTICKED.findall(doc_text())


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
        section = text.split(f"\n### {title}\n", 1)
        assert len(section) == 2, f'no "### {title}" section'
        assert section[1].lstrip().startswith("```mermaid\nsequenceDiagram"), title
    for title, cls in (
        ("A room", "ocm.server.registry.Room"),
        ("A member", "ocm.server.registry.Member"),
    ):
        section = text.split(f"\n### {title}\n", 1)
        assert len(section) == 2, f'no "### {title}" section'
        diagram = section[1].split("```", 2)[1]
        assert diagram.startswith("mermaid\nstateDiagram") and cls in diagram, title


# ---------------------------------------------------------------------------
# Modules and imports
# ---------------------------------------------------------------------------


def test_module_diagram_shows_every_module() -> None:
    shown = {m for m in module_diagram().modules.values() if m.startswith("ocm.")}
    assert shown == set(source_modules())


def test_module_diagram_arrows_are_the_real_imports() -> None:
    diagram = module_diagram()
    ids = {module: node for node, module in diagram.modules.items()}
    real = real_edges()
    missing = sorted(e.mermaid(ids) for e in real - diagram.edges)
    extra = sorted(e.mermaid(ids) for e in diagram.edges - real)
    assert (missing, extra) == ([], []), "add the first list to the diagram, drop the second"


def test_imports_never_point_up_a_layer() -> None:
    layers = module_diagram().layers
    assert set(layers) >= set(source_modules()), "every module sits in a numbered layer"
    upward = [
        f"{e.source} (layer {layers[e.source]}) imports {e.target} (layer {layers[e.target]})"
        for e in real_edges()
        if e.target in layers and layers[e.target] > layers[e.source]
    ]
    assert upward == []


def test_below_the_front_ends_nothing_outside_the_standard_library_is_imported() -> None:
    """The README's promise: the server runs on the standard library alone."""
    layers = module_diagram().layers
    third_party = [
        f"{e.source} imports {e.target}"
        for e in real_edges()
        if not e.target.startswith("ocm.") and layers.get(e.source, 4) < 4
    ]
    assert third_party == []


@pytest.mark.parametrize(
    "module",
    ["ocm.errors", "ocm.wire", "ocm.server.registry", "ocm.server.relay", "ocm.client.session"],
)
def test_the_wire_format_and_the_core_do_no_io(module: str) -> None:
    assert module_diagram().layers[module] <= 2
    assert stdlib_imports(source_modules()[module]) & IO_MODULES == set()


def test_the_checks_catch_a_wrong_page() -> None:
    """The helpers above fail on made-up names, so the tests can fail."""
    assert resolve("ocm.nonexistent") is not None
    assert resolve("ocm.server.registry.NoSuchRegistry") is not None
    assert resolve("ocm.server.registry.RoomRegistry.create_room") is None
    assert not has_attribute(namespace()["RoomRegistry"], "create_lobby")
    assert has_attribute(namespace()["TcrpHandler"], "writers")  # set in __init__
    assert "ChatClient" in namespace() and "NoSuchClient" not in namespace()
    assert "CREATE_ROOM" in enum_members() and "DELETE_ROOM" not in enum_members()
