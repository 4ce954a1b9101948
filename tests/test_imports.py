"""What importing a module pulls in, checked in a fresh interpreter, and that the import graph has no cycle.

Why: reading a run config, starting the CLI or unpickling a Ray Train worker's task must not drag in
Ray, torch or another stage's code (seconds of start-up on every worker, and a failure in a stage
that is not even running). ``sys.modules`` of a new ``python -c`` is the ground truth; the cycle check
reads the source with ``ast``, imports inside functions included, since those hide cycles that only
bite when the function runs.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("lm", "pipelines", "actors", "serving")
# modules that hold settings and nothing else: what a config module may import
PLAIN = ("lm.config_base", "lm.split_patterns", "pipelines.errors", "pipelines.stages")


def modules_after(code: str) -> set[str]:
    """``sys.modules`` after running ``code`` in a fresh interpreter with this checkout first on the path."""
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "RAY_USAGE_STATS_ENABLED": "0"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def source_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules.get(name, Path()).name == "__init__.py"


def heavy(loaded: set[str], names: tuple[str, ...] = ("ray", "torch")) -> list[str]:
    return sorted(m for m in loaded if m.split(".")[0] in names)


def test_importing_lm_never_imports_ray() -> None:
    names = sorted(m for m in source_modules() if m == "lm" or m.startswith("lm."))
    assert "lm.engine.vllm_engine" in names and "lm.train.trainer" in names
    loaded = modules_after("\n".join(f"import {m}" for m in names))
    assert heavy(loaded, ("ray",)) == []
    assert not any(m.startswith(("pipelines", "actors", "serving")) for m in loaded)


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_a_stage_config_imports_no_implementation(stage) -> None:
    """Plain pydantic: no torch, no Ray, no stage's code (its own included), only other settings."""
    modules = source_modules()
    loaded = modules_after(f"import {stage.config.__module__}")
    assert heavy(loaded) == []
    ours = {m for m in loaded if m in modules}
    code = sorted(m for m in ours if not (m in PLAIN or m.endswith("config") or is_package(m, modules)))
    assert code == [], f"{stage.config.__module__} imports implementation modules"


def test_the_run_config_and_the_cli_import_no_stage_code() -> None:
    """Reading a config and building the CLI's parser: settings only, plus the runner's own modules."""
    modules = source_modules()
    runner = {
        "pipelines.cli",
        "pipelines.runner",
        "pipelines.runtime",
        "pipelines.console",
        "pipelines.shorthands",
        "pipelines.run_dir",
        "pipelines.storage",
    }
    for module, allowed in (("pipelines.config", set()), ("pipelines.cli", runner)):
        loaded = modules_after(f"import {module}")
        assert heavy(loaded) == [], module
        code = sorted(
            m
            for m in loaded
            if m in modules
            and m not in allowed
            and not (m in PLAIN or m.endswith("config") or is_package(m, modules) or m == "lm.atomic")
        )
        assert code == [], module


def test_the_pretrain_worker_imports_no_other_stage() -> None:
    """A Ray Train worker imports the loop and unpickles the task: nothing of clean or world."""
    loaded = modules_after("import pipelines.train.loop, pipelines.pretrain.task")
    assert "torch" in loaded  # it does train
    others = sorted(m for m in loaded if m.startswith(("pipelines.clean", "pipelines.world")))
    assert others == []
    assert "pipelines.config" not in loaded  # not even the run config, which names every stage


def imports_of(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that ``module`` imports anywhere in its body (functions included), except in
    ``if TYPE_CHECKING:`` blocks, which never run (annotations of two modules that name each other)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]

    def ours(name: str) -> str | None:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in modules:
                return ".".join(parts[:i])
        return None

    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(filter(None, (ours(a.name) for a in child.names)))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*up, *([child.module] if child.module else [])])
                for alias in child.names:
                    found.update(filter(None, [ours(f"{base}.{alias.name}") or ours(base)]))
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(module)
    return found


def test_there_are_no_import_cycles() -> None:
    modules = source_modules()
    graph = {m: imports_of(p, m, modules) for m, p in modules.items()}
    assert "pipelines.demo" in graph["pipelines.cli"]  # function-level imports are seen
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        path.append(m)
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                walk(dep)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m)
    assert cycles == []
