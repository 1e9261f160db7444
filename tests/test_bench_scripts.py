"""The benchmark scripts import against the current package (a refactor that moves a name they use fails
here, not when someone runs the benchmark). They are not run: speed and memory are theirs to print."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))


def test_the_bench_folder_has_scripts() -> None:
    assert len(SCRIPTS) >= 10, f"expected the benchmark scripts in {BENCH}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_imports_and_has_a_main(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))  # scripts may import their sibling modules
    name = f"_bench_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)  # runs the imports, not main(): every script guards it
    assert callable(getattr(module, "main", None)), f"{script.name}: no main()"
