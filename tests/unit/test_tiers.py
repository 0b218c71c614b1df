"""The tree shows the tiers (docs/architecture.md, "The tiers in the tree"): no import
points up a tier, the master's modules never import leader, worker or broker code, and no
import circle exists. Imports under `if TYPE_CHECKING:` count too: a circle that only the
type checker sees is still a knot for the reader."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "qsupervisor"

# Lowest first; a module may import its own tier and those below it.
TIERS = ["shared", "broker", "worker", "leader", "master", "launchers"]
# The herald sits beside the leaders: forked by the master, it talks to the broker.
PACKAGES = {"broker": "broker", "worker": "worker", "leader": "leader", "herald": "leader",
            "master": "master",
            "daemon": "launchers", "ctl": "launchers"}


def tier(module: str) -> str:
    parts = module.split(".")
    return PACKAGES.get(parts[1], "shared") if len(parts) > 1 else "shared"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


GRAPH = {name: imports(name, path, set(modules())) for name, path in modules().items()}


def test_the_graph_is_read() -> None:
    assert "qsupervisor.master.pool" in GRAPH["qsupervisor.master.program"]
    assert "qsupervisor.worker.main" in GRAPH["qsupervisor.leader.forkserver"]


# The package itself is the public facade (`qsupervisor.publish`, `Job`): it names the
# publisher only for the type checker and imports it on first use (PEP 562), so importing
# qsupervisor costs no broker library; test_importing_... below holds it to that.
FACADE = "qsupervisor"


@pytest.mark.parametrize("module", sorted(set(GRAPH) - {FACADE}))
def test_no_import_points_up_a_tier(module: str) -> None:
    level = TIERS.index(tier(module))
    upward = sorted(d for d in GRAPH[module] if TIERS.index(tier(d)) > level)
    assert not upward, f"{module} ({tier(module)}) imports from above: {upward}"


def test_the_master_imports_no_leader_worker_or_broker_code() -> None:
    for module, deps in GRAPH.items():
        if tier(module) == "master":
            assert not {tier(d) for d in deps} & {"leader", "worker", "broker"}, module


def test_no_import_circle() -> None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(GRAPH[module]):
            if state.get(dep) == 1:
                circle = path[path.index(dep):] + [dep]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("module", [FACADE, "qsupervisor.master.arbiter"])
def test_importing_loads_no_broker_library(module: str) -> None:
    code = (f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m == 'pika' or m.startswith("
            "('qsupervisor.broker', 'qsupervisor.worker', 'qsupervisor.leader'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent).stdout.strip()
    assert out == "[]"
