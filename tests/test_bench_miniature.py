"""bench/miniature.py's bookkeeping: the compute time it reports and the docs block it rewrites."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def miniature(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_miniature_book", BENCH / "miniature.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_compute_time_adds_up_over_resumed_runs(miniature: ModuleType, tmp_path: Path) -> None:
    folder = tmp_path / "hubert_mini-0123abcd-2000"
    assert miniature.add_compute(folder, 600.0) == 600.0
    assert miniature.add_compute(folder, 30.5) == pytest.approx(630.5)  # a rerun that reused the students
    assert miniature.add_compute(folder, 0.0) == pytest.approx(630.5)


def test_docs_block_is_appended_once_then_replaced(miniature: ModuleType, tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro\n", encoding="utf-8")
    miniature.replace_marked(doc, "first table", "## Miniature")
    miniature.replace_marked(doc, "second table", "## Miniature")
    text = doc.read_text(encoding="utf-8")
    assert text.count("## Miniature") == 1 and text.count("<!-- miniature:begin -->") == 1
    assert "second table" in text and "first table" not in text
    assert text.startswith("# Benchmarks\n\nintro\n")
