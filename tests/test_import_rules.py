"""The architecture, kept by a test: who may import whom (docs/architecture.md).

- Exchange packages (``recorder/exchanges/<name>/``) never import the capture runtime, the
  analysis, the simulator or the commands.
- Nothing imports the commands (``recorder/cli/``), except the ``__main__`` entry points.
- ``sinks/`` imports only the core (schema, events) and itself.
- Exchange code lives in folders named after the exchange: outside them, only the two
  registries (``recorder/exchanges/__init__.py``, ``recorder/simulator/registry.py``) import
  an exchange's package.
- No import cycles between modules, counting imports made inside functions too (imports
  for type checkers only do not count: they never run).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXCHANGES = ("kraken", "kucoin")
REGISTRIES = {"recorder.exchanges", "recorder.simulator.registry"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (at any depth: functions included), fully qualified."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    # Imports for type checkers only never run: they make no dependency.
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                   for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            # "from package import module" imports the module.
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in ("recorder", "sinks")}


def _modules() -> dict[str, set[str]]:
    out = {}
    for top in ("recorder", "sinks"):
        for path in sorted((ROOT / top).rglob("*.py")):
            out[_module_name(path)] = _imports(path)
    known = set(out)
    # Keep only names that are modules ("from x import name" also yields x.name).
    return {m: {i for i in imps if i in known} for m, imps in out.items()}


MODULES = _modules()


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _exchange_of(module: str) -> str | None:
    for name in EXCHANGES:
        if _under(module, f"recorder.exchanges.{name}") or _under(
                module, f"recorder.simulator.{name}"):
            return name
    return None


def test_the_rules_see_the_code():
    assert len(MODULES) > 80
    assert "recorder.capture.collector" in MODULES["recorder.capture.runner"]
    assert "recorder.exchanges.kraken.v2" in MODULES["recorder.exchanges.kraken.feed"]


def test_exchange_packages_stay_below_the_runtime():
    forbidden = ("recorder.capture", "recorder.analysis", "recorder.cli", "recorder.simulator")
    bad = [(m, i) for m, imps in MODULES.items() for i in imps
           if _under(m, "recorder.exchanges") and any(_under(i, f) for f in forbidden)]
    assert bad == []


def test_nothing_imports_the_commands():
    bad = [(m, i) for m, imps in MODULES.items() for i in imps
           if _under(i, "recorder.cli") and not _under(m, "recorder.cli")
           and not m.endswith("__main__")]
    assert bad == []


def test_sinks_import_only_the_core():
    bad = [(m, i) for m, imps in MODULES.items() for i in imps
           if _under(m, "sinks") and not (_under(i, "sinks") or _under(i, "recorder.core"))]
    assert bad == []


def test_exchange_code_is_imported_only_from_its_folder_and_the_registries():
    bad = []
    for m, imps in MODULES.items():
        if m in REGISTRIES:
            continue
        for i in imps:
            owner = _exchange_of(i)
            if owner is not None and _exchange_of(m) != owner:
                bad.append((m, i))
    assert bad == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    # A package's __init__ importing its own modules is not a cycle of the design.
    graph = defaultdict(set)
    for m, imps in MODULES.items():
        for i in imps:
            if not (_under(m, i) or _under(i, m)):
                graph[m].add(i)
    assert _cycles(graph) == []


@pytest.mark.parametrize("name", EXCHANGES)
def test_each_exchange_is_in_its_own_folder(name):
    folder = ROOT / "recorder" / "exchanges" / name
    if not folder.is_dir():
        pytest.fail(f"recorder/exchanges/{name}/ is missing")
    assert (folder / "spec.py").is_file(), "an exchange describes itself in spec.py"


def test_no_module_shadows_the_standard_library():
    """bench/ is put on sys.path by the benchmark scripts (and tests that import them): a
    bench/profile.py once replaced the standard ``profile`` module that pyspark imports."""
    import sys

    ours = {p.stem for d in ("bench", "tests") for p in (ROOT / d).glob("*.py")}
    ours |= {p.name for p in ROOT.iterdir() if p.is_dir()}
    assert not ours & set(sys.stdlib_module_names)
