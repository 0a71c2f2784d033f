"""Layers that stay put: data flows teleop -> recorder -> train -> replay, and imports follow it.

Every import counts, those inside functions too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("teleop", "recorder", "train", "replay")
BOTTOM = ("teleworld/__init__.py", "teleworld/errors.py", "teleworld/progress.py", "teleworld/cpu.py",
          "teleworld/device.py", "teleworld/display.py")
TOP = ("cli.py", "__main__.py", "demo.py")  # teleworld's modules above every stage
# package -> the top-level packages it must never import
FORBIDDEN = {
    "recorder": {"teleop", "train", "replay"},
    "teleop": {"train", "replay"},
    "train": {"teleop", "replay"},
}


def imported_packages(source: str) -> set[str]:
    """Top-level package names imported anywhere in a module's source (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def violations(path: Path, forbidden: set[str]) -> list[str]:
    """'file imports pkg' for each forbidden package a module imports."""
    bad = imported_packages(path.read_text()) & forbidden
    return [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(bad)]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_stage_imports_only_upstream(package):
    found = [v for path in sorted((ROOT / package).rglob("*.py")) for v in violations(path, FORBIDDEN[package])]
    assert not found, "\n".join(found)


def test_bottom_helpers_import_no_stage():
    found = [v for name in BOTTOM for v in violations(ROOT / name, set(STAGES))]
    assert not found, "\n".join(found)


def test_nothing_below_the_cli_imports_replay_or_the_cli():
    """replay is the last stage: only the top (teleworld/cli.py and the demo) imports it; nothing imports the command."""
    found = []
    for package in ("teleop", "recorder", "train", "replay", "teleworld"):
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text()
            if package == "teleworld" and path.name in TOP:
                continue
            if package != "replay" and "replay" in imported_packages(source):
                found.append(f"{path.relative_to(ROOT)} imports replay")
            if "teleworld.cli" in source and path.name != "__main__.py":
                found.append(f"{path.relative_to(ROOT)} imports teleworld.cli")
    assert not found, "\n".join(found)


def test_the_check_catches_a_lazy_import(tmp_path):
    module = tmp_path / "recorder" / "sneaky.py"
    module.parent.mkdir()
    module.write_text("def f():\n    from train.model import WorldModel\n    import replay.metrics\n")
    assert imported_packages(module.read_text()) == {"train", "replay"}
    assert imported_packages("from . import store\nimport numpy as np\n") == {"numpy"}
