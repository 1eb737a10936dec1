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
