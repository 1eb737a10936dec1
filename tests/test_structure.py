"""The package's structure, checked: tests fail (never skip) when first-party code breaks.

The skip policy itself lives in tests/conftest.py; here it runs on a throw-away suite (pytester).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "mgbp"
TESTS = ROOT / "tests"


def python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


# ---- tests fail, not skip -----------------------------------------------------------------------------------


@pytest.fixture
def policed(pytester):
    """A pytester suite with this repository's conftest (its skip policy)."""
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    return pytester


def test_a_skip_that_no_absent_optional_thing_explains_fails_the_run(policed):
    policed.makepyfile(test_bad="""
        import pytest

        def test_renamed_symbol():
            pytest.skip("mgbp.models is not written yet")

        def test_first_party_importorskip():
            first_party = "mgbp.no_such_module"
            pytest.importorskip(first_party)
    """)
    result = policed.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skips that no absent optional thing explains*",
                                 "*test_renamed_symbol: mgbp.models is not written yet",
                                 "*test_first_party_importorskip: could not import 'mgbp.no_such_module'*"])


def test_skips_for_absent_optional_things_pass(policed):
    policed.makepyfile(test_fine="""
        import pytest

        def test_data():
            pytest.skip("../shared is absent: no Set5")

        @pytest.mark.skipif(True, reason="PyAV without libx264")
        def test_codec():
            pass

        def test_gpu():
            pytest.skip("CUDA is not available")

        def test_runs():
            assert True
    """)
    result = policed.runpytest()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=3)


def test_a_module_level_skip_is_policed_too(policed):
    policed.makepyfile(test_module="""
        import pytest

        pytest.skip("the trainer is not there yet", allow_module_level=True)

        def test_never_collected():
            pass
    """)
    assert policed.runpytest().ret == pytest.ExitCode.TESTS_FAILED


def test_no_test_imports_first_party_code_with_importorskip():
    offenders = [f"{path.name}:{number}" for path in python_files(TESTS)
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if "importorskip(\"mgbp" in line.replace("'", '"')]
    assert not offenders, f"import first-party code plainly (a broken import must fail): {offenders}"


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def _imports_first_party(statements: list[ast.stmt]) -> bool:
    for node in (n for statement in statements for n in ast.walk(statement)):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "mgbp" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").split(".")[0] == "mgbp"):
            return True
    return False


def test_no_first_party_import_error_guards_in_the_package():
    """`try: from mgbp... import x / except ImportError` turns a broken first-party import into a fallback."""
    offenders = []
    for path in python_files(SOURCE):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers)
                    and _imports_first_party(node.body)):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"first-party imports guarded by except ImportError: {offenders}"


# ---- the import graph: a tree, commands on top ----------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The package's modules that `path` imports anywhere (top level, functions, branches)."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ..models import y
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from mgbp import metrics` imports the module mgbp.metrics
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {name for name in found if name in known and name != this}


def import_graph() -> dict[str, set[str]]:
    paths = python_files(SOURCE)
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, known) for p in paths}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a list of modules, first = last) through every strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(graph, group) for group in groups]


def _cycle_through(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group (breadth first)."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for other in sorted(graph[node] & members):
                if other == start:
                    return paths[node] + [start]
                if other not in paths:
                    paths[other] = paths[node] + [other]
                    following.append(other)
        frontier = following
    return group


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    """Imports inside functions count: they are cycles that only break later, at the first call."""
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_library_code_never_imports_the_command_layer():
    """`mgbp.commands.*` (and `mgbp.cli`, which dispatches to them) sit on top: arrows point down from them."""
    graph = import_graph()
    upward = [f"{module} -> {target}" for module, targets in graph.items()
              if not module.startswith(("mgbp.commands", "mgbp.cli"))
              for target in targets if target.startswith("mgbp.commands")]
    assert not upward, f"library modules importing commands: {upward}"
    assert "mgbp.backprojection" in graph and graph["mgbp.backprojection"] <= {"mgbp.errors", "mgbp.resize", "mgbp.io"}
