"""bench/miniature.py's bookkeeping (the compute time it reports, the docs block it rewrites),
bench/layer_robustness.py's per-layer probes and bench/rd_experiment.py's training speech and summary."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(script: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))  # scripts import their sibling modules
    spec = importlib.util.spec_from_file_location(f"_bench_helpers_{script}", BENCH / f"{script}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def miniature(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _load("miniature", monkeypatch)


@pytest.fixture
def layer_robustness(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _load("layer_robustness", monkeypatch)


@pytest.fixture
def rd_experiment(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _load("rd_experiment", monkeypatch)


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


def test_students_folder_changes_with_teacher_recipe_speech_steps_and_code(
    miniature: ModuleType, tmp_path: Path
) -> None:
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "model.safetensors").write_bytes(b"weights")
    manifest = tmp_path / "train.tsv"
    manifest.write_text("# root: /data/a\npath\tnum_samples\tspeaker\n1-1-0.flac\t16000\t1\n")
    folder = miniature.teacher_folder("hubert_mini", teacher, 2000, manifest, "code")
    assert folder.startswith("hubert_mini-") and folder.endswith("-2000")
    assert miniature.teacher_folder("hubert_mini", teacher, 2000, manifest, "code") == folder
    assert miniature.teacher_folder("hubert_mini", teacher, 700, manifest, "code") != folder
    assert miniature.teacher_folder("hubert_mini", teacher, 2000, manifest, "other code") != folder
    other_speech = tmp_path / "other.tsv"
    other_speech.write_text(manifest.read_text().replace("/data/a", "/data/b"))
    assert miniature.teacher_folder("hubert_mini", teacher, 2000, other_speech, "code") != folder
    (teacher / "model.safetensors").write_bytes(b"retrained")
    assert miniature.teacher_folder("hubert_mini", teacher, 2000, manifest, "code") != folder


def test_code_fingerprint_follows_sources_and_recipes_only(miniature: ModuleType, tmp_path: Path) -> None:
    package, script = tmp_path / "pkg", tmp_path / "bench.py"
    (package / "augment").mkdir(parents=True)
    (package / "augment" / "noise.py").write_text("GAIN = 1\n")
    (package / "configs.yaml").write_text("a: 1\n")
    script.write_text("print()\n")
    before = miniature.code_fingerprint((package, script))
    (package / "notes.txt").write_text("not code")  # neither source nor recipe: same students
    assert miniature.code_fingerprint((package, script)) == before
    for path, text in ((package / "augment" / "noise.py", "GAIN = 2\n"), (package / "configs.yaml", "a: 2\n")):
        path.write_text(text)
        assert miniature.code_fingerprint((package, script)) != before
        before = miniature.code_fingerprint((package, script))
    script.write_text("print(1)\n")
    assert miniature.code_fingerprint((package, script)) != before
    (package / "augment" / "noise.py").rename(package / "augment" / "moved.py")  # same bytes, other module
    assert miniature.code_fingerprint((package, script)) != before
    assert len(miniature.code_fingerprint()) == 64  # the real package and script hash without error


def test_build_fingerprint_tells_a_bf16_teacher_from_an_fp32_one(
    miniature: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(miniature, "code_fingerprint", lambda: "code")
    monkeypatch.setattr(miniature, "bf16_units", lambda: None)
    fp32 = miniature.build_fingerprint()
    monkeypatch.setattr(miniature, "bf16_units", lambda: "AVX512-BF16")
    assert miniature.build_fingerprint() != fp32


def test_evaluation_is_reused_only_for_the_same_students(
    miniature: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from robustdistiller.evaluate.results import Results

    two = {"distilhubert-baseline": tmp_path / "b.ckpt", "robustdistiller": tmp_path / "r.ckpt"}
    stored = Results(seed=0, train_on="clean", quick=False, condition_fingerprint="x")
    stored.models = [{"name": n, "kind": "student", "path": str(p)} for n, p in two.items()]
    stored.models.append({"name": "teacher", "kind": "teacher", "path": "t"})
    stored.write(tmp_path / "hubert_mini-0123abcd-2000" / "eval-flac")
    calls: list[list[Path]] = []

    def evaluate(models: list[Path], **kwargs: object) -> str:
        calls.append(models)
        return "evaluated"

    monkeypatch.setattr(miniature, "evaluate", evaluate)
    monkeypatch.setattr(miniature, "demo_conditions", lambda *a: None)
    args = (tmp_path, "hubert_mini-0123abcd-2000", "hubert_mini", tmp_path / "teacher")
    assert miniature.evaluate_teacher(*args, two, [], 0, "flac").models == stored.models and not calls
    four = {**two, "distilhubert-baseline-seed1": tmp_path / "b1", "robustdistiller-seed1": tmp_path / "r1"}
    assert miniature.evaluate_teacher(*args, four, [], 0, "flac") == "evaluated"  # not the 2-seed results
    assert calls == [list(four.values())]


def test_layer_probes_find_the_layer_a_corruption_spares(layer_robustness: ModuleType) -> None:
    """Two classes; both layers separate them on clean features. The corruption wipes layer 0's class
    signal and leaves layer 1's: layer 0 must fall to about chance (drop near 1), layer 1 keep its accuracy."""
    from robustdistiller.evaluate.tasks import TaskItem, TaskPack

    gen = torch.Generator().manual_seed(0)
    items = {s: [TaskItem(f"{s}{i}", Path(f"{s}{i}.wav"), i % 2) for i in range(40)] for s in ("tr", "va", "te")}
    task = TaskPack("toy", "utterance", ["a", "b"], items["tr"], items["va"], items["te"])

    def feats(signal_in_layer0: bool) -> dict[str, torch.Tensor]:
        out = {}
        for item in (i for split in items.values() for i in split):
            sign = 1.0 if item.label else -1.0
            layer0 = torch.randn(1, 4, generator=gen) * 0.3 + (sign if signal_in_layer0 else 0.0)
            layer1 = torch.randn(1, 4, generator=gen) * 0.3 + sign
            out[item.uid] = torch.stack([layer0, layer1])  # [layers, 1, D]
        return out

    rows = layer_robustness.layer_rows("toy", task, {"clean": feats(True), "wiped": feats(False)}, chance=0.5)
    assert [r[1] for r in rows] == ["0", "1"]
    clean0, clean1 = float(rows[0][2]), float(rows[1][2])
    assert clean0 > 0.95 and clean1 > 0.95
    (acc0, drop0), (acc1, drop1) = (tuple(map(float, r[3].split(" / "))) for r in rows)
    assert abs(acc0 - 0.5) < 0.2 and drop0 > 0.6
    assert acc1 > 0.95 and drop1 < 0.1


