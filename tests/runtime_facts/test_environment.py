"""The process environment is written at start-up only (runtime_facts/environment.py).

Adding a variable while native threads call getenv crashed the test process with SIGSEGV:
a core showed polars' tokio worker inside `getenv`, walking an `environ` array that the
per-test restore (`os.environ.clear()` + `update()`) had just reallocated, its slots already
reused by a new `RUNTIME_FACTS_HOME=...` string.
"""

from __future__ import annotations

import ast
import ctypes
from pathlib import Path

from tests.conftest import restore_environment

ROOT = Path(__file__).resolve().parents[2]
# Start-up code that writes the environment before any task or query runs, with its reason.
ALLOWED = {
    ("runtime_facts/demo_airflow.py", "configure"),  # the demo, before it stages anything
    ("runtime_facts/environment.py", "reserve_airflow_context"),  # start-up, by design
    ("runtime_facts/environment.py", "tune_allocator"),  # at import, before native libraries
    ("runtime_facts/environment.py", "limit_blas_threads"),  # at import, before numpy
}
_WRITES = {"update", "setdefault", "pop", "popitem", "clear"}


def _environ_array() -> int | None:
    return ctypes.c_void_p.in_dll(ctypes.CDLL(None), "environ").value


def _is_write(node: ast.AST) -> bool:
    """`os.environ[k] = v`, `del os.environ[k]`, `os.environ.update(...)` and the like, or
    `os.putenv` / `os.unsetenv`."""
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
        return ast.unparse(node.value) == "os.environ"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        owner = ast.unparse(node.func.value)
        if owner == "os":
            return node.func.attr in {"putenv", "unsetenv"}
        return owner == "os.environ" and node.func.attr in _WRITES
    return False


def _writes(tree: ast.AST) -> list[tuple[str, int]]:
    """(enclosing function, line) of each write to the process environment."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_write(child):
                found.append((func, getattr(child, "lineno", 0)))
            is_def = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, child.name if is_def else func)

    visit(tree, "<module>")
    return found


def test_product_code_writes_the_environment_only_at_start_up() -> None:
    offending = []
    for path in sorted((ROOT / "runtime_facts").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for func, line in _writes(ast.parse(path.read_text())):
            if (rel, func) not in ALLOWED:
                offending.append(f"{rel}:{line} in {func}()")
    assert offending == [], "writes to os.environ outside start-up: " + ", ".join(offending)


def test_the_scan_finds_writes() -> None:
    code = (
        "import os\n"
        "def f():\n    os.environ['A'] = '1'\n    os.environ.update({})\n"
        "    del os.environ['A']\n    os.putenv('A', '1')\n    os.environ.get('A')\n"
    )
    assert [line for _, line in _writes(ast.parse(code))] == [3, 4, 5, 6]


def test_restoring_an_unchanged_environment_leaves_the_c_array_in_place() -> None:
    before = _environ_array()
    restore_environment(dict(__import__("os").environ))
    assert _environ_array() == before


def test_the_isolation_fixture_does_not_move_the_c_array_between_tests_1() -> None:
    _seen.append(_environ_array())


def test_the_isolation_fixture_does_not_move_the_c_array_between_tests_2() -> None:
    # The same array as in the previous test: its teardown and this setup added no variable.
    assert _seen == [_environ_array()]


_seen: list[int | None] = []
