"""One error tree: every exception the project defines descends from ``LoraGatewayError``.

Two complementary looks, so that neither a module that cannot be imported here nor a
class defined inside a function slips through:

1. At run time, in a child process: import every module of the packaged top-level
   packages, then walk ``BaseException``'s subclasses and keep the ones defined in those
   packages. Each must be a subclass of :class:`adapters.errors.LoraGatewayError`.
   The child blocks the heavy stack (torch, transformers, ...): importing it takes about
   ten seconds, and the few modules that need it at import time (``training.sft``,
   ``training.callbacks``, and what imports them) are left to the second look. It runs
   apart so that this test neither pays for nor leaks those imports into the suite.
2. From the source, with ``ast``, in every module: a class whose base *looks like* an
   exception (``...Error``, ``...Exception``, ``...Warning``, ``...Exit``, a built-in
   exception) must be one the first look found in the tree, or name as a base a class
   the first look found there (``class X(TrainingError)`` in a module that imports torch).

``engine.vllm_plugin`` is not imported: it runs inside vLLM's processes and imports
nothing of ours (``test_import_hygiene.py``), so it cannot subclass the root; the source
look still sees it, and it defines no exception.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import importlib.abc
import importlib.machinery
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HEAVY = frozenset({"torch", "vllm", "transformers", "peft", "bitsandbytes", "trl", "datasets"})
NOT_IMPORTED = frozenset({"engine.vllm_plugin"})
EXCEPTION_SUFFIXES = ("Error", "Exception", "Warning", "Exit", "Abort", "Interrupt")
BUILTIN_EXCEPTIONS = frozenset(
    name
    for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, BaseException)
)


def packages() -> list[str]:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return sorted(p.rstrip("*") for p in find["packages"]["find"]["include"])


def project_modules() -> dict[str, Path]:
    out = {}
    for pkg in packages():
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


class _BlockHeavy(importlib.abc.MetaPathFinder):
    """Makes the heavy stack look not installed, for the child process only."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"blocked by the error-tree test: {fullname}", name=fullname)
        return None


def _subclasses(cls: type[BaseException]) -> Iterator[type[BaseException]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def probe() -> None:
    """Run in the child: print, as JSON, the project's exception classes and the modules
    that could not be imported without the heavy stack."""
    sys.meta_path.insert(0, _BlockHeavy())
    heavy, failed = [], []
    for name in project_modules():
        if name in NOT_IMPORTED or name.endswith("__main__"):
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            if (exc.name or "").partition(".")[0] in HEAVY:
                heavy.append(name)
            else:
                failed.append(f"{name}: {exc!r}")
        except Exception as exc:  # an import that breaks is a finding, not a crash
            failed.append(f"{name}: {exc!r}")
    from adapters.errors import LoraGatewayError

    ours = set(packages())
    classes = [
        {"module": c.__module__, "qualname": c.__qualname__, "ok": issubclass(c, LoraGatewayError)}
        for c in set(_subclasses(BaseException))
        if c.__module__.partition(".")[0] in ours
    ]
    print(json.dumps({"classes": classes, "heavy": heavy, "failed": failed}))


@functools.cache
def probed() -> dict[str, Any]:
    """The child's findings, once per test session (the child imports this module, so
    nothing here may run the probe at import time)."""
    code = "from tests.unit.test_error_tree import probe; probe()"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _looks_like_exception(name: str) -> bool:
    return name in BUILTIN_EXCEPTIONS or name.endswith(EXCEPTION_SUFFIXES)


def unproven(module: str, path: Path, tree: set[tuple[str, str]]) -> list[str]:
    """Classes in ``path`` whose bases look like exceptions, that are neither in ``tree``
    ((module, class name) pairs seen to descend from the root) nor built on one of them."""
    tree_names = {name for _, name in tree}
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.ClassDef) or (module, node.name) in tree:
            continue
        bases = [b for b in map(_base_name, node.bases) if b is not None]
        if any(map(_looks_like_exception, bases)) and not set(bases) & tree_names:
            found.append((node.lineno, f"class {node.name}({', '.join(bases)})"))
    return [f"{path.name}:{line}: {what}" for line, what in sorted(found)]