def test_unseen_validation_speakers_leave_the_training_speech(rd_experiment: ModuleType, tmp_path: Path) -> None:
    from robustdistiller.data.manifest import Manifest, ManifestEntry

    rows = [ManifestEntry(f"{s}.wav", 80000, {"speaker": s}) for s in ("103", "1034", "1069")]
    labelled = Manifest(tmp_path, rows, ["speaker"])
    kept = Manifest.read(rd_experiment.without_speakers(labelled, {"1034"}, tmp_path / "unseen.tsv"))
    assert [e.labels["speaker"] for e in kept.entries] == ["103", "1069"] and kept.root == tmp_path
    # a folder manifest has no speaker column: the LibriSpeech file name <speaker>-<chapter>-<utt> says it
    files = [ManifestEntry(f"sub/{s}-12-0000.flac", 80000, {}) for s in ("103", "1034", "1069")]
    kept = Manifest.read(rd_experiment.without_speakers(Manifest(tmp_path, files, []), {"103"}, tmp_path / "f.tsv"))
    assert [e.path for e in kept.entries] == ["sub/1034-12-0000.flac", "sub/1069-12-0000.flac"]


def _record(
    seed: int, base_drop: float, robust_drop: float, gap: float, teacher: float | None = None
) -> dict[str, Any]:
    task = {
        "ratio": {"drop_above_chance": robust_drop / base_drop},
        "clean_gap": gap,
        "baseline": {"drop_above_chance": base_drop, "clean": 0.5},
        "robust": {"drop_above_chance": robust_drop, "clean": 0.5 + gap},
        "teacher": None if teacher is None else {"clean": teacher},  # None: run without --score-teacher
    }
    return {
        "name": "x",
        "on": "val",
        "steps": 700,
        "both": [],
        "overrides": ["a=1"],
        "seed": seed,
        "tasks": {"t": task},
    }


def test_summary_takes_seed_means_as_the_demo_does(rd_experiment: ModuleType) -> None:
    # mean drops 0.8 and 0.6 -> ratio 0.75 (not the mean of the per-seed ratios, 0.767); mean gap +0.03
    table = rd_experiment.summary([_record(0, 0.6, 0.5, 0.02, teacher=0.4), _record(1, 1.0, 0.7, 0.04, teacher=0.5)])
    assert "| x | val | 700 |  | a=1 | 0 1 | t | 0.75 (0.83, 0.70) | +0.030 | yes | 0.450 / 0.500 / 0.530 |" in table
    table = rd_experiment.summary([_record(0, 0.6, 0.5, 0.08), _record(1, 1.0, 0.7, 0.04)])
    assert table.endswith("| +0.060 | no | - / 0.500 / 0.560 |")  # clean accuracy too far apart; no teacher
    at_chance = _record(2, 0.6, 0.5, 0.02)
    task = at_chance["tasks"]["t"]
    task["robust"]["drop_above_chance"] = task["ratio"]["drop_above_chance"] = None
    table = rd_experiment.summary([_record(0, 0.6, 0.4, 0.02), at_chance])
    assert "| 0 2 | t | 0.67 (0.67, -) | +0.020 | yes |" in table  # the seed without a drop does not count


def test_student_folders_name_what_the_students_were_trained_with(rd_experiment: ModuleType, tmp_path: Path) -> None:
    from robustdistiller.data.manifest import Manifest, ManifestEntry

    rows = [ManifestEntry(f"{s}.wav", 80000, {"speaker": s}) for s in ("103", "1034")]
    full = Manifest(tmp_path, rows, ["speaker"]).write(tmp_path / "train.tsv")
    fewer = Manifest(tmp_path, rows[:1], ["speaker"]).write(tmp_path / "fewer.tsv")
    base, robust = rd_experiment.student_folders("x", 0, 700, [], ["enhancement.weight=0"], full)
    assert base.startswith("baseline-s0-700-") and robust.startswith("x-s0-")
    other_rd = rd_experiment.student_folders("x", 0, 700, [], ["enhancement.weight=1"], full)
    assert other_rd[0] == base and other_rd[1] != robust  # same baseline, another robust student
    other_both = rd_experiment.student_folders("x", 0, 700, ["optim.lr=1e-3"], ["enhancement.weight=0"], full)
    other_speech = rd_experiment.student_folders("x", 0, 700, [], ["enhancement.weight=0"], fewer)
    assert other_both[0] != base and other_both[1] != robust and other_speech[0] != base
