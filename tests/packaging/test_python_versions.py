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


def _newer_uses(tree: ast.Module) -> list[str]:
    """``module.name`` of every name of ``NEWER`` (or module of ``NEWER_MODULES``) that ``tree``
    imports or reads as an attribute, outside an ``if TYPE_CHECKING:`` block."""
    found = []

    def type_checking(test: ast.expr) -> bool:
        return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names if alias.name in NEWER_MODULES)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.extend(f"{node.module}.{alias.name}" for alias in node.names
                         if node.module in NEWER_MODULES or alias.name in NEWER.get(node.module, ()))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.attr in NEWER.get(node.value.id, ()):
            found.append(f"{node.value.id}.{node.attr}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(REPO)))
def test_python_310_reads_it(path):
    tree = ast.parse(path.read_text(), str(path), feature_version=(3, 10))
    newer = _newer_uses(tree)
    assert not newer, f"{path.name} uses {newer}, which Python 3.10 lacks (import under TYPE_CHECKING)"


def test_the_check_finds_a_newer_name():
    tree = ast.parse("from typing import ClassVar, Self\nimport datetime, tomllib\nnow = datetime.UTC\n"
                     "if TYPE_CHECKING:\n    from enum import StrEnum\n"
                     "if not TYPE_CHECKING:\n    x = typing.Never\n")
    assert _newer_uses(tree) == ["typing.Self", "tomllib", "datetime.UTC", "typing.Never"]
