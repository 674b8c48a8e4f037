"""Import hygiene, read from the source.

1. The gateway stays light: importing it (and the console script) pulls in no engine or
   training stack.
2. No import circles between the project's modules.
3. Arrows point one way (ARCHITECTURE.md). The top-level packages are layered, lowest
   first, and a module may import only from its own package or a lower one:

       adapters < router < gateway < engine < training < load_tests < demo < cli

   ``engine`` (the vLLM plugin, the engine launcher, the fake engine) is a wing that the
   load tests, the demo and the console script use; of the server it imports only
   ``adapters.errors`` (the root of every error), and the server never imports it. Its
   vLLM plugin runs inside vLLM's processes, loaded through an entry point: nothing of
   ours imports it, and it imports nothing of ours. ``cli`` (the ``lora-gateway`` console
   script) composes every package, so it sits above them all; the demo wing sits above
   what it drives; nothing imports either.
4. ``training`` and ``load_tests`` talk to the server over HTTP: of ``gateway``, ``router``
   and ``adapters`` they may import only ``adapters.validation`` (to check an adapter
   before upload), ``adapters.errors`` (the error it raises), ``gateway.admin_client``
   (the one client of the admin API, which shares only the wire format with the server)
   and ``gateway.demo_keys`` (the demo's well-known keys, constants only).

The graph is built with ``ast`` from every ``.py`` file of those packages, so it sees what
``import`` never runs in a test: imports inside functions (lazy ones), relative imports,
``TYPE_CHECKING`` blocks, and ``importlib.import_module("a.literal")``. An arrow that
cannot be removed yet sits in :data:`ALLOWED` with its reason; anything new fails, and so
does an entry that no longer matches an import, so the list only shrinks.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import modules_loaded_by

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "vllm", "transformers", "peft", "bitsandbytes", "trl", "datasets")

# Lowest first. A module may import from its own package or one to its left.
LAYERS = ("adapters", "router", "gateway", "engine", "training", "load_tests", "demo", "cli")
RANK = {pkg: i for i, pkg in enumerate(LAYERS)}
SERVER = frozenset({"adapters", "router", "gateway"})
HTTP_CLIENTS = frozenset({"training", "load_tests"})
# What an HTTP client package may import of the server (ARCHITECTURE.md), the one admin
# API client (issue 17), which imports neither FastAPI nor the server's state, and the
# demo's well-known keys (constants only; the server's settings import them too).
SERVER_MODULES_FOR_CLIENTS = frozenset(
    {"adapters.validation", "adapters.errors", "gateway.admin_client", "gateway.demo_keys"}
)

# (importing module, imported module) -> why it is still there, for an arrow that cannot
# be removed yet. Empty since issue 17; an entry that no longer matches an import fails.
ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Arrow:
    """One import statement: who imports what, where, and how."""

    source: str
    target: str
    path: Path
    line: int
    how: str  # "import", "lazy import" (inside a function) or "importlib"

    def __str__(self) -> str:
        where = self.path.relative_to(ROOT).as_posix()
        return f"{self.source} -> {self.target} ({self.how}, {where}:{self.line})"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {
        _module_name(f): f
        for pkg in LAYERS
        if (ROOT / pkg).is_dir()
        for f in sorted((ROOT / pkg).rglob("*.py"))
    }


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``import name`` runs last: its longest prefix that is one."""
    parts = name.split(".")
    while parts:
        if (candidate := ".".join(parts)) in modules:
            return candidate
        parts.pop()
    return None


def _package_of(module: str, path: Path) -> str:
    """The package a relative import in ``module`` starts from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _absolute(node: ast.ImportFrom, module: str, path: Path) -> str:
    if node.level == 0:
        return node.module or ""
    base = _package_of(module, path).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _importlib_target(node: ast.Call) -> str | None:
    """``importlib.import_module("x")``, ``import_module("x")`` or ``__import__("x")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


def arrows_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Arrow]:
    tree = ast.parse(path.read_text(), filename=str(path))
    lazy_lines: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            lazy_lines |= {n.lineno for n in ast.walk(fn) if isinstance(n, ast.stmt | ast.expr)}

    def arrow(target: str | None, node: ast.AST, how: str) -> Iterator[Arrow]:
        line = getattr(node, "lineno", 0)
        if target is not None and target != module:
            if how == "import" and line in lazy_lines:
                how = "lazy import"
            yield Arrow(module, target, path, line, how)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from arrow(_resolve(alias.name, modules), node, "import")
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, path)
            for alias in node.names:
                # ``from pkg import sub`` imports the submodule when there is one.
                target = _resolve(f"{base}.{alias.name}", modules) if base else None
                yield from arrow(target or _resolve(base, modules), node, "import")
        elif isinstance(node, ast.Call) and (name := _importlib_target(node)):
            if name.startswith("."):
                name = _package_of(module, path) + name
            yield from arrow(_resolve(name, modules), node, "importlib")


def import_graph() -> list[Arrow]:
    modules = project_modules()
    # One arrow per statement, however many names it imports.
    return list(dict.fromkeys(a for m, p in modules.items() for a in arrows_of(m, p, modules)))


