"""``robustdistiller demo --quick`` end to end: every promised output exists and loads, and the
evaluation runs on the shipped real recordings of held-out speakers (never a synthetic fallback)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import robustdistiller
import robustdistiller.demo as demo
from robustdistiller.checkpoints.load import load_student
from robustdistiller.cli import main
from robustdistiller.data.recordings import RECORDED_NOISES, RECORDINGS_DIR, read_index
from robustdistiller.evaluate.report import Paragraph
from robustdistiller.evaluate.results import Results
from robustdistiller.evaluate.rows import DistortionRow, HeadlineRow


def _no_synthetic(*args: object, **kwargs: object) -> None:
    raise AssertionError("the demo must not fall back to the synthetic corpus")


def test_quick_demo_end_to_end(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: dict[str, object] = {}
    real_evaluate = demo.evaluate

    def spy(models: list, **kwargs: object) -> Results:
        seen.update(kwargs)
        return real_evaluate(models, **kwargs)

    monkeypatch.setattr(demo, "evaluate", spy)
    monkeypatch.setattr("robustdistiller.data.corpus.build_corpus", _no_synthetic)
    monkeypatch.setattr("robustdistiller.evaluate.tasks.builtin_tasks", _no_synthetic)
    out = tmp_path / "demo"
    with caplog.at_level(logging.INFO, logger="robustdistiller.demo"):
        assert main(["demo", "--quick", "--out", str(out)]) == 0
    # The robust student's data stream draws the baseline's clean crops, so the teacher ran once per batch.
    steps = demo.QUICK_STEPS
    assert f"took the teacher's targets of {steps} of its {steps} batches from the baseline's run" in caplog.text
    printed = capsys.readouterr().out
    assert f"report:               {out / 'report.md'}" in printed
    assert "robustdistiller evaluate --model" in printed and "robustdistiller export" in printed

    # The evaluation's utterances are segments of the shipped held-out recordings, its noises the recorded ones.
    held_out = {Path(r.path).stem for r in read_index() if r.role == "heldout"}
    tasks = seen["tasks"]
    assert [t.name for t in tasks] == ["heldout-speaker", "heldout-sex"]  # type: ignore[attr-defined]
    for task in tasks:  # type: ignore[attr-defined]
        for item in task.items():
            assert item.path.parent == out / "material" / "heldout-segments"
            assert item.path.stem.rsplit("_", 1)[0] in held_out
    results = Results.read(out / "results.json")
    noises = {c["noise"] for c in results.conditions if c["noise"]}
    assert noises and noises <= set(RECORDED_NOISES)
    assert {c["kind"] for c in results.conditions} >= {"clean", "noise", "reverb"}

    for name in ("report.md", "report.html", "results.json", "teacher/config.json", "tables/probes.csv"):
        assert (out / name).is_file(), name
    assert (out / "plots" / "teacher_distortion_vs_snr.png").stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert md.index("## The answer") < md.index("## What was run") < md.index("## Headline")
    assert "mini HuBERT teacher" in md and "46 held-out LibriSpeech speakers" in md and "Target" in md
    assert "white-space:pre-wrap" in (out / "report.html").read_text()

    assert [m["name"] for m in results.models] == ["distilhubert-baseline", "robustdistiller", "teacher"]
    assert {r["condition"] for r in results.probes} == {c["id"] for c in results.conditions}
    assert any(r["model"] == "robustdistiller" and r["reference"] == "teacher_clean" for r in results.distortion)
    assert all(h["chance"] is not None for h in results.headline)

    # Both final checkpoints load, record the demo's teacher, and only the robust one carries a head.
    baseline, robust = (
        sorted((out / "distilhubert-baseline").glob("states-*.ckpt")),
        sorted((out / "robustdistiller").glob("states-*.ckpt")),
    )
    assert len(baseline) == 1 and len(robust) == 1
    for ckpt, has_head in ((baseline[0], False), (robust[0], True)):
        model, parsed = load_student(ckpt)
        assert parsed.teacher == str(out / "teacher")
        assert ("EnhancementHead" in parsed.raw) is has_head
        hidden = model.extract(torch.zeros(1, 8000), torch.tensor([8000]))
        assert len(hidden) == 1 + model.config.encoder_layers + model.config.n_tasks
    teacher = robustdistiller.load(out / "teacher")
    assert len(teacher.extract(torch.zeros(1, 8000), torch.tensor([8000]))) == 5
    options = json.loads((out / "demo_options.json").read_text())
    assert options["quick"] is True and options["random_teacher"] is False and options["seeds"] == [0]
    assert not (out / "cache").exists(), "the demo leaves no hidden-state cache behind (2 GB at full size)"

    # A rerun into the same folder replaces the demo's own runs (a distill run folder is otherwise claimed).
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert len(list((out / "robustdistiller").glob("states-*.ckpt"))) == 1


def test_demo_refuses_to_run_without_the_recordings(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="recordings index not found"):
        demo.run_demo(tmp_path / "demo", quick=True, recordings=tmp_path / "no-recordings")
    assert not (tmp_path / "demo" / "distilhubert-baseline").exists()  # failed before any training


def test_random_teacher_has_the_shipped_shape(tmp_path: Path) -> None:
    random = json.loads((demo.prepare_teacher(tmp_path, 0, random_teacher=True) / "config.json").read_text())
    shipped = json.loads((demo.SHIPPED_TEACHER / "config.json").read_text())
    for key, value in demo.TEACHER_SHAPE.items():
        assert random[key] == shipped[key] == (list(value) if isinstance(value, tuple) else value), key


def test_help_states_the_demo_budget(capsys: pytest.CaptureFixture[str]) -> None:
    # The CLI keeps torch out of --help, so it restates the step counts; this catches them drifting.
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {demo.DEMO_STEPS}; --quick: {demo.QUICK_STEPS})" in help_text


def test_demo_conditions_hold_out_training_material() -> None:
    cfg = demo.demo_conditions(False, 0, Path("/tmp"), RECORDINGS_DIR)
    assert cfg.noises == [str(RECORDINGS_DIR / "noise")]  # recorded noises; training uses generated ones
    assert str(RECORDINGS_DIR / "rir") in cfg.rirs and cfg.seed == demo.EVAL_ROOM_SEED  # rooms of another seed
    assert cfg.snrs == [0.0, 5.0, 10.0, 20.0] and len(cfg.rt60s) >= 3


def test_students_differ_only_in_robustness_and_robust_rooms_are_aligned(tmp_path: Path) -> None:
    args = (tmp_path, tmp_path / "teacher", tmp_path / "train.tsv")
    base = demo.demo_recipe(*args, robust=False, seed=0, steps=10)
    robust = demo.demo_recipe(*args, robust=True, seed=0, steps=10)
    assert robust.corruption.rir.align_direct_path  # rooms start at their direct path (configs/demo.yaml)
    assert base.corruption.p_clean == 1.0 > robust.corruption.p_clean
    assert robust.enhancement.use_enhancement and not base.enhancement.use_enhancement
    for section in ("data", "student", "optim"):
        assert getattr(base, section) == getattr(robust, section), section


def _headline(model: str, drop: float, clean: float = 0.6) -> HeadlineRow:
    return HeadlineRow(model, "heldout-sex", "accuracy", clean, 0.5, 0.5, 0.5, 0.1, 0.5, drop, drop, drop, 1000, 0.01)


def test_answer_compares_seed_means_and_the_representations() -> None:
    results = Results(seed=0, train_on="clean", quick=False, condition_fingerprint="x")
    results.conditions = [{"id": c, "kind": k} for c, k in (("clean", "clean"), ("n", "noise"), ("r", "reverb"))]
    # seed means: baseline drop 0.5, RobustDistiller 0.35 -> ratio 0.7, the target met
    results.headline = [
        _headline(demo.BASELINE, 0.4),
        _headline(f"{demo.BASELINE}-seed1", 0.6),
        _headline(demo.ROBUST, 0.3),
        _headline(f"{demo.ROBUST}-seed1", 0.4, clean=0.58),
    ]
    (row,) = demo.comparison_rows(results)
    assert row["seeds"] == 2 and row["ratio"]["drop_above_chance"] == pytest.approx(0.7)
    assert row["clean_gap"] == pytest.approx(-0.01) and row["met"]
    assert row["per_seed"] == [(pytest.approx(0.75), 0.0), (pytest.approx(2 / 3), pytest.approx(-0.02))]
    verdict = next(b.text for b in demo.answer_blocks(results) if isinstance(b, Paragraph) and "Target" in b.text)
    assert "ratio 0.70 (per seed 0.75, 0.67), clean gap -0.010 (+0.000, -0.020)" in verdict
    results.headline[3] = _headline(f"{demo.ROBUST}-seed1", 0.4, clean=0.76)  # seed mean +0.08: too far the other way
    (row,) = demo.comparison_rows(results)
    assert row["ratio"]["drop_above_chance"] == pytest.approx(0.7) and not row["met"]
    results.distortion = [
        DistortionRow(model, cond, ref, 3, 2, 0.1, cos, 10, "head1->T2")
        for model, cond, ref, cos in (
            (demo.BASELINE, "n", "teacher_clean", 0.7),
            (f"{demo.BASELINE}-seed1", "n", "teacher_clean", 0.8),
            (demo.ROBUST, "n", "teacher_clean", 0.9),
            (demo.ROBUST, "n", "self_clean", 0.1),  # another reference: not the distillation target
            (demo.ROBUST, "r", "teacher_clean", 0.6),
        )
    ]
    means = demo.representation_means(results)
    assert means[demo.BASELINE]["noise"] == pytest.approx(0.75) and means[demo.ROBUST]["noise"] == pytest.approx(0.9)
    assert means[demo.BASELINE]["reverb"] is None and means[demo.ROBUST]["reverb"] == pytest.approx(0.6)
    bullet = demo.representation_bullet(results)
    # only kinds both students were measured under are compared
    assert bullet is not None and "noise 0.900 RobustDistiller vs 0.750 baseline." in bullet
    assert "reverberation" not in bullet
