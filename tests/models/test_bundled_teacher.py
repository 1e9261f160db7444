"""The mini teacher shipped in the package: loads, has the documented shape, and its card matches it."""

from __future__ import annotations

import re

import pytest
import torch

from robustdistiller.checkpoints.teachers import load_pretrained, load_teacher
from robustdistiller.models.teacher import bundled_teacher
from robustdistiller.train.clusters import ClusterModel
from robustdistiller.train.pretrain_recipe import load_pretrain_recipe

MAX_BYTES = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def folder():
    return bundled_teacher("hubert_mini")


def test_it_is_a_complete_folder_within_5_mb(folder) -> None:
    names = {p.name for p in folder.iterdir()}
    assert names >= {"config.json", "model.safetensors", "clusters.npz", "README.md"}
    assert sum(p.stat().st_size for p in folder.iterdir()) <= MAX_BYTES


def test_it_loads_with_the_shape_of_the_hubert_mini_recipe(folder) -> None:
    teacher = load_teacher(folder)
    documented = load_pretrain_recipe("hubert_mini", ["data.manifests=[unused.tsv]"]).model
    assert teacher.model.config == documented
    assert all(p.dtype == torch.float32 for p in teacher.parameters())  # fp16 on disk, upcast on load
    wavs = torch.randn(2, 16000)
    hidden = teacher.extract(wavs, torch.tensor([16000, 12000]))
    assert len(hidden) == documented.num_layers + 1
    assert hidden[-1].shape == (2, 49, documented.embed_dim) and torch.isfinite(hidden[-1]).all()


def test_transformers_reads_the_same_model(folder) -> None:
    from transformers import HubertModel

    hf = HubertModel.from_pretrained(folder, dtype=torch.float32).eval()
    wavs = torch.randn(1, 12000)
    ours = load_teacher(folder).extract(wavs)[-1]
    with torch.no_grad():
        theirs = hf(wavs, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_the_card_matches_the_model(folder) -> None:
    card = (folder / "README.md").read_text()
    teacher = load_teacher(folder)
    cfg = teacher.model.config
    params = sum(p.numel() for p in teacher.parameters())
    assert f"| parameters | {params} (" in card
    assert f"| CNN | `{cfg.conv_layers}` |" in card
    assert (
        f"| encoder | {cfg.num_layers} layers, width {cfg.embed_dim}, {cfg.attention_heads} heads, "
        f"FFN {cfg.ffn_dim}, pos-conv {cfg.conv_pos}/{cfg.conv_pos_groups} |"
    ) in card
    clusters = ClusterModel.load(folder / "clusters.npz")
    assert clusters.feature == "mfcc" and clusters.centers.shape == (100, 39)
    assert f"| targets | {clusters.num_clusters} k-means clusters" in card
    # data, licence and attribution, the exact command, seeds, steps and wall time
    assert "CC BY 4.0" in card and "Panayotov" in card
    assert "robustdistiller pretrain --config hubert_mini" in card
    assert re.search(r"\| steps \| \d+ of batch", card) and re.search(r"\| wall time \| [\d.]+ min", card)
    assert "| seed | train 0" in card
    # the probe section was filled in by bench/teacher_probe.py
    assert "Not measured yet" not in card and "| random demo teacher | fsdd-digit |" in card


def test_recipes_reach_it_by_its_clone_path_from_any_folder(folder, tmp_path, monkeypatch) -> None:
    # demo.yaml's teacher.source and robust_hubert_mini.yaml's init.source name it by its path in a clone;
    # from another folder (or a wheel install) that path does not exist, and must still mean this teacher.
    monkeypatch.chdir(tmp_path)
    source = "robustdistiller/assets/teachers/hubert_mini"
    wavs = torch.randn(1, 8000)
    reference = load_teacher(folder)
    assert torch.equal(load_teacher(source).extract(wavs)[-1], reference.extract(wavs)[-1])
    model, mask = load_pretrained(source)
    assert mask is not None and model.config == reference.model.config
    with pytest.raises(FileNotFoundError, match="no bundled teacher 'nope'.*bundled: hubert_mini"):
        load_teacher("robustdistiller/assets/teachers/nope")
    # a folder of that name under the working directory is the user's and wins
    (tmp_path / source).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(source)
