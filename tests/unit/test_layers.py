"""Import rules between and inside the layers, read from the source without running it.

- cli, scheduler and agent import the API (mctl.v1) and common code, never
  each other: they meet only through gRPC (proto/), so each can be
  deployed, restarted and understood alone; common imports none of them.
- The pure cores (placement, both reconcilers, the scheduler's model, the
  virtual IP allocator) reach no store, etcd, gRPC or protobuf, not even
  through the modules they import: they are decisions on plain values,
  tested without any of those.
- agent/runtime/ is a library: it imports nothing of the agent outside it.
- agent/images/ (the image store and import) does not depend on the
  runtime nor on bundle assembly (agent/bundle/), which is built on top of
  both.
- No import cycles: modules of one package form a hierarchy.

The module graph is built from every .py file of the folders that
pyproject.toml maps into the `mctl` namespace (generated *_pb2 code left
out), with every import statement counted: at module level, inside
functions and under `if TYPE_CHECKING:` alike, since each of them couples
the importer to what it names. Rules on folders that do not exist pass.
This is the check import-linter would make, written over ast because that
tool resolves packages by their place on disk and our folders are mapped
into one namespace (see tools/typecheck.sh for mypy's way around the same).
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LAYERS = {"cli": "mctl.cli", "scheduler": "mctl.scheduler", "agent": "mctl.agent",
          "common": "mctl.common"}
ALLOWED = {
    "mctl.cli": {"mctl.cli", "mctl.common", "mctl.v1"},
    "mctl.scheduler": {"mctl.scheduler", "mctl.common", "mctl.v1"},
    "mctl.agent": {"mctl.agent", "mctl.common", "mctl.v1"},
    "mctl.common": {"mctl.common", "mctl.v1"},
}
PURE_CORES = ["mctl.scheduler.placement", "mctl.scheduler.reconcile", "mctl.scheduler.model",
              "mctl.scheduler.vips", "mctl.agent.reconcile"]
NOT_FOR_PURE_CORES = ["grpc", "google.protobuf", "mctl.v1", "mctl.scheduler.store",
                      "etcd3", "pyetcd"]


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@dataclass(frozen=True)
class Import:
    importer: str
    target: str              # the module imported, resolved to a module of ours if it is one
    line: int

    def __str__(self) -> str:
        return f"{self.importer} imports {self.target} (line {self.line})"


@cache
def package_dirs() -> dict[str, Path]:
    """pyproject's [tool.setuptools.package-dir]: package name -> folder."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


@cache
def modules() -> dict[str, Path]:
    """Every module of the mctl namespace and its file."""
    found: dict[str, Path] = {}
    for package, folder in package_dirs().items():
        for path in folder.glob("*.py"):
            if path.stem.endswith(("_pb2", "_pb2_grpc")):
                continue
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def _package_of(module: str) -> str:
    return module if modules()[module].stem == "__init__" else module.rpartition(".")[0]


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    """The module an `from X import ...` names, with relative imports made absolute."""
    if node.level == 0:
        return node.module or ""
    base = _package_of(importer).split(".")
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    """What `module` imports; `from pkg import sub` imports pkg.sub if that is a module."""
    tree = ast.parse(modules()[module].read_text(), filename=str(modules()[module]))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.append(Import(module, sub if sub in modules() else source, node.lineno))
    return tuple(found)


def ours(module: str) -> bool:
    return module in modules()


def reachable(start: str, through: str = "mctl") -> Iterator[list[Import]]:
    """Every import chain from `start`, following modules of ours under `through`.

    Yields each import once, with the chain of imports that leads to it.
    """
    seen = {start}
    frontier: list[tuple[str, list[Import]]] = [(start, [])]
    while frontier:
        module, chain = frontier.pop()
        for imp in imports_of(module):
            path = chain + [imp]
            yield path
            if ours(imp.target) and within(imp.target, through) and imp.target not in seen:
                seen.add(imp.target)
                frontier.append((imp.target, path))


