"""End to end: tiny students (one with an enhancement head) and a tiny teacher through ``evaluate``."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from robustdistiller.checkpoints.s3prl import save_s3prl_checkpoint
from robustdistiller.config import from_dict, to_dict
from robustdistiller.data.corpus import build_corpus
from robustdistiller.data.report import BadFileReport
from robustdistiller.evaluate.conditions import ConditionConfig
from robustdistiller.evaluate.metrics import pesq_wb, si_snr, stoi
from robustdistiller.evaluate.models import load_model_under_test
from robustdistiller.evaluate.results import SCHEMA_VERSION, TABLES, Results
from robustdistiller.evaluate.runner import EvaluateOptions, evaluate, quick_options
from robustdistiller.evaluate.scorers import enhancement_row, voicebank_pairs
from robustdistiller.evaluate.tasks import builtin_tasks
from robustdistiller.models.enhancement import EnhancementConfig, EnhancementHead
from robustdistiller.models.student import DistillerConfig, DistillerModel

CONV = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"


def _teacher(path: Path) -> Path:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    HubertModel(
        HubertConfig(
            conv_dim=(32,) * 7,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
        )
    ).save_pretrained(path)
    return path


def _student(path: Path, teacher: Path, seed: int, with_head: bool) -> Path:
    torch.manual_seed(seed)
    cfg = DistillerConfig.from_s3prl(
        {
            "extractor_conv_feature_layers": CONV,
            "encoder_layers": 1,
            "encoder_embed_dim": 64,
            "encoder_ffn_embed_dim": 128,
            "encoder_attention_heads": 4,
            "conv_pos": 16,
            "conv_pos_groups": 4,
            "final_dim": 64,
            "n_tasks": 2,
            "pred_layer_id": [1, 2],
        }
    )
    extra_config: dict = {"teacher": {"model": str(teacher)}}
    extra: dict = {}
    if with_head:
        enh = from_dict(
            EnhancementConfig, {"use_enhancement": True, "input_dim": 32, "num_layers": 1, "hidden_size": 16}
        )
        extra_config["enhancement_head"] = to_dict(enh)
        extra["EnhancementHead"] = EnhancementHead(enh).state_dict()
    return save_s3prl_checkpoint(path, DistillerModel(cfg).eval(), extra_config=extra_config, extra=extra)


def small_options(**overrides: object) -> EvaluateOptions:
    """The tests' evaluation size: 16 / 8 / 8 utterances per split, 2 probe epochs."""
    return quick_options(max_train=16, max_val=8, max_test=8, max_distortion=8, probe={"epochs": 2}, **overrides)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("pipeline")
    teacher = _teacher(root / "teacher")
    models = [_student(root / "plain.ckpt", teacher, 0, False), _student(root / "robust.ckpt", teacher, 1, True)]
    corpus = build_corpus(root / "corpus", utterances_per_word_per_speaker=3, test_takes=1)
    tasks = builtin_tasks(corpus, seed=0)
    conditions = from_dict(
        ConditionConfig,
        {
            "noise_types": ["white"],
            "snrs": [0.0, 20.0],
            "rt60s": [0.3],
            "rirs_per_bin": 1,
            "mixed_snrs": [],
            "mixed_rt60s": [],
            "cache_dir": str(root / "material"),
        },
    )
    options = small_options(max_enhancement=1, rtf_seconds=0.5, cache_dir=str(root / "cache"))
    kwargs = dict(tasks=tasks, conditions=conditions, seed=0, names=["plain", "robust"], options=options)
    results = evaluate(models, out_dir=root / "out", **kwargs)  # teacher: the one the checkpoints record
    return {"root": root, "results": results, "models": models, "kwargs": kwargs}


