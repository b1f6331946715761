"""core/ is in layers, and imports point down them: no cycle, no upward import, also through
imports placed inside functions (only ``if TYPE_CHECKING:`` imports are left out: they never run).

Layers, bottom first (each may import its own and any lower one):

    0  core.config, core.errors, core.platform
    1  core.flow
    2  core.queue
    3  core.execution
    4  core.fallback
    5  core.api
    6  core.workflows, core.events, core.schedule
    7  core.worker
    8  core.ops
    9  the façades at DESIGN.md's paths: core.redis_queues, core.auth, core.periodic (nothing in core imports them)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.servers import ROOT

CORE = ROOT / "core"
LAYERS = {
    "core.config": 0, "core.errors": 0, "core.platform": 0,
    "core.flow": 1,
    "core.queue": 2,
    "core.execution": 3,
    "core.fallback": 4,
    "core.api": 5,
    "core.workflows": 6, "core.events": 6, "core.schedule": 6,
    "core.worker": 7,
    "core.ops": 8,
    "core.redis_queues": 9, "core.auth": 9, "core.periodic": 9,
}
FACADES = {"core.redis_queues", "core.auth", "core.periodic"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS in {__file__}")


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The core modules ``path`` imports (``from core.x import y`` counts ``core.x.y`` when that is
    a module, else ``core.x``), wherever the import statement sits."""
    tree = ast.parse(path.read_text())
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "core"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "core":
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if f"{node.module}.{alias.name}" in modules}
    return {name for name in found if name in modules and name != "core"}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in CORE.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, modules) for name, path in paths.items()}


def test_every_core_module_is_in_a_layer(graph):
    for module in graph:
        if module != "core":
            layer_of(module)


def test_no_core_module_imports_a_higher_layer_or_a_facade(graph):
    wrong = []
    for module, imported in graph.items():
        if module == "core":
            continue
        for target in imported:
            if target in FACADES:
                wrong.append(f"{module} imports the façade {target}: import from where it is defined")
            elif layer_of(target) > layer_of(module) and not target.startswith(module + "."):
                wrong.append(f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})")
    assert not wrong, "\n".join(sorted(wrong))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target):], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycles_in_core(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from core.api import jobs\n")
    assert imports_of(module, {"core.api.jobs", "core.api"}) == {"core.api", "core.api.jobs"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_public_paths_work():
    """The paths the README, DESIGN.md and the seeds show, imported as they show them."""
    from core.auth import issue_user_token
    from core.config import get_settings
    from core.errors import JobsError, RetryAfter
    from core.events import listen_events
    from core.periodic import list_periodic, register_periodic
    from core.redis_queues import (
        Job,
        JobStatus,
        RedisQueue,
        ai_queue,
        crm_queue,
        email_queue,
        get_ai_queue,
        get_crm_queue,
        get_email_queue,
        get_queue,
        process_ai_request_async,
        send_email_async,
    )
    from core.workflows import Step, chain, enqueue_batch, get_batch
    from routes.extension import FikiriJobs

    assert get_email_queue() is email_queue and get_queue("ai") is ai_queue is get_ai_queue()
    assert get_crm_queue() is crm_queue and isinstance(email_queue, RedisQueue)
    assert JobStatus.COMPLETED.value == "completed" and Job.__name__ == "Job"
    assert issubclass(RetryAfter, Exception) and JobsError.http_status == 400
    assert all(callable(f) for f in (issue_user_token, get_settings, listen_events, list_periodic, register_periodic,
                                     process_ai_request_async, send_email_async, chain, enqueue_batch, get_batch,
                                     FikiriJobs, Step))
