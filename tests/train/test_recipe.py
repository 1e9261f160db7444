from __future__ import annotations

from pathlib import Path

import pytest

from robustdistiller.config import ConfigError
from robustdistiller.data import Manifest
from robustdistiller.train.distillation import DistillTrainer
from robustdistiller.train.recipe import available_recipes, load_recipe


def test_bundled_recipes_load_with_overrides(tmp_path: Path) -> None:
    assert {"distilhubert", "rd_hubert", "rd_wavlm", "rd_rhubert", "demo"} <= set(available_recipes())
    wavlm = load_recipe("rd_wavlm", [f"data.root={tmp_path}", "optim.lr=1e-4"])
    assert wavlm.teacher.source == "microsoft/wavlm-base-plus"
    assert wavlm.optim.lr == 1e-4 and wavlm.optim.grad_clip == 15.0 and wavlm.train.keep_last == 25
    assert wavlm.enhancement.use_enhancement and wavlm.enhancement.weight == 2.0
    base = load_recipe("distilhubert", [f"data.root={tmp_path}"])
    assert base.teacher.source == "facebook/hubert-base-ls960"
    assert base.corruption.p_clean == 1.0 and not base.enhancement.use_enhancement
    assert base.optim.grad_clip == 5.0 and base.train.keep_last == 10
    # The Robust HuBERT recipe cannot run without the user's fairseq checkpoint.
    with pytest.raises(ConfigError, match="teacher.source"):
        load_recipe("rd_rhubert", [f"data.root={tmp_path}"])
    rhubert = load_recipe("rd_rhubert", [f"data.root={tmp_path}", "teacher.source=/ckpt/robust_hubert.pt"])
    assert rhubert.teacher.source == "/ckpt/robust_hubert.pt"


def test_recipe_by_path_and_unknown_name(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("data:\n  corpus: builtin\n")
    assert load_recipe(path).data.corpus == "builtin"
    with pytest.raises(ConfigError, match="rd_wavlm"):
        load_recipe("rd_wavlmm")


def test_typo_lists_valid_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"optim\.lrr.*did you mean 'lr'.*valid keys: .*grad_clip"):
        load_recipe("rd_wavlm", [f"data.root={tmp_path}", "optim.lrr=1e-4"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr", "key=value"),
        ("optim.lr=fast", "expected float"),
        ("train.precision=fp8", "not one of"),
        ("optim.grad_accum=0", "grad_accum must be >= 1"),
        ("enhancement.input_dim=768", "512 dims"),
        ("data.corpus=builtin", "cannot be combined"),
    ],
)
def test_bad_overrides(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_recipe("rd_wavlm", [f"data.root={tmp_path}", override])


def test_missing_data_fails_before_the_teacher_is_loaded(make_recipe, tmp_path: Path) -> None:
    # The teacher is unreachable too: the data error must come first.
    missing = make_recipe(f"data.manifests=[{tmp_path / 'nope.tsv'}]", "teacher.source=nobody/nothing")
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        DistillTrainer(missing)
    moved = make_recipe(f"data.root={tmp_path / 'moved'}", "teacher.source=nobody/nothing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DistillTrainer(moved)
    with pytest.raises(FileNotFoundError, match="LibriSpeech root not found"):
        DistillTrainer(make_recipe("data.manifests=[]", f"data.root={tmp_path / 'libri'}"))


def test_empty_manifest_is_refused(make_recipe, tmp_path: Path) -> None:
    empty = Manifest(tmp_path, []).write(tmp_path / "empty.tsv")
    with pytest.raises(ValueError, match="no rows"):
        DistillTrainer(make_recipe(f"data.manifests=[{empty}]"))


def test_unreachable_teacher_is_explained(make_recipe, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="network access once"):
        DistillTrainer(make_recipe("teacher.source=robustdistiller-tests/not-cached"))
    with pytest.raises(FileNotFoundError, match="teacher source not found"):
        DistillTrainer(make_recipe("teacher.source=/no/such/robust_hubert.pt"))
