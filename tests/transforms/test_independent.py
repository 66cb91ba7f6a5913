"""transforms/ stands alone: it imports nothing of runtime_facts, and the codes agree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import transforms
from runtime_facts import errors as product_errors
from transforms import errors as transform_errors

_ROOT = Path(transforms.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_transform_module_imports_runtime_facts() -> None:
    offenders = {
        str(path.relative_to(_ROOT.parent)): sorted(
            name for name in _imported_modules(path) if name.split(".")[0] == "runtime_facts"
        )
        for path in sorted(_ROOT.rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}
    assert len(offenders) > 10  # the walk really saw the package


def test_the_import_check_sees_runtime_facts_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom runtime_facts.errors import Reason\nimport runtime_facts\n")
    assert {"runtime_facts.errors", "runtime_facts"} <= _imported_modules(module)


def test_every_transform_reason_is_a_product_reason_with_the_same_code() -> None:
    for member in transform_errors.Reason:
        assert product_errors.Reason[member.name] == member.value


def test_a_transform_rejection_is_caught_as_the_products_batch_rejection() -> None:
    from transforms.decompress import gunzip_bounded

    with pytest.raises(product_errors.BatchRejected) as caught:
        gunzip_bounded(b"", max_output=1 << 20, max_ratio=100)
    assert isinstance(caught.value, product_errors.RejectedError)
    assert isinstance(caught.value, product_errors.RuntimeFactsError)
    assert caught.value.reason == product_errors.Reason.EMPTY_BATCH
    assert int(caught.value.exit_code) == product_errors.ExitCode.REJECTED