def test_every_module_imports_and_only_training_needs_the_heavy_stack() -> None:
    assert not probed()["failed"], "modules that do not import:\n" + "\n".join(probed()["failed"])
    # What needs torch at import escapes the run-time look; keep it to the training tool
    # (training.sft and what imports it), where the source look covers it.
    heavy = probed()["heavy"]
    assert heavy and all(m.startswith("training.") for m in heavy), heavy


def test_the_probe_sees_the_tree() -> None:
    found = {(c["module"], c["qualname"]) for c in probed()["classes"]}
    for known in [
        ("adapters.errors", "LoraGatewayError"),
        ("adapters.errors", "AdapterValidationError"),
        ("router.backend", "EngineHTTPError"),
        ("engine.launcher", "EngineLaunchError"),
        ("engine.process", "ProcessStartError"),
        ("gateway.admin_client", "AdminConnectionError"),
        ("training.errors", "HardwareError"),
        ("load_tests.errors", "LoadTestError"),
        ("load_tests.scenario", "ScenarioError"),
        ("demo.adapters", "DemoAdapterError"),
    ]:
        assert known in found


def test_every_exception_class_descends_from_the_root() -> None:
    stray = sorted(f"{c['module']}.{c['qualname']}" for c in probed()["classes"] if not c["ok"])
    assert not stray, (
        "exception classes outside the tree; subclass adapters.errors.LoraGatewayError "
        "(keep a built-in as a second base if callers catch it):\n" + "\n".join(stray)
    )


def test_no_exception_class_hides_from_the_run_time_look() -> None:
    tree = {(c["module"], c["qualname"].rpartition(".")[2]) for c in probed()["classes"] if c["ok"]}
    stray = [s for m, p in project_modules().items() for s in unproven(m, p, tree)]
    assert not stray, "exception classes not seen to descend from LoraGatewayError:\n" + (
        "\n".join(stray)
    )


def test_the_source_look_flags_what_it_cannot_place(tmp_path: Path) -> None:
    source = (
        "import click\n"
        "class Known(ValueError): ...\n"
        "class Built(TrainingError): ...\n"
        "def f():\n    class Nested(RuntimeError): ...\n"
        "class Exit(click.exceptions.Exit): ...\n"
        "class Plain(Base): ...\n"
    )
    path = tmp_path / "x.py"
    path.write_text(source)
    tree = {("p.x", "Known"), ("training.errors", "TrainingError")}
    assert unproven("p.x", path, tree) == [
        "x.py:5: class Nested(RuntimeError)",
        "x.py:6: class Exit(Exit)",
    ]


def test_built_in_bases_are_kept_for_callers() -> None:
    # Joining the tree must not change what ``except ValueError``/``except RuntimeError``
    # catch: these subclassed a built-in before the tree, and callers rely on it.
    from adapters.promotion import EvalReportError
    from engine.launcher import EngineLaunchError
    from gateway.route_sync import RoutesNotConfigured
    from load_tests.benchmarks_md import BenchmarksFileError
    from load_tests.peer_litellm import PeerUnavailable
    from load_tests.preflight import PreflightError
    from load_tests.prompts import PromptError
    from load_tests.scenario import ScenarioError
    from load_tests.stack import StackError

    for cls in (EvalReportError, BenchmarksFileError, ScenarioError):
        assert issubclass(cls, ValueError), cls
    for rt in (
        EngineLaunchError,
        RoutesNotConfigured,
        PromptError,
        StackError,
        PeerUnavailable,
        PreflightError,
    ):
        assert issubclass(rt, RuntimeError), rt
