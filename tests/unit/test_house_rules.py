"""The house's size rules (docs/architecture.md, "Layers"): a module of the product stays
under 600 lines and a function under 80, so each can be read in one sitting; a command module
of the face stays under 400. The import rules are checked by lint-imports (pyproject.toml)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("gateway", "collectors", "cloud_sync")
MAX_MODULE_LINES, MAX_FACE_LINES, MAX_FUNCTION_LINES = 600, 400, 80


def _modules(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions of `path` longer than `limit` lines, decorators and docstring included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            assert node.end_lineno is not None
            length = node.end_lineno - first + 1
            if length > limit:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    return out


def test_no_module_of_the_product_is_over_600_lines():
    over = [f"{p.relative_to(ROOT)}: {_lines(p)}" for p in _modules(*PRODUCT)]
    assert [
        o for o, p in zip(over, _modules(*PRODUCT), strict=True) if _lines(p) > MAX_MODULE_LINES
    ] == []


def test_no_command_module_is_over_400_lines():
    face = _modules("gateway/cli")
    assert face, "the face is the package gateway/cli"
    assert [f"{p.relative_to(ROOT)}: {n}" for p in face if (n := _lines(p)) >= MAX_FACE_LINES] == []


def test_no_function_outside_tests_and_bench_is_over_80_lines():
    assert [f for p in _modules(*PRODUCT, "simulators") for f in long_functions(p)] == []


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("gateway/store/sqlite.py", "import cloud_sync", "the store knows nothing of delivery"),
        ("gateway/activity/aggregation.py", "import simulators.platform", "only the face"),
        ("gateway/store/sqlite.py", "import gateway.runtime.supervisor", "in layers"),
        ("cloud_sync/outbox.py", "import gateway.store.sqlite", "cloud_sync sees the gateway's"),
        ("collectors/base.py", "import gateway.config", "collectors see the gateway's"),
        ("simulators/platform.py", "import gateway.activity.aggregation", "rooms are its own"),
        ("gateway/runtime/supervisor.py", "import collectors.modbus.link", "public __init__"),
    ],
)
def test_the_import_contracts_catch_a_forbidden_import(
    tmp_path: Path, module: str, line: str, contract: str
):
    """A copy of the tree with one forbidden import breaks the contract that forbids it."""
    for pkg in ("gateway", "collectors", "cloud_sync", "simulators"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    lint_imports = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    broken = [s for s in done.stdout.splitlines() if s.endswith(" BROKEN")]
    assert any(contract in s for s in broken), done.stdout


def test_every_room_of_the_gateway_is_in_a_layer():
    """A new module or package in gateway/ must take its place in the layers contract, or
    the contract would not see what it imports."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.split("|")}
    rooms = {
        f"gateway.{p.stem if p.is_file() else p.name}"
        for p in (ROOT / "gateway").iterdir()
        if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
        or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert rooms - named == set()
