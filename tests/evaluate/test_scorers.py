"""Typed result rows, probe-task strategies and scorers on hand-made inputs (no checkpoints involved)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustdistiller.evaluate.conditions import CLEAN, Condition
from robustdistiller.evaluate.heads import CTCProbe, UtteranceClassifier
from robustdistiller.evaluate.models import ModelUnderTest
from robustdistiller.evaluate.probe_tasks import (
    CTCTask,
    UtteranceTask,
    probe_task,
    probe_task_for_metric,
)
from robustdistiller.evaluate.results import Results
from robustdistiller.evaluate.rows import (
    DistortionRow,
    EfficiencyRow,
    EnhancementRow,
    HeadlineRow,
    ProbeRow,
)
from robustdistiller.evaluate.scorers import (
    DistortionScorer,
    EnhancementScorer,
    Observation,
)

# The columns of results.json / tables/*.csv as other tools read them, in file order.
COLUMNS = {
    ProbeRow: (
        "model",
        "task",
        "condition",
        "metric",
        "value",
        "degradation",
        "n",
        "train_on",
        "best_epoch",
        "val_metric",
        "layer_weights",
    ),
    DistortionRow: ("model", "condition", "reference", "index_a", "index_b", "l1", "cosine", "frames", "layer"),
    EnhancementRow: (
        "model",
        "dataset",
        "condition",
        "n",
        "pesq_wb",
        "stoi",
        "si_snr",
        "noisy_pesq_wb",
        "noisy_stoi",
        "noisy_si_snr",
        "si_snr_improvement",
    ),
    EfficiencyRow: ("model", "parameters", "macs_per_second", "rtf_1_thread", "rtf_2_threads", "peak_memory_mb"),
    HeadlineRow: (
        "model",
        "task",
        "metric",
        "clean",
        "mean_corrupted",
        "mean_noise",
        "mean_reverb",
        "relative_drop",
        "chance",
        "drop_above_chance",
        "noise_drop_above_chance",
        "reverb_drop_above_chance",
        "parameters",
        "rtf_1_thread",
    ),
}


def _probe_record(**change: object) -> dict:
    record = {
        "model": "m",
        "task": "kw",
        "condition": "clean",
        "metric": "accuracy",
        "value": 0.75,
        "degradation": 0.0,
        "n": 8,
        "train_on": "clean",
        "best_epoch": 3,
        "val_metric": 0.5,
        "layer_weights": [0.25, 0.75],
    }
    return {**record, **change}


@pytest.mark.parametrize("row_type", list(COLUMNS))
def test_rows_keep_the_results_files_columns_in_order(row_type: type) -> None:
    assert row_type.columns() == COLUMNS[row_type]


def test_row_records_round_trip_and_refuse_wrong_columns() -> None:
    row = ProbeRow.from_dict(_probe_record())
    assert row.value == 0.75 and row["layer_weights"] == [0.25, 0.75]
    assert list(row.as_dict()) == list(COLUMNS[ProbeRow]) and row.as_dict() == _probe_record()
    assert row.as_dict()["layer_weights"] is not row.layer_weights  # a record never aliases the row
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['valu'\]"):
        ProbeRow.from_dict({**_probe_record(), "valu": 1.0})
    record = _probe_record()
    del record["value"]
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['value'\]"):
        ProbeRow.from_dict(record)
    with pytest.raises(KeyError, match="no column 'valu'"):
        row["valu"]
    assert row.get("valu", "absent") == "absent"


def test_results_hold_typed_rows_and_write_the_same_records() -> None:
    data = Results(seed=0, train_on="clean", quick=True, probes=[_probe_record()]).to_dict()
    again = Results.from_dict(data)
    assert isinstance(again.probes[0], ProbeRow) and again.to_dict()["probes"] == [_probe_record()]
    with pytest.raises(TypeError, match="holds ProbeRow rows, got \\['DistortionRow'\\]"):
        again.add("probes", [DistortionRow("m", "clean", "self_clean", 0, 0, 0.0, 1.0, 5, "L0")])
    with pytest.raises(ValueError, match="'models' is not a table of typed rows"):
        again.add("models", [])


def test_probe_task_strategies_differ_only_where_the_tasks_do() -> None:
    utt, ctc = probe_task("utterance"), probe_task("ctc")
    assert isinstance(utt, UtteranceTask) and isinstance(ctc, CTCTask)
    assert probe_task_for_metric("error_rate") is ctc and probe_task_for_metric("accuracy") is utt
    with pytest.raises(ValueError, match="unknown probe task kind 'regression'; kinds: \\['ctc', 'utterance'\\]"):
        probe_task("regression")
    # Degradation is signed so that worse is positive for both directions of metric.
    assert utt.degradation(0.9, 0.6) == pytest.approx(0.3) and ctc.degradation(0.1, 0.4) == pytest.approx(0.3)
    assert utt.relative_drop(0.8, 0.6) == pytest.approx(0.25) and ctc.relative_drop(0.2, 0.3) == pytest.approx(0.5)
    assert utt.relative_drop(0.0, 0.1) is None and ctc.relative_drop(None, 0.1) is None
    assert utt.chance([0, 0, 1]) == pytest.approx(2 / 3) and ctc.chance([(1, 2), (3,)]) is None
    assert utt.largest_label([2, 5, 1]) == 5 and ctc.largest_label([(1, 7), (3,)]) == 7
    with pytest.raises(ValueError, match=r"labels\[1\]: CTC labels"):
        ctc.check_labels([(1,), (0, 2)], "labels")
    with pytest.raises(ValueError, match="must start with '<blank>'"):
        ctc.check_classes(["a", "b"], "chars")


def test_strategy_heads_losses_and_decoding() -> None:
    torch.manual_seed(0)
    feats, lengths = torch.randn(2, 3, 6, 4), torch.tensor([6, 4])  # [B, L, T, D]
    utt_head = probe_task("utterance").head(3, 4, 5, 0, False)
    ctc_head = probe_task("ctc").head(3, 4, 5, 8, False)
    assert isinstance(utt_head, UtteranceClassifier) and isinstance(ctc_head, CTCProbe)
    logits, log_probs = utt_head(feats, lengths), ctc_head(feats, lengths)
    assert logits.shape == (2, 5) and log_probs.shape == (2, 6, 5)
    assert torch.isfinite(probe_task("utterance").loss(logits, lengths, [1, 4]))
    assert torch.isfinite(probe_task("ctc").loss(log_probs, lengths, [(1, 2), (3,)]))
    assert probe_task("utterance").decode(logits, lengths) == logits.argmax(-1).tolist()
    decoded = probe_task("ctc").decode(log_probs, lengths)
    assert len(decoded) == 2 and all(0 not in tokens and len(tokens) <= n for tokens, n in zip(decoded, [6, 4]))


def _entry(name: str, layers: int, head_pairs: list[tuple[int, int]] | None = None) -> ModelUnderTest:
    return ModelUnderTest(
        name=name,
        path=f"{name}.ckpt",
        kind="student" if head_pairs else "teacher",
        format="s3prl",
        model=nn.Identity(),
        model_id=name,
        layer_names=[f"L{i}" for i in range(layers)],
        head_pairs=head_pairs,
    )


def test_distortion_scorer_compares_with_own_clean_and_teacher_targets() -> None:
    torch.manual_seed(0)
    clean = {"u1": torch.randn(3, 5, 4), "u2": torch.randn(3, 7, 4)}
    noisy = {u: f + 0.5 for u, f in clean.items()}  # every element moved by exactly 0.5
    teacher = {u: torch.randn(2, f.shape[1], 4) for u, f in clean.items()}
    student = _entry("s", 3, head_pairs=[(2, 1)])
    scorer = DistortionScorer(["u1", "u2"], teacher, {"s": [(2, 1)]})
    noise = Condition("noise", "white", 0.0)

    at_clean = scorer.score(student, Observation(CLEAN, {}, clean), ctx=None)  # type: ignore[arg-type]
    assert [(r.reference, r.index_a, r.index_b, r.layer) for r in at_clean] == [("teacher_clean", 2, 1, "L2")]
    rows = scorer.score(student, Observation(noise, {}, noisy), ctx=None)  # type: ignore[arg-type]
    own = [r for r in rows if r.reference == "self_clean"]
    assert [r.layer for r in own] == ["L0", "L1", "L2"] and all(r.condition == noise.id for r in rows)
    assert all(r.l1 == pytest.approx(0.5, abs=1e-6) and r.frames == 12 for r in own)
    to_teacher = next(r for r in rows if r.reference == "teacher_clean")
    expected = np.mean([(noisy[u][2] - teacher[u][1]).abs().mean().item() * noisy[u].shape[1] for u in clean]) * 2 / 12
    assert to_teacher.l1 == pytest.approx(expected, rel=1e-6)


def test_enhancement_scorer_skips_models_without_a_head_and_clean_audio() -> None:
    scorer = EnhancementScorer(max_utterances=2, real_pairs=[(np.zeros(16000, np.float32),) * 2])
    plain = _entry("plain", 2)
    assert scorer.score(plain, Observation(Condition("noise", "white", 0.0), {}, {}), ctx=None) == []  # type: ignore[arg-type]
    assert scorer.score_model(plain, ctx=None) == []  # type: ignore[arg-type]


def test_enhancement_scorer_scores_each_conditions_noisy_input_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The noisy input's PESQ/STOI depend on the audio only: two students with heads share them, and
    # every row equals the one scored from scratch.
    from dataclasses import replace
    from types import SimpleNamespace

    from robustdistiller.evaluate.scorers import enhancement

    calls: list[int] = []
    real_noisy_scores = enhancement.noisy_scores

    def counted(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float | None]:
        calls.append(len(pairs))
        return real_noisy_scores(pairs)

    monkeypatch.setattr(enhancement, "noisy_scores", counted)
    gains = {"a": 0.5, "b": 0.8}
    monkeypatch.setattr(enhancement, "_enhance", lambda entry, noisy: gains[entry.name] * noisy)
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    clean = {
        u: (np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        for u, f in (("u1", 220), ("u2", 330))
    }
    ctx = SimpleNamespace(test_uids=["u1", "u2"], wavs=clean)
    scorer = EnhancementScorer(max_utterances=2, real_pairs=[(clean["u1"], clean["u1"] + 0.1)])
    entries = [replace(_entry(name, 2), enhancement=object()) for name in gains]
    conditions = [Condition("noise", "white", 0.0), Condition("noise", "white", 10.0)]
    scored = []
    for condition in conditions:
        heard = {
            u: (w + rng.normal(0, 0.1 if condition.snr_db == 0.0 else 0.03, w.shape)).astype(np.float32)
            for u, w in clean.items()
        }
        for entry in entries:
            [row] = scorer.score(entry, Observation(condition, heard, {}), ctx)  # type: ignore[arg-type]
            scored.append((row, entry, condition, heard))
    reals = [scorer.score_model(e, ctx) for e in entries]  # type: ignore[arg-type]
    assert calls == [2, 2, 1]  # one per condition and one for the real pairs, not one per model
    for row, entry, condition, heard in scored:
        pairs = [(clean[u], heard[u]) for u in clean]
        assert row == enhancement.enhancement_row(entry, "conditions", condition.id, pairs)
    assert scored[0][0].noisy_stoi == scored[1][0].noisy_stoi and scored[0][0].stoi != scored[1][0].stoi
    assert reals[0][0].noisy_si_snr == reals[1][0].noisy_si_snr