def test_results_json_schema_and_tables(setup: dict) -> None:
    out = setup["root"] / "out"
    data = json.loads((out / "results.json").read_text())
    assert data["schema"] == "robustdistiller.evaluation" and data["version"] == SCHEMA_VERSION
    assert {*TABLES, "seed", "train_on", "quick", "condition_set", "timings_s", "created"} <= set(data)
    assert [m["name"] for m in data["models"]] == ["plain", "robust", "teacher"]
    assert [m["kind"] for m in data["models"]] == ["student", "student", "teacher"]
    assert data["models"][1]["has_enhancement"] and not data["models"][0]["has_enhancement"]
    assert [c["id"] for c in data["conditions"]] == ["clean", "noise/white/snr+0", "noise/white/snr+20", "reverb/rt0.3"]
    # One probe row per (model, task, condition), scores in [0, 1], no degradation on clean.
    assert len(data["probes"]) == 3 * 2 * 4
    # Accuracy over the 8 test utterances is k / 8; degradation is the clean score minus this one.
    assert all(p["n"] == 8 and p["value"] * 8 == round(p["value"] * 8) for p in data["probes"])
    clean = {(p["model"], p["task"]): p["value"] for p in data["probes"] if p["condition"] == "clean"}
    for p in data["probes"]:
        assert p["degradation"] == pytest.approx(clean[p["model"], p["task"]] - p["value"], abs=1e-12), p
    assert len(data["headline"]) == 3 * 2
    assert Results.read(out / "results.json").to_dict()["probes"] == data["probes"]
    for table in ("probes", "distortion", "headline", "efficiency", "conditions"):
        with (out / "tables" / f"{table}.csv").open() as fh:
            assert len(list(csv.DictReader(fh))) == len(data[table])


def test_distortion_rows_compare_heads_with_teacher_targets(setup: dict) -> None:
    rows = setup["results"].distortion
    heads = [r for r in rows if r["model"] == "robust" and r["reference"] == "teacher_clean"]
    assert {(r["index_a"], r["index_b"], r["layer"]) for r in heads} == {(2, 1, "head1->T1"), (3, 2, "head2->T2")}
    assert {r["condition"] for r in heads} == {"clean", "noise/white/snr+0", "noise/white/snr+20", "reverb/rt0.3"}
    own = [r for r in rows if r["model"] == "plain" and r["reference"] == "self_clean"]
    assert {r["layer"] for r in own} == {"proj", "L1", "head1->T1", "head2->T2"}
    assert "clean" not in {r["condition"] for r in own}
    teacher_self = [r for r in rows if r["model"] == "teacher" and r["reference"] == "teacher_clean"]
    clean = [r for r in teacher_self if r["condition"] == "clean"]
    assert clean and all(r["l1"] == 0.0 and r["cosine"] == pytest.approx(1.0) for r in clean)
    # More noise moves the representation further from the clean one.
    by_snr = {r["condition"]: r["l1"] for r in own if r["layer"] == "L1"}
    assert by_snr["noise/white/snr+0"] > by_snr["noise/white/snr+20"] > 0


def test_enhancement_and_efficiency_rows(setup: dict) -> None:
    results = setup["results"]
    enh = results.enhancement
    assert {e["model"] for e in enh} == {"robust"}
    assert {e["condition"] for e in enh if e["dataset"] == "conditions"} == {
        "noise/white/snr+0",
        "noise/white/snr+20",
        "reverb/rt0.3",
    }
    for e in enh:
        assert e["n"] == 1 and e["si_snr_improvement"] == pytest.approx(e["si_snr"] - e["noisy_si_snr"], abs=1e-9)
        # A random head scales the noisy magnitudes by about 0.5: every score is nearly the noisy one's.
        assert abs(e["si_snr_improvement"]) < 1.0, e
        assert abs(e["pesq_wb"] - e["noisy_pesq_wb"]) < 0.1 and abs(e["stoi"] - e["noisy_stoi"]) < 0.02, e
    # White noise mixed at an exact SNR: the noisy input's SI-SNR is that SNR.
    noisy = {e["condition"]: e["noisy_si_snr"] for e in enh}
    assert noisy["noise/white/snr+0"] == pytest.approx(0.0, abs=0.5)
    assert noisy["noise/white/snr+20"] == pytest.approx(20.0, abs=0.5)
    eff = {e["model"]: e for e in results.efficiency}
    assert set(eff) == {"plain", "robust", "teacher"}
    assert eff["teacher"]["parameters"] > eff["plain"]["parameters"] > 0
    assert all(e["macs_per_second"] > 0 and e["rtf_1_thread"] > 0 for e in eff.values())


