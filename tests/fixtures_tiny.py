"""Tiny models, teachers and audio shared by the test folders (CNN 32 channels, 2 layers of 64 dims, 4 heads).

A plain module, not a conftest: the rootdir ``tests/conftest.py`` puts ``tests/`` on sys.path, so every
test folder can ``import fixtures_tiny`` (a subprocess driver adds ``tests/`` to its own path). Two
modules both named ``conftest`` would clash if imported by name. The pytest fixtures defined here
are re-exported by the folder conftests that use them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from robustdistiller.data import Manifest, ManifestEntry
from robustdistiller.models.pruning import PrunableConfig
from robustdistiller.models.student import DistillerConfig, DistillerModel

SR = 16000
TINY_CONV = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"
TINY_CONV_LAYERS = [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2
"""``TINY_CONV`` in ``PrunableConfig.conv_layers`` form."""

# ------------------------------------------------------------------ students (s3prl field names)
TINY_STUDENT: dict[str, object] = {
    "extractor_conv_feature_layers": TINY_CONV,
    "encoder_layers": 2,
    "encoder_embed_dim": 64,
    "encoder_ffn_embed_dim": 128,
    "encoder_attention_heads": 4,
    "final_dim": 64,
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "n_tasks": 3,
    "pred_layer_id": [4, 8, 12],
}


def tiny_student_config(**overrides: object) -> DistillerConfig:
    """``TINY_STUDENT`` with ``overrides``, read as s3prl reads a ``Config["distiller"]`` section."""
    return DistillerConfig.from_s3prl({**TINY_STUDENT, **overrides})


def tiny_student(seed: int = 0, *, perturb_norms: bool = False, **overrides: object) -> DistillerModel:
    """A tiny random student in eval mode. ``perturb_norms``: random (not 1/0) norm parameters, so a
    lost or swapped LayerNorm shows up in outputs."""
    torch.manual_seed(seed)
    model = DistillerModel(tiny_student_config(**overrides)).eval()
    if perturb_norms:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "norm" in name or name.startswith("feature_extractor.conv_layers.0.2."):
                    param.add_(0.1 * torch.randn_like(param))
    return model


def layer_norm_student() -> DistillerModel:
    """The tiny student (seed 0) with a layer-norm CNN and one prediction head: a layer-norm CNN keeps
    no statistics over the whole utterance, so chunked inference can match full-context inference."""
    return tiny_student(extractor_mode="layer_norm", n_tasks=1, pred_layer_id=[2])


# ------------------------------------------------------------------ prunable models
def tiny_prunable_config(family: str = "hubert", **overrides: object) -> PrunableConfig:
    """CNN 32 channels, 2 layers of 64 dims, 4 heads of 16, FFN 128; no dropout."""
    base = dict(
        family=family,
        conv_layers=TINY_CONV_LAYERS,
        embed_dim=64,
        head_dim=16,
        total_heads=4,
        layer_heads=[[0, 1, 2, 3]] * 2,
        layer_ffn_dims=[128, 128],
        conv_pos=16,
        conv_pos_groups=4,
        num_buckets=16,
        max_distance=40,
        dropout=0.0,
        attention_dropout=0.0,
        projection_dropout=0.0,
    )
    base.update(overrides)
    config = PrunableConfig(**base)  # type: ignore[arg-type]
    config.validate()
    return config


def perturb(module: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    """Move trainable parameters (gate logits excepted) off their init (LayerNorms are 1/0 otherwise)
    so comparisons see real values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.requires_grad and "log_alpha" not in name:
                p.add_(scale * torch.randn(p.shape, generator=gen))


# ------------------------------------------------------------------ Hugging Face teachers
HF_TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    layerdrop=0.0,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    mask_time_prob=0.0,
)


