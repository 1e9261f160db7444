"""Teachers: HuBERT / wav2vec 2.0 / WavLM encoders built from the shared blocks, frozen and in eval.

``load_teacher(source)`` reads a Hugging Face directory or hub id, or an official fairseq / unilm
``.pt`` checkpoint (HuBERT, Robust HuBERT, wav2vec 2.0, WavLM) without fairseq installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..config import from_dict
from .conv import DEFAULT_CONV_LAYERS, format_conv_layers, parse_conv_layers
from .convert import fairseq_to_ours, hf_to_ours, ours_to_hf
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
        check_encoder_size("teacher config", layers=self.num_layers, embed_dim=self.embed_dim,
                           ffn_dims=self.layer_ffn_dims or [self.ffn_dim],
                           heads=self.layer_heads or [self.attention_heads], conv_pos=self.conv_pos,
                           conv_pos_groups=self.conv_pos_groups, names=names)
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
            return TeacherOutput(as_fp32(out.hidden_states), out.frame_mask, out.last_hidden_state.float(),
                                 out.projected.float(), out.cnn_features.float())
        with torch.no_grad(), torch.autocast(device_type=device_type, enabled=False):
            return self.model(wavs.float(), lengths)

    def extract(self, wavs: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        """Hidden states (index 0 = input of layer 1, index i = output of layer i)."""
        return self.forward(wavs, lengths).hidden_states


class UnsupportedTeacherError(ValueError):
    """The source is not a HuBERT / wav2vec 2.0 / WavLM model this code can rebuild."""


def load_teacher(source: str | Path) -> Teacher:
    """A frozen teacher from a Hugging Face directory / hub id or a fairseq / unilm ``.pt`` file."""
    path = Path(source)
    if path.is_dir():
        model = _from_hf(str(path), path)
    elif path.is_file():
        model = _from_fairseq(path)
    elif _looks_like_hub_id(str(source)):
        model = _from_hf(str(source), None)
    else:
        raise FileNotFoundError(f"teacher source not found: {source} (expected a directory, a .pt file or a hub id)")
    return Teacher(model, str(source))


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.endswith((".pt", ".ckpt", ".pth"))


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


def _hf_weights(name: str, local: Path | None) -> dict[str, Tensor]:
    candidates = ("model.safetensors", "pytorch_model.bin")
    if local is not None:
        files = [local / c for c in candidates if (local / c).is_file()]
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        files = []
        for c in candidates:
            try:
                files.append(Path(hf_hub_download(name, c)))
                break
            except EntryNotFoundError:
                continue
    if not files:
        raise FileNotFoundError(f"{name}: no model.safetensors or pytorch_model.bin found")
    weights = files[0]
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(weights))
    return torch.load(weights, map_location="cpu", weights_only=True)


def _from_hf(name: str, local: Path | None) -> TeacherModel:
    from transformers import AutoConfig

    config = teacher_config_from_hf(AutoConfig.from_pretrained(name))
    model = TeacherModel(config)
    # The tensors are read and mapped here rather than through from_pretrained so that a missing
    # tensor (e.g. a pos-conv stored under the other weight-norm naming) is an error, never random.
    state = hf_to_ours(_hf_weights(name, local), group_norm=config.extractor_mode == "default")
    load_strict(model, state, name)
    return model


def hubert_config_from_teacher(config: TeacherConfig) -> Any:
    """The transformers ``HubertConfig`` of a HuBERT-family ``config`` (inverse of
    :func:`teacher_config_from_hf`): uniform layers only, as ``HubertModel`` has no per-layer sizes."""
    from transformers import HubertConfig

    if config.family != "hubert":
        raise UnsupportedTeacherError(f"only family 'hubert' has a HubertModel layout, got {config.family!r}")
    if len(set(config.head_counts)) != 1 or len(set(config.ffn_dims)) != 1:
        raise UnsupportedTeacherError(
            f"HubertModel needs the same heads / FFN size in every layer; got {config.head_counts} / {config.ffn_dims}"
        )
    channels, kernels, strides = zip(*parse_conv_layers(config.conv_layers), strict=True)
    return HubertConfig(
        architectures=["HubertModel"],
        hidden_size=config.embed_dim,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.attention_heads,
        intermediate_size=config.ffn_dim,
        hidden_act="gelu",
        feat_extract_activation="gelu",
        feat_extract_norm="group" if config.extractor_mode == "default" else "layer",
        feat_proj_layer_norm=config.feature_layer_norm,
        conv_dim=list(channels),
        conv_kernel=list(kernels),
        conv_stride=list(strides),
        conv_bias=config.conv_bias,
        num_conv_pos_embeddings=config.conv_pos,
        num_conv_pos_embedding_groups=config.conv_pos_groups,
        do_stable_layer_norm=config.layer_norm_first,
        layer_norm_eps=1e-5,
    )


def save_teacher(model: TeacherModel, out_dir: str | Path, *, mask_emb: Tensor | None = None,
                 dtype: torch.dtype = torch.float32, add_files: Callable[[Path], None] | None = None) -> Path:
    """Write ``model`` as a Hugging Face ``HubertModel`` folder (``save_pretrained``) at ``out_dir``,
    which must not exist yet (written in a temp folder, then renamed).

    Args:
        model: a HuBERT-family encoder.
        out_dir: the folder to create.
        mask_emb: (D,) learned mask embedding, kept as HF's ``masked_spec_embed`` (SpecAugment in
            fine-tuning); a random one is written when None. :func:`load_teacher` ignores it.
        dtype: weight dtype on disk; ``torch.float16`` halves the size, and :func:`load_teacher`
            upcasts to fp32 on load.
        add_files: writes further files (model card, cluster model) into the folder before it
            appears under its final name.

    Returns:
        ``out_dir``, after checking that ``load_teacher`` reads it back without missing keys.
    """
    from transformers import HubertModel

    from ..atomic import atomic_dir

    hf_model = HubertModel(hubert_config_from_teacher(model.config))
    state = ours_to_hf(model.state_dict(), skip_prefixes=())
    if model.post_extract_proj is None:  # HF always has the projection: identity when channels == dim
        dim = model.config.embed_dim
        state["feature_projection.projection.weight"] = torch.eye(dim)
        state["feature_projection.projection.bias"] = torch.zeros(dim)
    state["masked_spec_embed"] = mask_emb.detach().cpu() if mask_emb is not None else hf_model.masked_spec_embed
    hf_model.load_state_dict(state, strict=True)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        hf_model.to(dtype).save_pretrained(tmp)
        load_teacher(tmp)  # fails here, before the rename, if the folder does not read back
        if add_files is not None:
            add_files(tmp)
    return out_dir


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


def load_strict(
    model: nn.Module, state: dict[str, Tensor], source: str, display: Callable[[str], str] | None = None
) -> None:
    """``load_state_dict(strict=True)`` with an error that names the source, the keys and the shapes.

    Args:
        model: the model built from the file's config (may live on the meta device: then only
            names and shapes are checked).
        state: the file's weights under the model's key names.
        source: the file or hub id, for the message.
        display: maps a model key to the name the file uses (DPHuBERT's torchaudio names), so the
            message names what the user will find in the file; identity by default.
    Raises:
        UnsupportedTeacherError: a key is missing, unexpected, or has another shape.
    """
    show = display or (lambda key: key)
    expected = model.state_dict()
    missing = sorted(show(k) for k in set(expected) - set(state))
    unexpected = sorted(show(k) for k in set(state) - set(expected))
    shapes = sorted(
        f"{show(k)}: file {tuple(v.shape)}, config {tuple(expected[k].shape)}"
        for k, v in state.items() if k in expected and v.shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        raise UnsupportedTeacherError(
            f"{source}: weights do not match the architecture read from its config "
            f"(missing: {_first(missing)}; unexpected: {_first(unexpected)}; wrong shape: {_first(shapes)})"
        )
    model.load_state_dict(state, strict=True)


def _first(items: list[str], n: int = 8) -> str:
    return f"{items[:n]}{'...' if len(items) > n else ''}"


# ---------------------------------------------------------------- fairseq / unilm

# Objects that fairseq checkpoints pickle beside the weights (task dictionaries, numpy scalars and
# arrays in training metadata such as ``extra_state``). They are rebuilt as inert stand-ins that
# keep their pickled data (an array's shape, dtype and bytes) and are never used; numpy is pickled
# as ``numpy.core`` (1.x) or ``numpy._core`` (2.x).
_FAIRSEQ_OPAQUE_GLOBALS = (
    "fairseq.data.dictionary.Dictionary",
    *(f"numpy.{core}.multiarray.{name}" for core in ("core", "_core") for name in ("scalar", "_reconstruct")),
    "numpy.ndarray",
    "numpy.dtype",
)

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


def read_fairseq_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Tensor]]:
    """(model cfg, task cfg, state dict) of a fairseq (``cfg.model`` / legacy ``args``) or unilm
    (flat ``cfg``) checkpoint, loaded without executing arbitrary pickles."""
    from ..checkpoints.safe_pickle import safe_load, stand_in

    ckpt = safe_load(path, extra_allowed={name: stand_in(name) for name in _FAIRSEQ_OPAQUE_GLOBALS})
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise UnsupportedTeacherError(f"{path}: not a fairseq/unilm checkpoint (no 'model' state dict)")
    cfg, task = None, {}
    raw = ckpt.get("cfg")
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):  # fairseq (hydra)
        cfg, task = raw["model"], raw.get("task") or {}
    elif isinstance(raw, dict) and "encoder_layers" in raw:  # unilm WavLM
        cfg = raw
        task = {"normalize": raw.get("normalize", False)}
    elif ckpt.get("args") is not None:  # fairseq (argparse era)
        cfg = dict(vars(ckpt["args"]))
        task = cfg
    if cfg is None:
        raise UnsupportedTeacherError(f"{path}: no model configuration found under 'cfg' or 'args'")
    return dict(cfg), dict(task), ckpt["model"]


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


def _from_fairseq(path: Path) -> TeacherModel:
    cfg, task, state = read_fairseq_checkpoint(path)
    config = teacher_config_from_fairseq(cfg, task, state)
    model = TeacherModel(config)
    load_strict(model, fairseq_to_ours(state), str(path))
    return model


__all__ = [
    "Teacher",
    "TeacherConfig",
    "TeacherModel",
    "TeacherOutput",
    "UnsupportedTeacherError",
    "bundled_teacher",
    "hubert_config_from_teacher",
    "load_teacher",
    "normalize_waveforms",
    "save_teacher",
    "teacher_config_from_fairseq",
    "teacher_config_from_hf",
]
