"""``requires-python = ">=3.10"`` is kept: no syntax and no standard-library name newer than 3.10
outside ``if TYPE_CHECKING:`` (CI runs one interpreter, 3.11)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted(path for folder in ("wan_runtime", "wan_kernels", "benchmarks")
                 for path in (REPO / folder).rglob("*.py"))
# What Python 3.11 and 3.12 added to the modules the project imports from.
NEWER = {
    "typing": {"Self", "Never", "LiteralString", "TypeVarTuple", "Unpack", "assert_never", "assert_type",
               "reveal_type", "dataclass_transform", "Required", "NotRequired", "override", "TypeAliasType",
               "get_overloads", "clear_overloads"},
    "enum": {"StrEnum", "ReprEnum", "verify", "EnumCheck", "FlagBoundary", "global_enum", "member",
             "nonmember", "property"},
    "datetime": {"UTC"},
    "asyncio": {"TaskGroup", "Runner", "timeout"},
    "itertools": {"batched"},
    "hashlib": {"file_digest"},
}
NEWER_MODULES = {"tomllib", "wsgiref.types"}


def _runtime_imports(tree: ast.Module) -> list[tuple[str, str | None]]:
    """(module, name) of every import outside an ``if TYPE_CHECKING:`` block."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.extend((node.module, alias.name) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(REPO)))
def test_python_310_reads_it(path):
    source = path.read_text()
    tree = ast.parse(source, str(path), feature_version=(3, 10))
    newer = [f"{module}.{name}" if name else module for module, name in _runtime_imports(tree)
             if module in NEWER_MODULES or name in NEWER.get(module, ())]
    assert not newer, f"{path.name} imports {newer}, which Python 3.10 lacks (import under TYPE_CHECKING)"


def test_the_check_finds_a_newer_name():
    tree = ast.parse("from typing import ClassVar, Self\nif TYPE_CHECKING:\n    from enum import StrEnum\n")
    assert _runtime_imports(tree) == [("typing", "ClassVar"), ("typing", "Self")]
