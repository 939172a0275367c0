"""The house rules docs/architecture.md states, checked: boundaries, no import cycles, a doc that matches the tree."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "architecture.md"
MAX_LINES = 550  # "about 500", as docs/architecture.md says


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py")) + (
        [ROOT / "app.py"] if "pages" in folders else [])


def _imports(path: Path) -> Iterator[str]:
    """Every module an ``import`` names in the file, at module level or inside functions."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_engine_never_imports_streamlit() -> None:
    offenders = [f"{p.relative_to(ROOT)}: {name}" for p in _python_files("core") for name in _imports(p)
                 if name.split(".")[0] == "streamlit"]
    assert offenders == []


def test_pages_and_ui_never_import_tensorflow_or_keras() -> None:
    offenders = [f"{p.relative_to(ROOT)}: {name}" for p in _python_files("ui", "pages") for name in _imports(p)
                 if name.split(".")[0] in ("tensorflow", "keras")]
    assert offenders == []


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (a package's ``__init__`` is not a dependency)."""
    files = _python_files("core", "ui", "pages")
    modules = {_module(p): p for p in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target in _imports(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and modules[target].name != "__init__.py":
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_there_is_no_import_cycle() -> None:
    graph = import_graph()
    assert sum(map(len, graph.values())) > 100  # the graph really was read
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_training_manager_imports_without_tensorflow() -> None:
    code = "import sys, core.training.manager; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_every_core_package_says_what_it_owns_and_may_import() -> None:
    packages = sorted(p.parent for p in (ROOT / "core").rglob("__init__.py") if p.parent != ROOT / "core")
    assert len(packages) >= 7
    for init in (p / "__init__.py" for p in packages):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "import" in doc and len(doc.split()) >= 15, init


def test_modules_stay_small() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
             for p in _python_files("core", "ui", "pages")}
    assert len(sizes) > 60
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_guide_names_every_core_package_and_only_folders_that_exist() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    for init in (ROOT / "core").rglob("__init__.py"):
        package = init.parent.relative_to(ROOT).as_posix()
        assert f"{package}/" in guide, f"{package} is not described in {GUIDE.name}"
    named = set(re.findall(r"`((?:core|ui|pages|tests|benchmarks|docs|assets|\.streamlit|\.ci)(?:/[\w.-]+)*/?)`", guide))
    assert len(named) > 15
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert missing == []


def test_product_code_points_to_the_guide_not_to_issues_or_the_shared_folder() -> None:
    pattern = re.compile(r"\.\./shared|issue [0-9]", re.IGNORECASE)
    files = [ROOT / "README.md", ROOT / "app.py", *_python_files("core", "ui", "pages")]
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in files
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert offenders == []
    assert "docs/architecture.md" in (ROOT / "README.md").read_text(encoding="utf-8")