def show(chain: list[Import]) -> str:
    return " -> ".join([chain[0].importer] + [f"{i.target} (line {i.line})" for i in chain])


def under(package: str) -> list[str]:
    return sorted(m for m in modules() if within(m, package))


# -- the rules -----------------------------------------------------------------------------


def test_the_graph_covers_the_tree():
    # A mapping or glob that silently missed files would make every rule pass;
    # a folder missing from package-dir would also be missing from an install.
    mapped = set(modules().values())
    missed = [str(path.relative_to(ROOT)) for folder in ("cli", "scheduler", "agent", "common")
              for path in (ROOT / folder).rglob("*.py") if path not in mapped]
    assert not missed, "not in pyproject's package-dir: " + ", ".join(missed)
    for core in PURE_CORES:
        assert ours(core), f"{core}: no such module (update PURE_CORES)"
    assert "mctl.scheduler.model" in {i.target for i in imports_of("mctl.scheduler.placement")}


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_layer_imports_only_what_it_may(folder):
    layer = LAYERS[folder]
    crossings = [str(imp) for m in under(layer) for imp in imports_of(m)
                 if within(imp.target, "mctl")
                 and not any(within(imp.target, a) for a in ALLOWED[layer])]
    assert not crossings, "\n".join(crossings)


def test_the_walk_follows_imports_through_our_modules():
    # A positive control for the rules that pass on finding nothing: the
    # CLI's entry point reaches gRPC, through modules of ours.
    chains = [c for c in reachable("mctl.cli.main") if within(c[-1].target, "grpc")]
    assert chains
    assert any(len(c) > 1 for c in chains), "only direct imports were followed"


@pytest.mark.parametrize("core", PURE_CORES)
def test_pure_cores_reach_no_store_grpc_or_protobuf(core):
    found = [show(chain) for chain in reachable(core)
             if any(within(chain[-1].target, f) for f in NOT_FOR_PURE_CORES)]
    assert not found, "\n".join(found)


def test_the_runtime_imports_nothing_of_the_agent_outside_it():
    crossings = [str(imp) for m in under("mctl.agent.runtime") for imp in imports_of(m)
                 if within(imp.target, "mctl.agent")
                 and not within(imp.target, "mctl.agent.runtime")]
    assert not crossings, "\n".join(crossings)


@pytest.mark.parametrize("below", ["mctl.agent.runtime", "mctl.agent.bundle"])
def test_images_do_not_depend_on_the_runtime_or_bundles(below):
    found = [show(chain) for m in under("mctl.agent.images")
             for chain in reachable(m, through="mctl.agent")
             if within(chain[-1].target, below)]
    assert not found, "\n".join(found)


def cycles() -> list[list[str]]:
    """The strongly connected components of the module graph with more than one module
    (or a module importing itself), by Tarjan's algorithm, iteratively."""
    graph = {m: sorted({i.target for i in imports_of(m) if ours(i.target) and i.target != m}
                       | ({m} if any(i.target == m for i in imports_of(m)) else set()))
             for m in modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
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
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    described = []
    for component in cycles():
        members = set(component)
        edges = [str(i) for m in component for i in imports_of(m) if i.target in members]
        described.append(" <-> ".join(component) + ":\n    " + "\n    ".join(edges))
    assert not described, "import cycles:\n" + "\n".join(described)


def test_the_cycle_finder_finds_cycles(monkeypatch):
    # The rule above passes on an empty answer: check that a cycle is one.
    fake = {"mctl.a": ["mctl.b"], "mctl.b": ["mctl.c"], "mctl.c": ["mctl.a"],
            "mctl.d": ["mctl.a"], "mctl.e": ["mctl.e"]}
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "modules", lambda: dict.fromkeys(fake, ROOT))
    monkeypatch.setattr(this, "imports_of",
                        lambda m: tuple(Import(m, t, 1) for t in fake[m]))
    assert sorted(cycles()) == [["mctl.a", "mctl.b", "mctl.c"], ["mctl.e"]]
