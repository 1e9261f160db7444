"""``robustdistiller demo --quick`` end to end: every promised output exists and loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import robustdistiller
from robustdistiller.cli import main
from robustdistiller.evaluate.results import Results
from robustdistiller.export.load import load_student


def test_quick_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report:               {out / 'report.md'}" in printed
    assert "robustdistiller evaluate --model" in printed and "robustdistiller export" in printed

    for name in ("report.md", "report.html", "results.json", "teacher/config.json", "tables/probes.csv"):
        assert (out / name).is_file(), name
    assert (out / "plots" / "teacher_distortion_vs_snr.png").stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "randomly initialised" in md and "What this run measured" in md and "robustdistiller distill" in md

    results = Results.read(out / "results.json")
    assert [m["name"] for m in results.models] == ["distilhubert-baseline", "robustdistiller", "teacher"]
    assert {r["condition"] for r in results.probes} == {c["id"] for c in results.conditions}
    assert any(r["model"] == "robustdistiller" and r["reference"] == "teacher_clean" for r in results.distortion)

    # Both final checkpoints load, record the demo teacher, and only the robust one carries a head.
    baseline, robust = sorted((out / "distilhubert-baseline").glob("states-*.ckpt")), sorted(
        (out / "robustdistiller").glob("states-*.ckpt"))
    assert len(baseline) == 1 and len(robust) == 1
    for ckpt, has_head in ((baseline[0], False), (robust[0], True)):
        model, parsed = load_student(ckpt)
        assert parsed.teacher == str(out / "teacher")
        assert ("EnhancementHead" in parsed.raw) is has_head
        hidden = model.extract(torch.zeros(1, 8000), torch.tensor([8000]))
        assert len(hidden) == 1 + model.config.encoder_layers + model.config.n_tasks
    teacher = robustdistiller.load(out / "teacher")
    assert len(teacher.extract(torch.zeros(1, 8000), torch.tensor([8000]))) == 5
    assert json.loads((out / "demo_options.json").read_text())["quick"] is True