def test_voicebank_pairs_are_scored(setup: dict, shared_data: Path) -> None:
    report = BadFileReport()
    pairs = voicebank_pairs(shared_data / "voicebank_demand", report)
    assert len(pairs) == 6 and len(report) == 0 and all(c.shape == n.shape for c, n in pairs)
    robust = load_model_under_test(setup["models"][1], "robust")
    row = enhancement_row(robust, "voicebank_demand", "real", pairs[:1])
    clean, noisy = pairs[0]
    assert row["n"] == 1
    assert row["noisy_pesq_wb"] == pytest.approx(pesq_wb(clean, noisy), abs=1e-6)
    assert row["noisy_stoi"] == pytest.approx(stoi(clean, noisy, 16000), abs=1e-9)
    assert row["noisy_si_snr"] == pytest.approx(si_snr(noisy, clean), abs=1e-6)
    # A random head scales the noisy magnitudes by about 0.5: SI-SNR is nearly unchanged (0.15 dB here).
    assert abs(row["si_snr_improvement"]) < 1.0
    with pytest.raises(FileNotFoundError, match="clean/ and noisy/"):
        voicebank_pairs(shared_data / "fsdd", report)


def test_report_files_and_plots(setup: dict) -> None:
    out = setup["root"] / "out"
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for text in ("## Headline", "plain", "robust", "Representation distortion", "Speech enhancement", "Efficiency"):
        assert text in md
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert "snr_builtin-word.png" in pngs and "distortion_plain.png" in pngs and "reverb_builtin-speaker.png" in pngs
    assert all(f"plots/{name}" in md for name in pngs)
    assert html.count("data:image/png;base64,") == len(pngs)


def test_a_second_run_reproduces_the_conditions_and_scores(setup: dict) -> None:
    # No cache (the demo's "off"): features are extracted again, so extraction itself must be
    # deterministic, and nothing is read from or written to the cache folder.
    cache = setup["root"] / "cache-again"
    again = evaluate(
        setup["models"],
        out_dir=setup["root"] / "again",
        **{
            **setup["kwargs"],
            "options": small_options(max_enhancement=0, efficiency=False, cache_dir=str(cache), cache="off"),
        },
    )
    assert not cache.exists(), "cache='off' wrote no feature file"
    first = setup["results"]
    assert again.condition_fingerprint == first.condition_fingerprint
    assert [c["hash"] for c in again.conditions] == [c["hash"] for c in first.conditions]
    assert [(p["model"], p["task"], p["condition"], p["value"]) for p in again.probes] == [
        (p["model"], p["task"], p["condition"], p["value"]) for p in first.probes
    ]


def test_the_cache_keeps_this_evaluations_features_only(setup: dict, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(setup["root"] / "cache", cache)  # features of both students and the teacher
    before = {p.name for p in cache.iterdir()}
    options = small_options(max_enhancement=0, efficiency=False, evaluate_teacher=False, cache_dir=str(cache))
    kwargs = {**setup["kwargs"], "names": ["plain"], "options": options}
    evaluate(setup["models"][:1], out_dir=tmp_path / "one", **kwargs)
    after = {p.name for p in cache.iterdir()}
    assert after and after < before, "reused what it needed, dropped the other student's features"
    evaluate(setup["models"][:1], out_dir=tmp_path / "two", **kwargs)
    assert {p.name for p in cache.iterdir()} == after  # nothing new to extract, nothing to drop
    keep = {**kwargs, "names": ["robust"], "options": dataclasses.replace(options, cache="keep")}
    evaluate(setup["models"][1:], out_dir=tmp_path / "three", **keep)
    assert {p.name for p in cache.iterdir()} > after
    delete = {**kwargs, "options": dataclasses.replace(options, cache="delete")}
    evaluate(setup["models"][:1], out_dir=tmp_path / "four", **delete)
    assert not cache.exists()


def test_bad_arguments_are_refused(setup: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no tasks"):
        evaluate(setup["models"], out_dir=tmp_path)
    with pytest.raises(ValueError, match="train_on"):
        evaluate(setup["models"], out_dir=tmp_path, tasks=setup["kwargs"]["tasks"], train_on="noisy")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no such checkpoint file: .*missing.ckpt"):
        evaluate([tmp_path / "missing.ckpt"], out_dir=tmp_path, **{**setup["kwargs"], "names": None})


def test_cli_refuses_bad_arguments_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from robustdistiller.cli import main

    assert main(["evaluate", "--model", "a.ckpt", "--model", "b.ckpt", "--name", "x", "--out", str(tmp_path)]) == 1
    assert "1 --name values for 2 --model values" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "gone.ckpt"), "--task", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown task 'nope'" in capsys.readouterr().err
