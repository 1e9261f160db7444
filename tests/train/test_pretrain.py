"""HuBERT-style pre-training: MFCC frames, k-means labels, span masks, the loss, the trainer, export."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from fixtures_tiny import SR, TINY_CONV

from robustdistiller.augment.overlap import overlay
from robustdistiller.checkpoints.teachers import load_teacher
from robustdistiller.config import ConfigError, apply_overrides, from_dict
from robustdistiller.data import Manifest, ManifestEntry
from robustdistiller.data.features import MFCC_DIM, fit_frames, mfcc_frames
from robustdistiller.models.conv import conv_output_lengths, parse_conv_layers
from robustdistiller.models.pretraining import HubertPretrainModel, span_mask
from robustdistiller.models.teacher import TeacherConfig
from robustdistiller.train.clusters import ClusterModel, FrameLabeller, fit_clusters
from robustdistiller.train.masked_prediction import masked_prediction_loss
from robustdistiller.train.objective import MicroBatch
from robustdistiller.train.pretrain import PretrainTrainer, pretrain
from robustdistiller.train.pretrain_recipe import PretrainRecipe, load_pretrain_recipe

DEFAULT_CONV = parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")


def tone(freqs: list[float], seconds_each: float) -> np.ndarray:
    t = np.arange(int(seconds_each * SR)) / SR
    return np.concatenate([0.5 * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)


# ------------------------------------------------------------------ MFCC frames and cluster labels
@pytest.mark.parametrize("length", [400, 719, 720, 16000, 16319, 16320, 48123])
def test_mfcc_frames_follow_the_cnn_frames(length: int) -> None:
    wav = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    cnn = int(conv_output_lengths(torch.tensor([length]), DEFAULT_CONV)[0])
    raw = mfcc_frames(wav)
    assert raw.shape == ((length - 400) // 320 + 1, MFCC_DIM)  # 25 ms windows every 20 ms, not centred
    assert abs(raw.shape[0] - cnn) <= 1
    assert mfcc_frames(wav, cnn).shape == (cnn, MFCC_DIM)


def test_fit_frames_pads_or_trims_only_the_last_frame() -> None:
    feats = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert fit_frames(feats, 3).tolist() == feats[:3].tolist()
    assert fit_frames(feats, 5)[-1].tolist() == feats[-1].tolist()
    with pytest.raises(ValueError, match="400-sample window every 320"):
        fit_frames(feats, 10)


def test_cluster_labels_of_a_known_signal_change_where_the_tone_changes() -> None:
    # 1 s at 300 Hz then 1 s at 3 kHz: frame t covers samples [320 t, 320 t + 400), so frames <= 48
    # hear only the low tone and frames >= 50 only the high one.
    wav = tone([300.0, 3000.0], 1.0)
    frames = mfcc_frames(wav)
    clusters = fit_clusters(frames, 2, feature="mfcc", seed=0)
    wavs = torch.from_numpy(np.stack([wav, np.pad(wav[:16000], (0, 16000))]))
    lengths = torch.tensor([32000, 16000])
    frame_lengths = conv_output_lengths(lengths, DEFAULT_CONV)
    labels = FrameLabeller(clusters).labels(wavs, lengths, frame_lengths, int(frame_lengths.max()))
    assert labels.shape == (2, int(frame_lengths[0]))
    low, high = labels[0, 3:46], labels[0, 53:-3]  # away from the deltas' +-2-frame edges
    assert (low == low[0]).all() and (high == high[0]).all() and low[0] != high[0]
    # the second row is the first half alone: same labels, -1 on its padded frames
    n = int(frame_lengths[1])
    assert torch.equal(labels[1, 3:46], low) and (labels[1, n:] == -1).all()


def test_cluster_model_round_trips_without_pickle(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).standard_normal((500, 4)).astype(np.float32) * [1, 2, 3, 4]
    model = fit_clusters(frames, 8, feature="layer2", seed=0)
    loaded = ClusterModel.load(model.save(tmp_path / "c.npz"))
    assert loaded.feature == "layer2" and loaded.num_clusters == 8
    x = torch.from_numpy(frames[:50])
    assert torch.equal(loaded.predict(x), model.predict(x))
    # nearest centre in standardised units = scikit-learn's assignment of the same points
    dist = (((frames[:50] - model.mean) / model.scale)[:, None] - model.centers[None]) ** 2
    assert model.predict(x).tolist() == dist.sum(-1).argmin(1).tolist()


def test_kmeans_refuses_too_few_frames_and_degenerate_features() -> None:
    with pytest.raises(ValueError, match="at least targets.num_clusters=100 frames, got 40"):
        fit_clusters(np.zeros((40, 39), np.float32), 100, feature="mfcc", seed=0)
    with pytest.raises(RuntimeError, match="used only 1 of 8 clusters"):
        fit_clusters(np.ones((400, 39), np.float32), 8, feature="mfcc", seed=0)
    with pytest.raises(RuntimeError, match="NaN/inf"):
        fit_clusters(np.full((400, 3), np.inf, np.float32), 8, feature="mfcc", seed=0)


# ------------------------------------------------------------------ span masking
def _expected_masked_fraction(n: int, prob: float, length: int) -> float:
    """Exact expectation for fairseq's static spans: round(prob * n / length + U(0,1)) starts
    drawn without replacement among n - length + 1 positions."""
    slots = n - length + 1
    base = prob * n / length
    counts = {math.floor(base): 1 - (base - math.floor(base)), math.floor(base) + 1: base - math.floor(base)}
    total = 0.0
    for k, pk in counts.items():
        for pos in range(n):
            window = min(pos, slots - 1) - max(0, pos - length + 1) + 1  # starts that cover pos
            total += pk * (1 - math.comb(slots - window, k) / math.comb(slots, k))
    return total / n


def test_span_mask_statistics() -> None:
    rng = np.random.default_rng(0)
    lengths = torch.full((2000,), 100)
    mask = span_mask(lengths, 120, 0.8, 10, rng)
    assert mask.shape == (2000, 120) and not mask[:, 100:].any()  # padding never masked
    assert float(mask[:, :100].float().mean()) == pytest.approx(_expected_masked_fraction(100, 0.8, 10), abs=0.005)
    # masked frames come in runs of whole spans: every run is at least mask_length long
    for row in mask[:50].int():
        edges = torch.diff(torch.cat([torch.zeros(1), row.float(), torch.zeros(1)])).nonzero().flatten()
        runs = (edges[1::2] - edges[::2]).tolist()
        assert runs and min(runs) >= 10
    again = span_mask(lengths, 120, 0.8, 10, np.random.default_rng(0))
    assert torch.equal(mask, again)  # the generator is the only randomness


def test_span_mask_handles_rows_shorter_than_a_span() -> None:
    mask = span_mask(torch.tensor([4, 30]), 30, 0.8, 10, np.random.default_rng(1))
    assert mask[0, :4].all() and not mask[0, 4:].any()
    assert 10 <= int(mask[1].sum()) <= 30


# ------------------------------------------------------------------ the loss
def test_masked_prediction_loss_by_hand() -> None:
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, -5.0]]])
    labels = torch.tensor([[0, 0, 1, 1]])
    time_mask = torch.tensor([[True, False, True, True]])
    frame_mask = torch.tensor([[True, True, True, False]])  # the last frame is padding
    out = masked_prediction_loss(logits, labels, time_mask, frame_mask, unmasked_weight=0.5)
    masked = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    unmasked = math.log(1 + math.e)
    assert float(out.masked) == pytest.approx(masked, abs=1e-6)
    assert float(out.unmasked) == pytest.approx(unmasked, abs=1e-6)
    assert float(out.total) == pytest.approx(masked + 0.5 * unmasked, abs=1e-6)
    assert float(out.accuracy) == pytest.approx(0.5)  # frame 0 right; frame 2 a tie, argmax picks 0
    assert float(masked_prediction_loss(logits, labels, time_mask, frame_mask).total) == pytest.approx(masked)
    with pytest.raises(ValueError, match="no masked valid frame"):
        masked_prediction_loss(logits, labels, torch.zeros_like(time_mask), frame_mask)


def test_logits_are_cosines_over_the_temperature() -> None:
    config = TeacherConfig(
        conv_layers=TINY_CONV, embed_dim=32, num_layers=1, attention_heads=4, ffn_dim=64, conv_pos=8, conv_pos_groups=4
    )
    model = HubertPretrainModel(config, 5, final_dim=16, logit_temp=0.1)
    wavs = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 6000])
    mask = torch.zeros(2, 24, dtype=torch.bool)
    mask[:, 3:8] = True
    out = model(wavs, lengths, mask)
    assert out.logits.shape == (2, 24, 5) and out.logits.abs().max() <= 10.0 + 1e-4
    assert out.frame_mask.sum(1).tolist() == [24, 18]
    # the mask embedding replaces the CNN features: masked frames change, the encoder sees them
    assert not torch.allclose(out.logits, model(wavs, lengths).logits)


# ------------------------------------------------------------------ the trainer
def tiny_pretrain_recipe(manifest: Path, out_dir: Path, *overrides: str) -> PretrainRecipe:
    data = {
        "data": {"manifests": [str(manifest)], "max_length": 12000, "batch_size": 4, "num_workers": 0, "seed": 3},
        "model": {
            "conv_layers": TINY_CONV,
            "embed_dim": 64,
            "num_layers": 2,
            "attention_heads": 4,
            "ffn_dim": 128,
            "conv_pos": 16,
            "conv_pos_groups": 4,
        },
        "targets": {"num_clusters": 8, "max_frames": 5000},
        "objective": {"final_dim": 32, "dropout": 0.1},
        "optim": {"lr": 2e-3, "total_steps": 30, "warmup_proportion": 0.0, "grad_clip": 10.0},
        "train": {"out_dir": str(out_dir), "device": "cpu", "log_every": 5, "save_every": 10, "keep_last": 2},
    }
    return from_dict(PretrainRecipe, apply_overrides(data, list(overrides)))


def test_a_few_steps_lower_the_loss_and_write_a_teacher(tiny_manifest: Path, tmp_path: Path) -> None:
    result = pretrain(tiny_pretrain_recipe(tiny_manifest, tmp_path / "run"))
    assert result.step == 30 and result.interrupted is None
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5]) - 0.2
    teacher = tmp_path / "run" / "teacher"
    assert {p.name for p in teacher.iterdir()} >= {"config.json", "model.safetensors", "clusters.npz", "README.md"}
    loaded = load_teacher(teacher)
    assert loaded.num_layers == 2 and loaded.embed_dim == 64
    assert ClusterModel.load(teacher / "clusters.npz").num_clusters == 8
    card = (teacher / "README.md").read_text()
    assert "| steps | 30 of batch 4" in card and "<!-- probes -->" in card


def test_the_model_hears_the_overlays_and_predicts_the_primary_labels(
    tiny_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = ("optim.total_steps=2", "objective.mixing.prob=1.0", "model.family=wavlm")
    trainer = PretrainTrainer(tiny_pretrain_recipe(tiny_manifest, tmp_path / "run", *overrides))
    objective = trainer.objective
    batches: list[MicroBatch] = []
    labelled: list[torch.Tensor] = []
    heard: list[torch.Tensor] = []
    real_loss, real_labels = objective.loss, objective.labeller.labels

    def loss(batch: MicroBatch, tools: Any) -> Any:
        batches.append(batch)
        return real_loss(batch, tools)

    def labels(wavs: torch.Tensor, *args: Any) -> torch.Tensor:
        labelled.append(wavs.clone())
        return real_labels(wavs, *args)

    monkeypatch.setattr(objective, "loss", loss)
    monkeypatch.setattr(objective.labeller, "labels", labels)
    objective.model.register_forward_pre_hook(lambda module, args: heard.append(args[0].clone()))
    trainer.fit()
    assert len(batches) == len(heard) == len(labelled) == 2
    for batch, wavs, labels_from in zip(batches, heard, labelled):
        overlays = objective.overlays(batch)
        assert len(overlays) == len(batch.lengths)  # prob 1: every row carries another's segment
        assert torch.equal(wavs, overlay(batch.noisy, batch.lengths, batch.clean, overlays))
        assert not torch.equal(wavs, batch.noisy)
        assert torch.equal(labels_from, batch.clean)  # the labels are the primary's, from the clean audio


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_exported_teacher_equals_the_trained_encoder_in_transformers(
    family: str, tiny_manifest: Path, tmp_path: Path
) -> None:
    import transformers

    overrides = ("optim.total_steps=2", f"model.family={family}", "objective.mixing.prob=0.5")
    pretrain(tiny_pretrain_recipe(tiny_manifest, tmp_path / "run", *overrides))
    teacher = load_teacher(tmp_path / "run" / "teacher")
    assert teacher.model.config.family == family
    state = torch.load(tmp_path / "run" / "states-2.ckpt", weights_only=True)["Model"]
    encoder = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    assert len(encoder) == len(teacher.model.state_dict())
    assert all(torch.equal(teacher.model.state_dict()[k], v) for k, v in encoder.items())
    hf_class = {"hubert": transformers.HubertModel, "wavlm": transformers.WavLMModel}[family]
    hf = hf_class.from_pretrained(tmp_path / "run" / "teacher").eval()
    card = (tmp_path / "run" / "teacher" / "README.md").read_text()
    assert f"`{hf_class.__name__}` layout" in card and "utterance mixing (WavLM): 0.5 of the utterances" in card
    wavs = torch.randn(1, 9000)
    ours = teacher.extract(wavs)[-1]
    theirs = hf(wavs, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("variant", [(), ("model.family=wavlm", "objective.mixing.prob=0.5")], ids=["hubert", "wavlm"])
def test_resume_equals_an_uninterrupted_run(variant: tuple[str, ...], tiny_manifest: Path, tmp_path: Path) -> None:
    common = ("optim.total_steps=4", "train.save_every=100", "objective.dropout=0.1", *variant)
    straight = pretrain(tiny_pretrain_recipe(tiny_manifest, tmp_path / "straight", *common))
    first = pretrain(tiny_pretrain_recipe(tiny_manifest, tmp_path / "resumed", *common, "train.stop_at_step=2"))
    assert first.step == 2 and not (tmp_path / "resumed" / "teacher").exists()  # no teacher before the end
    resumed = pretrain(tiny_pretrain_recipe(tiny_manifest, tmp_path / "resumed", *common), resume=True)
    assert resumed.step == 4
    assert resumed.losses == pytest.approx(straight.losses[2:], abs=1e-6)
    a = torch.load(tmp_path / "straight" / "states-4.ckpt", weights_only=True)["Model"]
    b = torch.load(tmp_path / "resumed" / "states-4.ckpt", weights_only=True)["Model"]
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


def test_unreadable_files_are_skipped_and_listed(tiny_manifest: Path, tmp_path: Path) -> None:
    manifest = Manifest.read(tiny_manifest)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    sf.write(tmp_path / "tiny.wav", np.full(100, 0.1, np.float32), SR)
    entries = [ManifestEntry(str(manifest.abspath(i)), e.num_samples) for i, e in enumerate(manifest.entries)]
    entries += [ManifestEntry(str(tmp_path / "broken.wav"), 8000), ManifestEntry(str(tmp_path / "tiny.wav"), 8000)]
    path = Manifest(Path("/"), entries).write(tmp_path / "with_bad.tsv")
    result = pretrain(tiny_pretrain_recipe(path, tmp_path / "run", "optim.total_steps=3"))
    assert result.step == 3
    listed = (tmp_path / "run" / "bad_files.tsv").read_text()
    assert "broken.wav" in listed and "tiny.wav" in listed
    assert len(result.bad_files) == 2


def test_clear_errors_before_training(tiny_manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least targets.num_clusters=4000 frames"):
        pretrain(tiny_pretrain_recipe(tiny_manifest, tmp_path / "many", "targets.num_clusters=4000"))
    assert not list((tmp_path / "many").glob("states-*.ckpt"))
    empty = tmp_path / "empty.tsv"
    Manifest(tmp_path, []).write(empty)
    with pytest.raises(ValueError, match="has no rows"):
        pretrain(tiny_pretrain_recipe(empty, tmp_path / "empty"))
    with pytest.raises(ConfigError, match="targets.kind=layer needs targets.source"):
        tiny_pretrain_recipe(tiny_manifest, tmp_path / "x", "targets.kind=layer")
    with pytest.raises(ConfigError, match="did you mean 'mask_prob'"):
        tiny_pretrain_recipe(tiny_manifest, tmp_path / "x", "objective.mask_prop=0.5")
    with pytest.raises(ConfigError, match="model.family='wav2vec2': pre-training builds hubert and wavlm models only"):
        tiny_pretrain_recipe(tiny_manifest, tmp_path / "x", "model.family=wav2vec2")


def test_a_changed_cluster_count_does_not_reuse_old_clusters(tiny_manifest: Path, tmp_path: Path) -> None:
    pretrain(tiny_pretrain_recipe(tiny_manifest, tmp_path / "run", "optim.total_steps=1"))
    # A new run into the folder is refused as a whole (one run per folder); resuming with another
    # cluster count must not silently train against the saved clusters.
    with pytest.raises(ValueError, match="holds 8 mfcc clusters but the recipe asks for 6"):
        pretrain(tiny_pretrain_recipe(tiny_manifest, tmp_path / "run", "targets.num_clusters=6"), resume=True)


def test_iteration_two_clusters_a_layer_of_the_first_model(tiny_manifest: Path, tmp_path: Path) -> None:
    pretrain(tiny_pretrain_recipe(tiny_manifest, tmp_path / "it1", "optim.total_steps=2"))
    first = tmp_path / "it1" / "teacher"
    result = pretrain(
        tiny_pretrain_recipe(
            tiny_manifest,
            tmp_path / "it2",
            "optim.total_steps=2",
            "targets.kind=layer",
            f"targets.source={first}",
            "targets.layer=1",
        )
    )
    assert result.step == 2
    clusters = ClusterModel.load(tmp_path / "it2" / "teacher" / "clusters.npz")
    assert clusters.feature == "layer1" and clusters.centers.shape == (8, 64)


def test_continual_pretraining_starts_from_the_earlier_teacher(tiny_manifest: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    pretrain(tiny_pretrain_recipe(tiny_manifest, tmp_path / "first", "optim.total_steps=2"))
    first = tmp_path / "first" / "teacher"
    common = ("optim.total_steps=4", "train.save_every=100", f"init.source={first}")
    trainer = PretrainTrainer(tiny_pretrain_recipe(tiny_manifest, tmp_path / "straight", *common))
    model = trainer.objective.model
    with torch.random.fork_rng():  # building the reference model must not move the run's dropout stream
        earlier = load_teacher(first).model.state_dict()
    assert all(torch.equal(v, earlier[k]) for k, v in model.encoder.state_dict().items())
    assert torch.equal(model.mask_emb.detach(), load_file(first / "model.safetensors")["masked_spec_embed"])
    straight = trainer.fit()
    card = (trainer.export_teacher() / "README.md").read_text()
    assert f"| starts from | `{first}` (continual pre-training" in card
    # resuming loads the checkpoint over the starting weights: the same run as without a stop
    pretrain(tiny_pretrain_recipe(tiny_manifest, tmp_path / "resumed", *common, "train.stop_at_step=2"))
    resumed = pretrain(tiny_pretrain_recipe(tiny_manifest, tmp_path / "resumed", *common), resume=True)
    assert resumed.losses == pytest.approx(straight.losses[2:], abs=1e-6)


def test_continual_pretraining_refuses_another_architecture(tiny_manifest: Path, tmp_path: Path) -> None:
    pretrain(tiny_pretrain_recipe(tiny_manifest, tmp_path / "first", "optim.total_steps=1"))
    first = tmp_path / "first" / "teacher"
    wider = tiny_pretrain_recipe(tiny_manifest, tmp_path / "run", f"init.source={first}", "model.embed_dim=32")
    with pytest.raises(ValueError, match=r"init.source=.* \(embed_dim: 64 there, 32 here\): set those model"):
        pretrain(wider)
    missing = tiny_pretrain_recipe(tiny_manifest, tmp_path / "run2", f"init.source={tmp_path / 'nothing'}")
    with pytest.raises(FileNotFoundError, match="nothing: not a Hugging Face model folder"):
        pretrain(missing)
    assert not list((tmp_path / "run").glob("states-*.ckpt")) and not list((tmp_path / "run2").glob("states-*.ckpt"))


def test_held_out_speakers_are_excluded(tmp_path: Path) -> None:
    from robustdistiller.data import BadFileReport
    from robustdistiller.train.distributed import init_distributed
    from robustdistiller.train.loader import load_training_manifest
    from robustdistiller.train.recipe import DataSection

    for name in ("15-2-0000.wav", "16-2-0000.wav", "20-1-0000.wav", "7-1-0003.wav"):
        sf.write(tmp_path / name, 0.1 * np.random.default_rng(0).standard_normal(4000).astype(np.float32), SR)
    entries = [ManifestEntry(n, 4000) for n in ("15-2-0000.wav", "16-2-0000.wav", "20-1-0000.wav", "7-1-0003.wav")]
    path = Manifest(tmp_path, entries).write(tmp_path / "m.tsv")
    data = DataSection(manifests=[str(path)], exclude_held_out=True)
    kept = load_training_manifest(data, tmp_path, init_distributed("cpu"), BadFileReport())
    assert [e.path for e in kept.entries] == ["16-2-0000.wav", "7-1-0003.wav"]


def test_bundled_recipes_load() -> None:
    for name in ("hubert_mini", "robust_hubert_mini", "wavlm_mini"):
        recipe = load_pretrain_recipe(name, ["data.manifests=[x.tsv]"])
        assert recipe.data.exclude_held_out and recipe.targets.num_clusters == 100
    robust = load_pretrain_recipe("robust_hubert_mini", ["data.manifests=[x.tsv]"])
    assert robust.corruption.p_clean == 0.25
    # continues the shipped teacher, whose architecture its model section must state
    assert load_teacher(robust.init.source).model.config == robust.model
    wavlm = load_pretrain_recipe("wavlm_mini", ["data.manifests=[x.tsv]"])
    hubert = load_pretrain_recipe("hubert_mini", ["data.manifests=[x.tsv]"])
    assert wavlm.model.family == "wavlm" and wavlm.objective.mixing.prob > 0 and hubert.objective.mixing.prob == 0
    # otherwise the same recipe as hubert_mini, so the two teachers compare like with like
    assert (wavlm.data, wavlm.targets, wavlm.optim) == (hubert.data, hubert.targets, hubert.optim)
    assert wavlm.model.conv_layers == hubert.model.conv_layers and wavlm.model.embed_dim == hubert.model.embed_dim


def test_the_cli_explains_a_recipe_without_data(capsys: pytest.CaptureFixture[str]) -> None:
    from robustdistiller.cli import main

    assert main(["pretrain", "--config", "hubert_mini"]) == 1
    assert "no training data: set data.manifests" in capsys.readouterr().err
