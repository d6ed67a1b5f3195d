"""Takedowns, the pure parts: every metadata-cache fetch of a document that lists versions or
files uses a parser that can list it (else a refresh made there skips the takedown check),
which versions may be blocked exactly, and which takedowns are kept past the cap."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

import pytest

from mirror import versions
from mirror.takedowns import MAX_PER_DOCUMENT, Listed, taken_down

ROOT = Path(__file__).resolve().parents[2]
# Parsers of documents that list no versions or files (a signature, a checksum, the PyPI
# root index of project names): a change of theirs is never a takedown.
NOT_LISTABLE = {"parse_signature", "ChecksumParser", "RootParser", "parse"}


def _parser_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, the parser's name) of each `…metacache.get(url, parser, …)` / `.current(…)`;
    a parser held in a local variable is followed to its assignment in the function."""
    found: list[tuple[int, str]] = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        assigned: dict[str, ast.expr] = {}
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name):
                    assigned[target.id] = node.value
        for node in ast.walk(function):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"get", "current"}
                and "metacache" in ast.unparse(node.func.value)
                and len(node.args) >= 2
            ):
                continue
            parser = node.args[1]
            if isinstance(parser, ast.Name) and parser.id in assigned:
                parser = assigned[parser.id]
            if isinstance(parser, ast.Call):
                parser = parser.func
            if isinstance(parser, ast.IfExp):
                # Both arms must be parsers of documents that list nothing.
                for arm in (parser.body, parser.orelse):
                    inner = arm.func if isinstance(arm, ast.Call) else arm
                    found.append((node.lineno, ast.unparse(inner)))
                continue
            found.append((node.lineno, ast.unparse(parser)))
    return found


def _resolve(module: Any, dotted: str) -> Any:
    value = module
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("ecosystem", ["npm", "pypi", "maven"])
def test_every_listable_document_is_fetched_with_a_lister(ecosystem: str) -> None:
    path = ROOT / "mirror" / "ecosystems" / ecosystem / "routes.py"
    module = importlib.import_module(f"mirror.ecosystems.{ecosystem}.routes")
    calls = _parser_names(ast.parse(path.read_text()))
    assert calls, "no metacache call found: the test no longer sees the code"
    for line, name in calls:
        short = name.rsplit(".", 1)[-1]
        if short in NOT_LISTABLE:
            continue
        parser = _resolve(module, name)
        assert callable(getattr(parser, "listing", None)), (
            f"{path.name}:{line}: {name} cannot list what the document offers: a refresh "
            "made here would skip the takedown check"
        )


def test_a_bare_metadata_parse_is_not_a_lister() -> None:
    # The mistake this guards against: maven-metadata.xml fetched with the plain function.
    from mirror.ecosystems.maven import document

    assert not callable(getattr(document.parse_metadata, "listing", None))
    assert "parse_metadata" not in NOT_LISTABLE


@pytest.mark.parametrize(
    ("ecosystem", "version", "blockable"),
    [
        ("npm", "1.3.1", True),
        ("npm", "2.0.0-beta.1", True),
        ("npm", "=9.9.9", False),
        ("npm", "v1.0.0", False),
        ("npm", "", False),
        ("npm", " ", False),
        ("npm", "1.0", False),
        ("npm", ">=1.0.0", False),
        ("maven", "1.0", True),
        ("maven", "1.0-SNAPSHOT", True),
        ("maven", "[1.0,2.0)", False),
        ("maven", "../x", False),
        ("maven", "=1", False),
        ("maven", "1 0", False),
        ("pypi", "1.0", True),
        ("pypi", "not a version", False),
    ],
)
def test_only_a_plain_version_is_exactly_blockable(
    ecosystem: str, version: str, blockable: bool
) -> None:
    assert versions.is_exact_version(ecosystem, version) is blockable


def test_past_the_cap_the_newest_takedowns_are_kept() -> None:
    before = {f"1.{minor}.0": Listed(f"1.{minor}.0") for minor in range(MAX_PER_DOCUMENT + 10)}
    found = taken_down(before, {})
    assert len(found) == MAX_PER_DOCUMENT
    assert found[-1].version == f"1.{MAX_PER_DOCUMENT + 9}.0"
    assert found[0].version == "1.10.0"
    assert len(taken_down(before, {}, limit=None)) == MAX_PER_DOCUMENT + 10
