"""Pre-training recipes (``hubert_mini``, ``robust_hubert_mini``, ``wavlm_mini``): HuBERT-style masked prediction.

Same data, corruption, optimiser and run-control sections as a distillation recipe, plus:

- ``model``: the architecture being pre-trained (a :class:`TeacherConfig`, family ``hubert`` or
  ``wavlm``: WavLM's gated relative position bias);
- ``init``: an earlier pre-trained model to continue from (continual pre-training), or none;
- ``targets``: where frame labels come from (k-means over MFCC, or over a layer of an earlier
  model: HuBERT's second iteration) and how the k-means is fitted;
- ``objective``: span masking, the logit temperature, the loss weights and WavLM's utterance mixing;
- ``export``: the Hugging Face teacher folder written at the end (``train.out_dir/teacher``).

Corruption (``corruption.p_clean < 1``) gives the robust variant: the model hears corrupted audio
while the labels come from the clean audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from robustdistiller.augment import CorruptionConfig
from robustdistiller.augment.overlap import UtteranceMixing
from robustdistiller.config import load_config
from robustdistiller.models.teacher import WRITABLE_FAMILIES, TeacherConfig
from robustdistiller.train.recipe import DataSection, OptimSection, TrainSection, resolve_recipe


@dataclass
class TargetsSection:
    """Frame labels. ``kind: mfcc`` (iteration 1): k-means over 39-dim MFCC frames. ``kind: layer``
    (iteration 2): k-means over hidden state ``layer`` of the model at ``source`` (a Hugging Face
    folder, e.g. the iteration-1 ``train.out_dir/teacher``). The k-means (scikit-learn
    ``MiniBatchKMeans``) is fitted on at most ``max_frames`` frames of the training audio, seeded
    by ``seed``, and saved as ``train.out_dir/clusters.npz`` (reused on resume)."""

    kind: Literal["mfcc", "layer"] = "mfcc"
    source: str = ""
    layer: int = 0
    num_clusters: int = 100
    max_frames: int = 250_000
    kmeans_batch_size: int = 10_000
    kmeans_max_iter: int = 100
    seed: int = 0

    def validate(self) -> None:
        if self.kind == "layer" and not self.source:
            raise ValueError("targets.kind=layer needs targets.source=<folder of the earlier model>")
        if self.kind == "mfcc" and self.source:
            raise ValueError("targets.source is only used with targets.kind=layer; remove it or set kind=layer")
        if self.num_clusters < 2:
            raise ValueError(f"num_clusters must be >= 2, got {self.num_clusters}")
        if self.max_frames < self.num_clusters:
            raise ValueError(f"max_frames ({self.max_frames}) must be >= num_clusters ({self.num_clusters})")
        if self.layer < 0:
            raise ValueError(f"layer must be >= 0, got {self.layer}")


@dataclass
class InitSection:
    """Where the weights start."""

    source: str = ""
    """Empty: random initialisation. Otherwise a Hugging Face teacher folder written by
    ``robustdistiller pretrain`` (e.g. ``robustdistiller/assets/teachers/hubert_mini``) whose encoder
    and mask embedding the model starts from: continual pre-training, the way HuBERT-MGR (the
    paper's Robust HuBERT teacher) continues HuBERT Base on distorted speech. Its architecture must
    equal ``model`` (checked before the first step). The final projection and the cluster
    embeddings exist only during pre-training, are not in the folder, and start fresh."""


@dataclass
class ObjectiveSection:
    """HuBERT's masked prediction: spans of ``mask_length`` frames start with probability
    ``mask_prob / mask_length`` (about half the frames masked at 0.8 / 10); logits are cosine
    similarities over ``logit_temp``; ``unmasked_weight`` weighs the loss on unmasked frames."""

    mask_prob: float = 0.8
    mask_length: int = 10
    logit_temp: float = 0.1
    final_dim: int = 256
    unmasked_weight: float = 0.0
    dropout: float = 0.1
    seed: int = 0
    # WavLM's denoising pre-training: a share of the utterances hear a segment of another one
    # (augment/overlap.py); the labels stay those of the primary utterance.
    mixing: UtteranceMixing = field(default_factory=UtteranceMixing)

    def validate(self) -> None:
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {self.mask_prob}")
        if self.mask_length < 1:
            raise ValueError(f"mask_length must be >= 1, got {self.mask_length}")
        if self.logit_temp <= 0:
            raise ValueError(f"logit_temp must be positive, got {self.logit_temp}")
        if self.final_dim < 1:
            raise ValueError(f"final_dim must be >= 1, got {self.final_dim}")
        if self.unmasked_weight < 0:
            raise ValueError(f"unmasked_weight must be >= 0, got {self.unmasked_weight}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass
class ExportSection:
    """The teacher folder written when training finishes: ``dtype`` float16 halves its size
    (loading upcasts to float32); ``name`` titles its model card; ``data_credit`` (the training
    audio's source, licence and attribution) is printed on the card as given."""

    dtype: Literal["float32", "float16"] = "float32"
    name: str = "hubert_mini"
    data_credit: str = ""


@dataclass
class PretrainRecipe:
    data: DataSection = field(default_factory=DataSection)
    corruption: CorruptionConfig = field(default_factory=lambda: CorruptionConfig(p_clean=1.0))
    model: TeacherConfig = field(default_factory=TeacherConfig)
    init: InitSection = field(default_factory=InitSection)
    targets: TargetsSection = field(default_factory=TargetsSection)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=lambda: TrainSection(out_dir="exp/pretrain"))
    export: ExportSection = field(default_factory=ExportSection)

    def validate(self) -> None:
        if self.model.family not in WRITABLE_FAMILIES:  # the teacher folder written at the end
            raise ValueError(
                f"model.family={self.model.family!r}: pre-training builds {' and '.join(WRITABLE_FAMILIES)} models only"
            )
        if self.train.stop_at_step is not None and self.train.stop_at_step > self.optim.total_steps:
            raise ValueError(
                f"train.stop_at_step={self.train.stop_at_step} is beyond optim.total_steps={self.optim.total_steps}"
            )


def load_pretrain_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> PretrainRecipe:
    """A bundled pre-training recipe (``hubert_mini``) or YAML path, with ``key=value`` overrides."""
    return load_config(PretrainRecipe, resolve_recipe(name_or_path), overrides)
