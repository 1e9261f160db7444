"""Teachers: HuBERT / wav2vec 2.0 / WavLM encoders built from the shared blocks, frozen and in eval.

The architecture is read from a Hugging Face or fairseq / unilm configuration here; the files
themselves are read and written by ``checkpoints.teachers`` (``load_teacher``, ``save_teacher``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..config import from_dict
from ..errors import UnsupportedTeacherError
from .conv import DEFAULT_CONV_LAYERS, format_conv_layers, parse_conv_layers
from .encoder import Encoder, EncoderOutput, normalize_waveforms
from .precision import as_fp32, autocast
from .spec import FAMILIES, spec_from_teacher
from .transformer import check_encoder_size

log = logging.getLogger(__name__)

Family = Literal["hubert", "wav2vec2", "wavlm"]


@dataclass
class TeacherConfig:
    """A teacher's architecture as read from Hugging Face / fairseq / unilm files (no dropout:
    teachers only run in eval); the model reads it as :func:`~robustdistiller.models.spec.spec_from_teacher`."""

    family: str = "hubert"
    conv_layers: str = DEFAULT_CONV_LAYERS
    conv_bias: bool = False
    extractor_mode: str = "default"
    embed_dim: int = 768
    num_layers: int = 12
    attention_heads: int = 12
    ffn_dim: int = 3072
    layer_heads: list[int] | None = None
    layer_ffn_dims: list[int] | None = None
    layer_norm_first: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    feature_layer_norm: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    normalize_waveform: bool = False
    """Per-utterance zero-mean / unit-variance input, as the Large models were trained."""

    def validate(self) -> None:
        if self.num_layers < 1 or self.attention_heads < 1 or self.embed_dim % self.attention_heads:
            raise ValueError(
                f"need num_layers >= 1 and embed_dim ({self.embed_dim}) divisible by heads ({self.attention_heads})"
            )
        for name in ("layer_heads", "layer_ffn_dims"):
            value = getattr(self, name)
            if value is not None and len(value) != self.num_layers:
                raise ValueError(f"{name} must list {self.num_layers} sizes, got {value}")
        names = {"layers": "num_layers", "heads": "attention_heads"}
        # bounded before the per-layer lists of the spec are built
        check_encoder_size(
            "teacher config",
            layers=self.num_layers,
            embed_dim=self.embed_dim,
            ffn_dims=self.layer_ffn_dims or [self.ffn_dim],
            heads=self.layer_heads or [self.attention_heads],
            conv_pos=self.conv_pos,
            conv_pos_groups=self.conv_pos_groups,
            names=names,
        )
        spec_from_teacher(self).validate("teacher config", names)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.attention_heads

    @property
    def head_counts(self) -> list[int]:
        """Heads per layer: ``layer_heads``, or ``attention_heads`` in every layer."""
        return list(self.layer_heads or [self.attention_heads] * self.num_layers)

    @property
    def ffn_dims(self) -> list[int]:
        """FFN units per layer: ``layer_ffn_dims``, or ``ffn_dim`` in every layer."""
        return list(self.layer_ffn_dims or [self.ffn_dim] * self.num_layers)


TeacherOutput = EncoderOutput
"""A teacher's output (the encoder's; the name is kept for callers)."""


class TeacherModel(Encoder):
    """A HuBERT / wav2vec 2.0 / WavLM :class:`Encoder` described by a :class:`TeacherConfig`."""

    def __init__(self, config: TeacherConfig, *, dropout: float = 0.0) -> None:
        """``dropout`` (residual and attention) is for pre-training (``train/pretrain.py``); a
        teacher wrapped in :class:`Teacher` always runs in eval, where it does nothing."""
        config.validate()
        super().__init__(spec_from_teacher(config, dropout=dropout))
        self.config = config


class Teacher(nn.Module):
    """Frozen, always-eval, no-grad wrapper that produces distillation targets.

    Runs in fp32 whatever autocast surrounds it, or on the CPU in bf16 when ``precision`` is "bf16"
    (``models.precision.use_precision``); its hidden states are fp32 either way.
    """

    precision = "fp32"

    def __init__(self, model: TeacherModel, source: str) -> None:
        super().__init__()
        self.model = model
        self.source = source
        self.family: str = model.config.family
        self.num_layers: int = model.config.num_layers
        self.embed_dim: int = model.config.embed_dim
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> Teacher:
        # A parent's .train() must never turn teacher dropout back on (s3prl's recipe did, by accident).
        return super().train(False)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        return self.model.frame_lengths(lengths)

    def forward(self, wavs: Tensor, lengths: Tensor | None = None) -> TeacherOutput:
        device_type = wavs.device.type
        if self.precision == "bf16" and device_type == "cpu":
            with torch.no_grad(), autocast("bf16"):
                out = self.model(wavs.float(), lengths)
            return TeacherOutput(
                as_fp32(out.hidden_states),
                out.frame_mask,
                out.last_hidden_state.float(),
                out.projected.float(),
                out.cnn_features.float(),
            )
        with torch.no_grad(), torch.autocast(device_type=device_type, enabled=False):
            return self.model(wavs.float(), lengths)

    def extract(self, wavs: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        """Hidden states (index 0 = input of layer 1, index i = output of layer i)."""
        return self.forward(wavs, lengths).hidden_states


# ---------------------------------------------------------------- Hugging Face


def teacher_config_from_hf(hf: Any) -> TeacherConfig:
    """TeacherConfig from a transformers ``HubertConfig`` / ``Wav2Vec2Config`` / ``WavLMConfig``."""
    family = getattr(hf, "model_type", None)
    if family not in FAMILIES:
        raise UnsupportedTeacherError(f"unsupported Hugging Face model_type {family!r}; supported: {FAMILIES}")
    problems = []
    if hf.hidden_act != "gelu" or hf.feat_extract_activation != "gelu":
        problems.append(f"activations {hf.hidden_act!r}/{hf.feat_extract_activation!r} (only gelu)")
    if getattr(hf, "add_adapter", False):
        problems.append("add_adapter=True")
    if getattr(hf, "conv_pos_batch_norm", False):
        problems.append("conv_pos_batch_norm=True")
    if getattr(hf, "position_embeddings_type", None) not in (None, "conv"):
        problems.append(f"position_embeddings_type={hf.position_embeddings_type!r}")
    if hf.feat_extract_norm not in ("group", "layer"):
        problems.append(f"feat_extract_norm={hf.feat_extract_norm!r}")
    if problems:
        raise UnsupportedTeacherError(f"unsupported {family} configuration: {', '.join(problems)}")
    mode = "default" if hf.feat_extract_norm == "group" else "layer_norm"
    data = {
        "family": family,
        "conv_layers": format_conv_layers(list(zip(hf.conv_dim, hf.conv_kernel, hf.conv_stride))),
        "conv_bias": hf.conv_bias,
        "extractor_mode": mode,
        "embed_dim": hf.hidden_size,
        "num_layers": hf.num_hidden_layers,
        "attention_heads": hf.num_attention_heads,
        "ffn_dim": hf.intermediate_size,
        "layer_norm_first": hf.do_stable_layer_norm,
        "conv_pos": hf.num_conv_pos_embeddings,
        "conv_pos_groups": hf.num_conv_pos_embedding_groups,
        "feature_layer_norm": getattr(hf, "feat_proj_layer_norm", True),
        # HF keeps waveform normalisation in the preprocessor, whose flag is unreliable (base models
        # say do_normalize=True but were trained without it); the "layer" extractor marks the Large
        # models that were trained on normalised audio.
        "normalize_waveform": mode == "layer_norm",
    }
    if family == "wavlm":
        data.update(num_buckets=hf.num_buckets, max_distance=hf.max_bucket_distance)
    return from_dict(TeacherConfig, data)


# The families with a transformers base-model layout we write (HubertModel, WavLMModel); wav2vec 2.0
# teachers are read, never written.
WRITABLE_FAMILIES = ("hubert", "wavlm")


def hf_config_from_teacher(config: TeacherConfig) -> Any:
    """The transformers ``HubertConfig`` or ``WavLMConfig`` of a HuBERT- or WavLM-family ``config``
    (inverse of :func:`teacher_config_from_hf`): uniform layers only, as neither ``HubertModel`` nor
    ``WavLMModel`` has per-layer sizes."""
    from transformers import HubertConfig, WavLMConfig

    if config.family not in WRITABLE_FAMILIES:
        raise UnsupportedTeacherError(
            f"only families {WRITABLE_FAMILIES} have a HubertModel / WavLMModel layout, got {config.family!r}"
        )
    if len(set(config.head_counts)) != 1 or len(set(config.ffn_dims)) != 1:
        raise UnsupportedTeacherError(
            f"HubertModel / WavLMModel need the same heads / FFN size in every layer; got {config.head_counts} / "
            f"{config.ffn_dims}"
        )
    channels, kernels, strides = zip(*parse_conv_layers(config.conv_layers), strict=True)
    common: dict[str, Any] = {
        "hidden_size": config.embed_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.attention_heads,
        "intermediate_size": config.ffn_dim,
        "hidden_act": "gelu",
        "feat_extract_activation": "gelu",
        "feat_extract_norm": "group" if config.extractor_mode == "default" else "layer",
        "conv_dim": list(channels),
        "conv_kernel": list(kernels),
        "conv_stride": list(strides),
        "conv_bias": config.conv_bias,
        "num_conv_pos_embeddings": config.conv_pos,
        "num_conv_pos_embedding_groups": config.conv_pos_groups,
        "do_stable_layer_norm": config.layer_norm_first,
        "layer_norm_eps": 1e-5,
    }
    if config.family == "wavlm":
        # WavLMModel always has the projection's layer norm (HubertConfig's feat_proj_layer_norm)
        if not config.feature_layer_norm:
            raise UnsupportedTeacherError("WavLMModel always normalises the CNN features: feature_layer_norm=False")
        return WavLMConfig(
            architectures=["WavLMModel"],
            num_buckets=config.num_buckets,
            max_bucket_distance=config.max_distance,
            **common,
        )
    return HubertConfig(architectures=["HubertModel"], feat_proj_layer_norm=config.feature_layer_norm, **common)


BUNDLED_DIR = Path(__file__).resolve().parents[1] / "assets" / "teachers"


def bundled_teacher(name: str = "hubert_mini") -> Path:
    """The Hugging Face folder of a teacher shipped inside the package (``assets/teachers/<name>``),
    usable as ``teacher.source`` or with ``load_teacher`` / ``HubertModel.from_pretrained``; its
    ``README.md`` model card tells how it was pre-trained."""
    path = BUNDLED_DIR / name
    if not (path / "config.json").is_file():
        found = sorted(p.name for p in BUNDLED_DIR.iterdir() if p.is_dir()) if BUNDLED_DIR.is_dir() else []
        raise FileNotFoundError(f"no bundled teacher {name!r} in {BUNDLED_DIR}; bundled: {', '.join(found) or 'none'}")
    return path


def teacher_path(source: str | Path) -> Path:
    """``source`` as a local path, where ``robustdistiller/assets/teachers/<name>`` that does not exist
    from the working directory is the bundled teacher ``<name>``: the bundled recipes name it by its
    path in a clone, which must also work from another folder or a wheel install."""
    path = Path(source)
    if not path.exists() and path.parts[:-1] == BUNDLED_DIR.parts[-3:]:
        return bundled_teacher(path.name)
    return path


# ---------------------------------------------------------------- fairseq / unilm


# fairseq's model-config defaults (Wav2Vec2Config / HubertConfig / unilm WavLMConfig) for absent fields.
_FAIRSEQ_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default",
    "conv_feature_layers": DEFAULT_CONV_LAYERS,
    "conv_bias": False,
    "encoder_embed_dim": 768,
    "encoder_layers": 12,
    "encoder_attention_heads": 12,
    "encoder_ffn_embed_dim": 3072,
    "layer_norm_first": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "activation_fn": "gelu",
}
# unilm's WavLMConfig defaults; released files state these, incomplete ones fall back to them.
_UNILM_WAVLM_DEFAULTS: dict[str, Any] = {"num_buckets": 320, "max_distance": 1280}


def teacher_config_from_fairseq(cfg: dict[str, Any], task: dict[str, Any], state: dict[str, Tensor]) -> TeacherConfig:
    """TeacherConfig from a fairseq / unilm model configuration (+ its weights, to spot WavLM)."""
    name = str(cfg.get("_name") or cfg.get("arch") or "")
    if "w2v_args" in cfg or "w2v_path" in cfg or any(k.startswith("w2v_encoder.") for k in state):
        raise UnsupportedTeacherError("fine-tuned (CTC) fairseq checkpoints are not supported; use the pretrained one")
    has_bias = any(k.endswith("relative_attention_bias.weight") for k in state)
    is_wavlm = has_bias or "relative_position_embedding" in cfg
    if is_wavlm:
        family = "wavlm"
        # An absent flag is read off the weights (unilm's own default is False for both).
        has_gate = any(".grep_linear." in k for k in state)
        if not cfg.get("relative_position_embedding", has_bias) or not cfg.get("gru_rel_pos", has_gate):
            raise UnsupportedTeacherError("WavLM without relative position embedding / gated rel-pos is not supported")
    elif name.startswith("hubert"):
        family = "hubert"
    elif name.startswith("wav2vec2"):
        family = "wav2vec2"
    else:
        raise UnsupportedTeacherError(
            f"unsupported fairseq architecture {name!r}: expected hubert, wav2vec2 or a unilm WavLM checkpoint"
        )
    defaults = {**_FAIRSEQ_DEFAULTS, **(_UNILM_WAVLM_DEFAULTS if family == "wavlm" else {})}
    c = {**defaults, **{k: v for k, v in cfg.items() if v is not None}}
    if c["activation_fn"] != "gelu":
        raise UnsupportedTeacherError(f"unsupported activation_fn {c['activation_fn']!r} (only gelu)")
    if int(c.get("pos_conv_depth", 1)) != 1 or c.get("conv_pos_batch_norm", False):
        raise UnsupportedTeacherError("only the single weight-normalised positional conv is supported")
    data = {
        "family": family,
        "conv_layers": str(c["conv_feature_layers"]),
        "conv_bias": c["conv_bias"],
        "extractor_mode": c["extractor_mode"],
        "embed_dim": c["encoder_embed_dim"],
        "num_layers": c["encoder_layers"],
        "attention_heads": c["encoder_attention_heads"],
        "ffn_dim": c["encoder_ffn_embed_dim"],
        "layer_norm_first": c["layer_norm_first"],
        "conv_pos": c["conv_pos"],
        "conv_pos_groups": c["conv_pos_groups"],
        "feature_layer_norm": "layer_norm.weight" in state,
        "normalize_waveform": bool(task.get("normalize", False)),
    }
    if family == "wavlm":
        data.update(num_buckets=c["num_buckets"], max_distance=c["max_distance"])
    return from_dict(TeacherConfig, data)


__all__ = [
    "Teacher",
    "TeacherConfig",
    "TeacherModel",
    "TeacherOutput",
    "UnsupportedTeacherError",
    "WRITABLE_FAMILIES",
    "bundled_teacher",
    "hf_config_from_teacher",
    "normalize_waveforms",
    "teacher_config_from_fairseq",
    "teacher_config_from_hf",
    "teacher_path",
]