def hf_model(family: str, pre_ln: bool = False, seed: int = 0, **config: object) -> torch.nn.Module:
    """A random, perturbed, eval-mode transformers HuBERT / wav2vec 2.0 / WavLM of ``HF_TINY`` size.
    ``pre_ln``: the Large layout (stable layer norm, layer-norm CNN with conv bias)."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model, WavLMConfig, WavLMModel

    classes = {
        "hubert": (HubertConfig, HubertModel),
        "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
        "wavlm": (WavLMConfig, WavLMModel),
    }
    cfg_cls, model_cls = classes[family]
    kwargs = dict(HF_TINY)
    kwargs.update(do_stable_layer_norm=pre_ln, feat_extract_norm="layer" if pre_ln else "group", conv_bias=pre_ln)
    if family == "wavlm":
        kwargs.update(num_buckets=16, max_bucket_distance=40)
    kwargs.update(config)
    torch.manual_seed(seed)
    model = model_cls(cfg_cls(**kwargs)).eval()
    perturb(model, seed)
    return model


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``teacher_dir(family)``: a tiny random 3-layer teacher saved with save_pretrained (made once)."""
    made: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family not in made:
            path = tmp_path_factory.mktemp("teacher") / family
            hf_model(family, seed=0, num_hidden_layers=3).save_pretrained(path)
            made[family] = path
        return made[family]

    return build


# ------------------------------------------------------------------ audio
@pytest.fixture
def wave_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two utterances (0.5 s and 0.33 s) zero-padded into one batch."""
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([8000, 5300])
    wavs = torch.randn(2, 8000, generator=gen)
    wavs[1, 5300:] = 0.0
    return wavs, lengths


def write_harmonic_manifest(root: Path, count: int, seconds: tuple[float, float], seed: int = 0) -> Path:
    """``count`` harmonic 'utterances' (random length in ``seconds``, a little noise) as wav files in
    ``root`` and their manifest ``root/train.tsv``."""
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(count):
        n = int(SR * rng.uniform(*seconds))
        t = np.arange(n) / SR
        f0 = rng.uniform(100, 250)
        wav = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * np.hanning(n)
        wav = (0.3 * wav / np.abs(wav).max() + 0.01 * rng.standard_normal(n)).astype(np.float32)
        sf.write(root / f"utt{i}.wav", wav, SR)
        entries.append(ManifestEntry(f"utt{i}.wav", n))
    return Manifest(root, entries).write(root / "train.tsv")


def speechlike(seconds: float, rate: int = SR, seed: int = 0) -> np.ndarray:
    """Noise with a slow amplitude envelope (syllable-rate bursts and pauses), float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * np.arange(n) / rate + rng.uniform(0, 6)), 0, None)
    return (0.2 * envelope * rng.standard_normal(n)).astype(np.float32)


# ------------------------------------------------------------------ the method's contract
class ContractRecorder:
    """Records, per micro-batch of a running trainer, the clean batch, the corrupted one and what
    the teacher, the student and the enhancement head received (hooks; nothing else changes).

    ``log`` keys: ``clean``, ``noisy``, ``teacher``, ``student`` (input waveforms), ``student_out``
    (the student's output), ``head`` (the head's ``(features, noisy, lengths)`` arguments).
    """

    def __init__(self, trainer: Any, teacher: torch.nn.Module) -> None:
        self.log: dict[str, list[Any]] = {
            k: [] for k in ("clean", "noisy", "teacher", "student", "student_out", "head")
        }
        real_next, real_apply = trainer.next_batch, trainer.policy.apply

        def next_batch(data: Any) -> Any:
            item = real_next(data)
            self.log["clean"].append(item.batch.wavs.clone())
            return item

        def apply(*args: Any, **kwargs: Any) -> Any:
            result = real_apply(*args, **kwargs)
            self.log["noisy"].append(result.noisy.detach().clone())
            return result

        trainer.next_batch, trainer.policy.apply = next_batch, apply
        teacher.register_forward_pre_hook(lambda _m, args: self.log["teacher"].append(args[0].clone()))
        trainer.modules["student"].register_forward_pre_hook(
            lambda _m, args: self.log["student"].append(args[0].clone())
        )
        trainer.modules["student"].register_forward_hook(lambda _m, _a, out: self.log["student_out"].append(out))
        if "head" in trainer.modules:
            trainer.modules["head"].register_forward_pre_hook(lambda _m, args: self.log["head"].append(args))

    def check_inputs(self, steps: int) -> None:
        """The teacher got the clean batch, the student the corrupted one, which differs in every row."""
        log = self.log
        assert len(log["clean"]) == len(log["teacher"]) == len(log["student"]) == steps
        for clean, noisy, teacher_in, student_in in zip(log["clean"], log["noisy"], log["teacher"], log["student"]):
            assert torch.equal(teacher_in, clean)
            assert torch.equal(student_in, noisy)
            differs = (student_in - clean).abs().amax(dim=1)
            assert bool((differs > 1e-3).all()), differs
