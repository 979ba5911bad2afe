"""The rooms' import rules (``shared/ARCHITECTURE.md``), read from the source with ``ast``.

One direction only: ``api → recommender → {embedding, index}``; ``embedding`` and ``index``
know nothing of each other or of the service; no module imports itself round a circle, not
even through an import inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("api", "recommender", "embedding", "index")
# room → the rooms it must never import
FORBIDDEN = {"recommender": {"api"}, "embedding": {"api", "recommender", "index"},
             "index": {"api", "recommender", "embedding"}, "api": set()}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(module, names imported from it) for every import of ``path``, anywhere in it (imports
    inside functions included), relative ones resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((a.name, ()) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((mod, tuple(a.name for a in node.names)))
    return [(m, names) for m, names in found if m.split(".")[0] in ROOMS]


def _graph() -> dict[str, set[str]]:
    """Our module → the modules of ours it imports."""
    files = [p for room in ROOMS for p in (ROOT / room).rglob("*.py")]
    modules = {_module_name(p): p for p in files}

    def known(m: str) -> str:
        while m and m not in modules:  # `import pkg.mod.Class`-like names: the module holding them
            m = m.rpartition(".")[0]
        return m

    graph = {}
    for mod, path in modules.items():
        targets = set()
        for imp, names in _imports(path):
            subs = [f"{imp}.{n}" for n in names if f"{imp}.{n}" in modules]  # `from pkg import module`
            targets.update(subs)
            if len(subs) < len(names) or not names:
                targets.add(known(imp))
        targets.discard(mod)
        targets.discard("")
        graph[mod] = targets
    return graph


def test_rooms_import_only_downwards():
    bad = [(mod, dep) for mod, deps in _graph().items() for dep in deps
           if dep.split(".")[0] in FORBIDDEN[mod.split(".")[0]]]
    assert not bad, f"imports against the room order: {bad}"


def test_no_import_cycles():
    graph = _graph()
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_check_sees_imports_at_all():
    """The walker finds what it must (so the tests above can fail)."""
    g = _graph()
    assert "recommender.service" in g["api.v1"] or "recommender.service" in g["api"]
    assert "embedding.audio" in g["recommender.ingest"] and "index.registry" in g["index"]


def test_benchmarks_are_a_package_that_imports_without_path_tricks():
    """``benchmarks`` runs as ``python -m benchmarks.perf.NAME``: its modules import each other
    as a package (``benchmarks.harness`` for what they share) and never patch ``sys.path``."""
    groups = {p.parent.name for p in (ROOT / "benchmarks").glob("*/__init__.py")}
    assert {"perf", "faults", "research"} <= groups
    assert not [p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name not in ("__init__.py", "harness.py")]
    patched = [str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").rglob("*.py") if "sys.path" in p.read_text()]
    assert not patched, patched
    siblings = {p.stem for p in (ROOT / "benchmarks").rglob("*.py")}
    for path in (ROOT / "benchmarks").rglob("*.py"):
        for module, _ in _imports(path):
            assert module.split(".")[0] not in siblings - {"benchmarks"}, (path.name, module)  # no bare sibling imports


def test_tests_share_helpers_from_a_package_and_fixtures_from_conftest():
    """``tests/helpers/`` holds what tests share; ``conftest.py`` only fixtures and pytest's hooks."""
    tests = ROOT / "tests"
    importers = [p.name for p in tests.rglob("*.py") if "from .conftest import" in p.read_text() and p.name != "test_structure.py"]
    assert not importers, importers
    tree = ast.parse((tests / "conftest.py").read_text())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            fixture = any("fixture" in ast.unparse(d) for d in node.decorator_list)
            assert fixture or node.name.startswith("pytest_"), f"conftest.py defines {node.name}: move it to tests/helpers"


def test_no_library_module_is_over_500_lines():
    """Each room's modules stay readable: one over 500 lines is split along what it does."""
    long = {str(p.relative_to(ROOT)): n for room in ROOMS for p in (ROOT / room).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, long
