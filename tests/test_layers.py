"""The layering of docs/ARCHITECTURE.md, read off the imports: no module imports a layer above its own.

Every module under ``robustdistiller/`` is parsed (not imported) and each ``import`` / ``from ...
import`` of the package counts, absolute or relative, at module level or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "robustdistiller"

# Lowest first. A module may import its own layer and any layer below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("atomic", "config", "digest", "errors"),  # foundation utilities, usable by all
    ("data",),
    ("augment",),
    ("models",),
    ("checkpoints", "runtime"),  # model files: torch checkpoints, ONNX exports (torch-free)
    ("train",),
    ("evaluate",),
    ("export",),
    ("inference",),
    ("commands", "cli", "demo", "__init__"),  # the package root's ``load`` opens checkpoints/
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
# The version constant lives in the package root, which imports nothing when it is imported.
ALLOWED_FROM_ROOT = {"__version__"}


def module_name(path: Path, package: Path) -> str:
    """Dotted name of ``path`` (``robustdistiller.data.audio``; a package's ``__init__`` -> the package)."""
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    """``robustdistiller.data.audio`` -> ``data``; the package root -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(path: Path, package: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) of every import of the package in ``path``."""
    name = module_name(path, package)
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target, [alias.name for alias in node.names]))
    root = package.name
    return [(line, mod, names) for line, mod, names in found if mod == root or mod.startswith(root + ".")]


def violations(package: Path) -> list[str]:
    """``file:line: a imports b`` for every import of a higher layer (or of a module no layer names)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        own = layer(module_name(path, package))
        for line, target, names in imported_modules(path, package):
            other = layer(target)
            if other == "__init__" and names and set(names) <= ALLOWED_FROM_ROOT:
                continue
            if own not in RANK or other not in RANK:
                found.append(f"{path}:{line}: {own} or {other} is in no layer of tests/test_layers.py")
            elif RANK[other] > RANK[own]:
                found.append(f"{path}:{line}: {own} imports {target}, a higher layer")
    return found


def test_no_module_imports_a_higher_layer() -> None:
    assert violations(PACKAGE) == []


def test_every_top_level_module_has_a_layer() -> None:
    names = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()
    }
    assert sorted(names - set(RANK)) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from robustdistiller.train.trainer import DistillTrainer\n", "models imports robustdistiller.train.trainer"),
        ("def f():\n    from ..evaluate import metrics\n", "models imports robustdistiller.evaluate"),
        ("import robustdistiller.export.onnx\n", "models imports robustdistiller.export.onnx"),
        ("from robustdistiller import load\n", "models imports robustdistiller"),
    ],
)
def test_a_planted_violation_is_reported_with_file_and_line(tmp_path: Path, source: str, expected: str) -> None:
    package = tmp_path / "robustdistiller"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("__version__ = '0'\n")
    (package / "models" / "__init__.py").write_text("")
    (package / "models" / "bad.py").write_text("from robustdistiller import __version__\nimport os\n" + source)
    found = violations(package)
    line = source.count("\n")  # the import is on the last line of ``source``, after two lines
    assert found == [f"{package / 'models' / 'bad.py'}:{2 + line}: {expected}, a higher layer"]