def find_cycles(arrows: list[Arrow]) -> list[list[str]]:
    """One concrete cycle (``a -> b -> ... -> a``) per strongly connected component."""
    graph: dict[str, set[str]] = {}
    for a in arrows:
        graph.setdefault(a.source, set()).add(a.target)
        graph.setdefault(a.target, set())
    # Tarjan, iteratively (the graph is a few hundred modules, but recursion depth varies).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_cycle_in(c, graph) for c in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    start = min(component)
    # Breadth-first from start back to start, inside the component: a shortest cycle.
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in previous:
                    previous[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle in component {sorted(component)}")


def violations(arrows: list[Arrow]) -> list[Arrow]:
    """Arrows that point up the layers, or from an HTTP client into the server."""
    bad = []
    for a in arrows:
        src, dst = a.source.split(".")[0], a.target.split(".")[0]
        if src == dst:
            continue
        upward = RANK[dst] > RANK[src]
        into_server = (
            src in HTTP_CLIENTS and dst in SERVER and a.target not in SERVER_MODULES_FOR_CLIENTS
        )
        if upward or into_server:
            bad.append(a)
    return bad


def test_nothing_imports_the_vllm_plugin() -> None:
    # vLLM loads it by entry point in its own processes; an import of ours would pull it
    # (and, when it registers, torch and vLLM) into a process that must stay light.
    plugin = "engine.vllm_plugin"
    assert plugin in project_modules()
    arrows = import_graph()
    importers = [a for a in arrows if a.target == plugin]
    assert not importers, "imports of the vLLM plugin:\n" + "\n".join(map(str, importers))
    # And it imports nothing of ours: in vLLM's processes the project may not be importable.
    imports = [a for a in arrows if a.source == plugin]
    assert not imports, "the vLLM plugin imports:\n" + "\n".join(map(str, imports))


def test_gateway_imports_no_heavy_module() -> None:
    ours = "gateway.app, gateway.cli, cli.main, router.pool, adapters.registry"
    heavy = modules_loaded_by(ours, HEAVY)
    assert not heavy, f"heavy modules imported: {heavy}"


def test_every_packaged_top_level_package_has_a_layer() -> None:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packaged = {p.rstrip("*") for p in find["packages"]["find"]["include"]}
    assert packaged == set(LAYERS), "place each top-level package in LAYERS"
    on_disk = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} - {"tests"}
    assert on_disk <= set(LAYERS), f"unlayered packages: {sorted(on_disk - set(LAYERS))}"


def test_the_scan_sees_lazy_relative_and_importlib_imports(tmp_path: Path) -> None:
    fake = tmp_path / "gateway" / "x.py"
    names = ("gateway", "gateway.a", "gateway.sub", "gateway.sub.b", "router", "router.c")
    modules = {name: tmp_path / "unused.py" for name in names} | {"gateway.x": fake}
    source = (
        "import os\nfrom . import a\nfrom .sub import b\nfrom ..router import c\n"
        "import importlib\n"
        "def f():\n    from router.c import thing\n    importlib.import_module('gateway.a')\n"
        "    __import__('gateway.sub')\n"
    )
    fake.parent.mkdir()
    fake.write_text(source)
    found = {(a.target, a.how) for a in arrows_of("gateway.x", fake, modules)}
    assert found == {
        ("gateway.a", "import"),
        ("gateway.sub.b", "import"),
        ("router.c", "import"),
        ("router.c", "lazy import"),
        ("gateway.a", "importlib"),
        ("gateway.sub", "importlib"),
    }


def test_the_cycle_finder_reports_the_modules() -> None:
    def arrow(s: str, t: str) -> Arrow:
        return Arrow(s, t, ROOT / "x.py", 1, "import")

    arrows = [arrow("p.a", "p.b"), arrow("p.b", "p.c"), arrow("p.c", "p.a"), arrow("p.c", "p.d")]
    assert find_cycles(arrows) == [["p.a", "p.b", "p.c", "p.a"]]
    assert find_cycles([arrow("p.a", "p.b")]) == []


def test_no_import_cycles() -> None:
    arrows = import_graph()
    cycles = find_cycles(arrows)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_cycles_between_packages() -> None:
    # Holds by the layering too, except for what ALLOWED lets through: this keeps even
    # those exceptions from closing a circle.
    packages = [
        Arrow(a.source.split(".")[0], a.target.split(".")[0], a.path, a.line, a.how)
        for a in import_graph()
    ]
    cycles = find_cycles([a for a in packages if a.source != a.target])
    assert not cycles, "package cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_point_down_the_layers() -> None:
    bad = violations(import_graph())
    new = [a for a in bad if (a.source, a.target) not in ALLOWED]
    assert not new, (
        f"imports against the layering {' < '.join(LAYERS)} (ARCHITECTURE.md):\n"
        + "\n".join(map(str, new))
    )
    stale = sorted(set(ALLOWED) - {(a.source, a.target) for a in bad})
    assert not stale, f"ALLOWED names arrows that are gone; delete them: {stale}"
