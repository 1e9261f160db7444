"""Distillation recipes: one validated dataclass per YAML file in ``robustdistiller/configs/``.

``load_recipe("rd_wavlm", ["data.root=/data/LibriSpeech", "optim.lr=1e-4"])`` reads the named recipe
(or a YAML path), applies ``key=value`` overrides and validates everything, so typos and
impossible combinations fail before a teacher is downloaded or a file is read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from robustdistiller.augment import CorruptionConfig
from robustdistiller.config import ConfigError, load_config
from robustdistiller.models.enhancement import EnhancementConfig
from robustdistiller.models.student import DistillerConfig

# The 960 h of LibriSpeech used by DistilHuBERT / RobustDistiller.
LIBRISPEECH_TRAIN_SPLITS = ("train-clean-100", "train-clean-360", "train-other-500")
RECIPE_DIR = Path(__file__).resolve().parents[1] / "configs"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass
class DataSection:
    """Training audio, from one of three sources:

    - ``manifests``: manifest files (``robustdistiller prepare``), concatenated; ``root``, if set,
      replaces the root they record (data moved to another disk);
    - ``root`` alone: a LibriSpeech folder; ``splits`` are scanned once (file headers only) into
      ``train.out_dir/train_manifest.tsv``, reused afterwards;
    - ``corpus: builtin``: the small synthetic corpus, generated under ``train.out_dir/corpus``.

    Batches hold ``batch_size`` utterances, or as many as fit ``max_seconds`` of padded audio
    (``batch_size`` then caps the count); utterances longer than ``max_length`` samples are
    randomly cropped (250000 = 15.6 s, as s3prl).

    ``exclude_held_out`` drops the LibriSpeech speakers that evaluation keeps for itself
    (``data.manifest.is_held_out_speaker``; speaker from the ``speaker`` column, else from
    ``<speaker>-<chapter>-<utt>`` file names)."""

    manifests: list[str] = field(default_factory=list)
    root: str | None = None
    splits: list[str] = field(default_factory=lambda: list(LIBRISPEECH_TRAIN_SPLITS))
    corpus: Literal["none", "builtin"] = "none"
    max_length: int = 250_000
    batch_size: int | None = 24
    max_seconds: float | None = None
    num_workers: int = 4
    seed: int = 1337
    exclude_held_out: bool = False

    def validate(self) -> None:
        if self.corpus == "builtin" and (self.manifests or self.root):
            raise ConfigError("data.corpus=builtin cannot be combined with data.manifests or data.root")
        if self.corpus != "builtin" and not self.manifests and not self.root:
            raise ConfigError(
                "no training data: set data.manifests=[train.tsv,...] (see `robustdistiller prepare`), "
                "data.root=/path/to/LibriSpeech, or data.corpus=builtin"
            )
        if self.max_length < 400:
            raise ConfigError(f"max_length must be >= 400 samples (one CNN frame), got {self.max_length}")
        if self.batch_size is None and self.max_seconds is None:
            raise ConfigError("set data.batch_size or data.max_seconds")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError(f"max_seconds must be positive, got {self.max_seconds}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")


@dataclass
class TeacherSection:
    """``source``: a Hugging Face hub id, a local ``save_pretrained`` folder, or a fairseq ``.pt``."""

    source: str = "microsoft/wavlm-base-plus"

    def validate(self) -> None:
        if not self.source:
            raise ConfigError("teacher.source is empty: set teacher.source=<hub id | local folder | fairseq .pt path>")


@dataclass
class OptimSection:
    lr: float = 2e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_proportion: float = 0.07
    total_steps: int = 200_000
    grad_clip: float = 15.0
    grad_accum: int = 1
    # True: s3prl's decay grouping (only names containing "bias" skip decay).
    match_reference: bool = False

    def validate(self) -> None:
        for name in ("lr", "weight_decay", "eps", "grad_clip", "warmup_proportion"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.total_steps < 1:
            raise ConfigError(f"total_steps must be >= 1, got {self.total_steps}")
        if not 0.0 <= self.warmup_proportion < 1.0:
            raise ConfigError(f"warmup_proportion must be in [0, 1), got {self.warmup_proportion}")
        if self.grad_clip <= 0:
            raise ConfigError(f"grad_clip must be positive, got {self.grad_clip}")
        if self.grad_accum < 1:
            raise ConfigError(f"grad_accum must be >= 1, got {self.grad_accum}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must be in [0, 1), got {self.betas}")


@dataclass
class TrainSection:
    """Run control. ``precision`` fp16/bf16 autocasts the student (and head) on GPU, bf16 also on CPU.
    ``teacher_precision``: the teacher's forward on a CPU run, fp32 (default), bf16 (on bf16 units:
    AMX / AVX512-BF16, else fp32 with a log line) or auto (bf16 when its hidden states keep cosine >=
    0.99 against fp32; see ``robustdistiller.models.precision``); the targets are fp32 either way,
    and on a GPU the teacher runs in fp32. ``stop_at_step`` ends the run early with a checkpoint while
    keeping the schedule planned for ``optim.total_steps`` (for time-limited cluster jobs: resume
    later with ``--resume``). ``max_bad_steps``: abort after this many non-finite steps in a row."""

    out_dir: str = "exp/distill"
    device: str = "auto"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    teacher_precision: Literal["fp32", "bf16", "auto"] = "fp32"
    log_every: int = 50
    save_every: int = 10_000
    keep_last: int = 25
    max_bad_steps: int = 10
    seed: int = 1337
    masked_loss: bool = True
    stop_at_step: int | None = None

    def validate(self) -> None:
        if not _DEVICE.match(self.device):
            raise ConfigError(f"device {self.device!r} is not one of auto, cpu, cuda, cuda:<index>, mps")
        if not self.out_dir.strip():
            raise ConfigError("out_dir is empty: set train.out_dir=<folder for this run's checkpoints>")
        for name in ("log_every", "save_every", "keep_last", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.stop_at_step is not None and self.stop_at_step < 1:
            raise ConfigError(f"stop_at_step must be >= 1, got {self.stop_at_step}")


@dataclass
class RecipeInputs:
    """The sections every training recipe (this one, ``PruneRecipe``) starts with: the audio, how it
    is corrupted, and the teacher. Subclasses add their own sections after these."""

    data: DataSection = field(default_factory=DataSection)
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)
    teacher: TeacherSection = field(default_factory=TeacherSection)


@dataclass
class DistillRecipe(RecipeInputs):
    student: DistillerConfig = field(default_factory=DistillerConfig)
    enhancement: EnhancementConfig = field(default_factory=EnhancementConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    def validate(self) -> None:
        if self.enhancement.use_enhancement:
            expected = (
                self.student.conv_layers[-1][0] if self.enhancement.input == "cnn" else self.student.encoder_embed_dim
            )
            if self.enhancement.input_dim != expected:
                raise ConfigError(
                    f"enhancement.input_dim={self.enhancement.input_dim} but the student's "
                    f"{self.enhancement.input!r} features have {expected} dims"
                )
        if self.train.stop_at_step is not None and self.train.stop_at_step > self.optim.total_steps:
            raise ConfigError(
                f"train.stop_at_step={self.train.stop_at_step} is beyond optim.total_steps={self.optim.total_steps}"
            )


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A YAML path as given, or the bundled recipe of that name (``rd_wavlm`` or ``rd_wavlm.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = RECIPE_DIR / f"{path.stem}.yaml"
    if path.parent == Path(".") and bundled.is_file():
        return bundled
    raise ConfigError(
        f"no recipe file {str(name_or_path)!r}; give a YAML path or one of: {', '.join(available_recipes())}"
    )


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> DistillRecipe:
    return load_config(DistillRecipe, resolve_recipe(name_or_path), overrides)
