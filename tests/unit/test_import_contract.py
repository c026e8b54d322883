"""The import contract: cores import no I/O library, services reach each other only through
`shared`, and no new import cycle appears (read from the source, lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IO_LIBRARIES = {"nats", "aiohttp", "grpc", "kubernetes_asyncio", "pynvml", "subprocess", "socket"}
KNOWN_CYCLES: set[frozenset[str]] = set()


def modules() -> dict[str, set[str]]:
    found: dict[str, Path] = {}
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py")]:
        if "kubeletapi" in path.parts:  # generated
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {d for d in deps if d != name}
    return graph


def test_cores_import_no_io_library_and_no_shell() -> None:
    for name, deps in modules().items():
        if ".core" not in name:
            continue
        service_core = name.split(".core")[0] + ".core"
        for dep in deps:
            assert dep.split(".")[0] not in IO_LIBRARIES, (name, dep)
            if dep.startswith("services."):
                assert dep.startswith(service_core), (name, dep)


def test_services_reach_each_other_only_through_shared() -> None:
    for name, deps in modules().items():
        if name.startswith("services."):
            service = name.split(".")[1]
            for dep in deps:
                if dep.startswith("services.") and len(dep.split(".")) > 1:
                    assert dep.split(".")[1] == service, (name, dep)
        if name.startswith("shared"):
            assert not any(d.startswith("services") for d in deps), name


def test_no_new_import_cycle() -> None:
    graph = modules()
    local = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    cycles: set[frozenset[str]] = set()
    stack: list[str] = []

    def walk(node: str, on_path: set[str], seen: set[str]) -> None:
        stack.append(node)
        on_path.add(node)
        for dep in local[node]:
            if dep in on_path:
                cycles.add(frozenset(stack[stack.index(dep) :]))
            elif dep not in seen:
                seen.add(dep)
                walk(dep, on_path, seen)
        on_path.discard(node)
        stack.pop()

    for start in local:
        walk(start, set(), {start})
    assert cycles <= KNOWN_CYCLES, cycles - KNOWN_CYCLES
