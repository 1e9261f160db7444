"""DPHuBERT / DPWavLM checkpoint format (reference-formats.md C.7): read and write.

A file is a ``torch.save`` of a plain dict::

    {"state_dict": torchaudio-style weights (feature_extractor.conv_layers.0.conv.weight, ...,
                   feature_extractor.dummy_weight, encoder.transformer.layers.3.attention.q_proj...),
     "config": kwargs of DPHuBERT's ``wav2vec2_model`` (per-layer shapes; HuBERT form with
               ``encoder_num_heads``, WavLM form with ``encoder_remaining_heads``),
     "distill_linear_projs": state dict of the distillation Linears (not needed for inference)}

Written files hold only tensors and plain containers (``torch.load(weights_only=True)`` reads them)
and their config holds exactly the keys of DPHuBERT's own files, so DPHuBERT's own builder accepts them too.
Only ungated (final, pruned) checkpoints are supported: a stage-1 file still carrying
``hard_concrete`` gates must go through DPHuBERT's ``prune.py`` (or ours) first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from robustdistiller.atomic import atomic_path
from robustdistiller.checkpoints.heads import store_head
from robustdistiller.checkpoints.teachers import load_strict
from robustdistiller.errors import CheckpointFormatError
from robustdistiller.models.convert import KeyTable, map_key
from robustdistiller.models.enhancement import EnhancementHead
from robustdistiller.models.pruning import PrunableConfig, PrunableModel

_PRUNE_FLAGS = (
    "extractor_prune_conv_channels",
    "encoder_prune_attention_heads",
    "encoder_prune_attention_layer",
    "encoder_prune_feed_forward_intermediate",
    "encoder_prune_feed_forward_layer",
)
_COMMON_KEYS = frozenset(
    {
        "extractor_mode",
        "extractor_conv_layer_config",
        "extractor_conv_bias",
        "encoder_embed_dim",
        "encoder_projection_dropout",
        "encoder_pos_conv_kernel",
        "encoder_pos_conv_groups",
        "encoder_num_layers",
        "encoder_use_attention",
        "encoder_use_feed_forward",
        "encoder_attention_dropout",
        "encoder_ff_interm_features",
        "encoder_ff_interm_dropout",
        "encoder_dropout",
        "encoder_layer_norm_first",
        "encoder_layer_drop",
        "aux_num_out",
        "normalize_waveform",
        *_PRUNE_FLAGS,
    }
)
_HUBERT_KEYS = frozenset({"encoder_num_heads", "encoder_head_dim"})
_WAVLM_KEYS = frozenset(
    {"encoder_total_num_heads", "encoder_remaining_heads", "encoder_num_buckets", "encoder_max_distance"}
)

# (our pattern, DPHuBERT replacement), for :func:`map_key`.
_OURS_TO_DP: KeyTable = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (
        r"feature_extractor\.conv_layers\.(\d+)\.2(?:\.1)?\.(weight|bias)",
        r"feature_extractor.conv_layers.\1.layer_norm.\2",
    ),
    (r"dummy_weight", r"feature_extractor.dummy_weight"),
    (r"layer_norm\.(weight|bias)", r"encoder.feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"encoder.feature_projection.projection.\1"),
    (r"encoder\.pos_conv\.0\.(weight_g|weight_v|bias)", r"encoder.transformer.pos_conv_embed.conv.\1"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.transformer.layer_norm.\1"),
    (
        r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)",
        r"encoder.transformer.layers.\1.attention.\2_proj.\3",
    ),
    (
        r"encoder\.layers\.(\d+)\.self_attn\.grep_linear\.(weight|bias)",
        r"encoder.transformer.layers.\1.attention.gru_rel_pos_linear.\2",
    ),
    (r"encoder\.layers\.(\d+)\.self_attn\.grep_a", r"encoder.transformer.layers.\1.attention.gru_rel_pos_const"),
    (
        r"encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight",
        r"encoder.transformer.layers.\1.attention.rel_attn_embed.weight",
    ),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.transformer.layers.\1.layer_norm.\2"),
    (
        r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)",
        r"encoder.transformer.layers.\1.feed_forward.intermediate_dense.\2",
    ),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"encoder.transformer.layers.\1.feed_forward.output_dense.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.transformer.layers.\1.final_layer_norm.\2"),
]
_DP_TO_OURS: KeyTable = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", r"feature_extractor.conv_layers.\1.0.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", r"@convnorm \1 \2"),
    (r"feature_extractor\.dummy_weight", r"dummy_weight"),
    (r"encoder\.feature_projection\.layer_norm\.(weight|bias)", r"layer_norm.\1"),
    (r"encoder\.feature_projection\.projection\.(weight|bias)", r"post_extract_proj.\1"),
    (r"encoder\.transformer\.pos_conv_embed\.conv\.(weight_g|weight_v|bias)", r"encoder.pos_conv.0.\1"),
    (
        r"encoder\.transformer\.pos_conv_embed\.conv\.parametrizations\.weight\.original0",
        r"encoder.pos_conv.0.weight_g",
    ),
    (
        r"encoder\.transformer\.pos_conv_embed\.conv\.parametrizations\.weight\.original1",
        r"encoder.pos_conv.0.weight_v",
    ),
    (r"encoder\.transformer\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (
        r"encoder\.transformer\.layers\.(\d+)\.attention\.(q|k|v|out)_proj\.(weight|bias)",
        r"encoder.layers.\1.self_attn.\2_proj.\3",
    ),
    (
        r"encoder\.transformer\.layers\.(\d+)\.attention\.gru_rel_pos_linear\.(weight|bias)",
        r"encoder.layers.\1.self_attn.grep_linear.\2",
    ),
    (r"encoder\.transformer\.layers\.(\d+)\.attention\.gru_rel_pos_const", r"encoder.layers.\1.self_attn.grep_a"),
    (
        r"encoder\.transformer\.layers\.(\d+)\.attention\.rel_attn_embed\.weight",
        r"encoder.layers.\1.self_attn.relative_attention_bias.weight",
    ),
    (r"encoder\.transformer\.layers\.(\d+)\.layer_norm\.(weight|bias)", r"encoder.layers.\1.self_attn_layer_norm.\2"),
    (
        r"encoder\.transformer\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(weight|bias)",
        r"encoder.layers.\1.fc1.\2",
    ),
    (r"encoder\.transformer\.layers\.(\d+)\.feed_forward\.output_dense\.(weight|bias)", r"encoder.layers.\1.fc2.\2"),
    (r"encoder\.transformer\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
]


@dataclass
class DPHuBERTCheckpoint:
    config: PrunableConfig
    state_dict: dict[str, Tensor]
    """Our key names."""
    distill_linear_projs: dict[str, Tensor]
    raw: dict[str, Any]


def is_dphubert_checkpoint(raw: Any) -> bool:
    return isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict) and isinstance(raw.get("config"), dict)


def ours_to_dphubert(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our (fairseq-style) names -> DPHuBERT / torchaudio names; gates and unknown keys raise."""
    out = {}
    for key, value in state.items():
        new = map_key(key, _OURS_TO_DP, group_norm=True)  # no "@convnorm" this way
        if new is None:
            raise KeyError(f"no DPHuBERT name for {key!r} (gated models must be pruned before saving)")
        out[new] = value
    return out


def dphubert_to_ours(state: Mapping[str, Tensor], *, group_norm: bool) -> dict[str, Tensor]:
    out, unknown = {}, []
    for key, value in state.items():
        new = map_key(key, _DP_TO_OURS, group_norm=group_norm)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        gated = any("hard_concrete" in k for k in unknown)
        hint = " (a gated stage-1 checkpoint: prune it first)" if gated else ""
        raise KeyError(f"unrecognised DPHuBERT keys{hint}: {', '.join(sorted(unknown)[:8])}")
    return out


# ------------------------------------------------------------------ config


def config_to_dphubert(cfg: PrunableConfig) -> dict[str, Any]:
    """The ``wav2vec2_model`` kwargs of DPHuBERT for ``cfg`` (an ungated model)."""
    if cfg.pruning_units:
        raise CheckpointFormatError("a gated model cannot be written in the DPHuBERT format: prune it first")
    if not cfg.feature_layer_norm:
        raise CheckpointFormatError("DPHuBERT's feature projection always has a LayerNorm; this model has none")
    layers = cfg.num_layers
    out: dict[str, Any] = {
        "extractor_mode": "group_norm" if cfg.extractor_mode == "default" else "layer_norm",
        "extractor_conv_layer_config": [tuple(c) for c in cfg.conv_spec],
        "extractor_conv_bias": cfg.conv_bias,
        "encoder_embed_dim": cfg.embed_dim,
        "encoder_projection_dropout": cfg.projection_dropout,
        "encoder_pos_conv_kernel": cfg.conv_pos,
        "encoder_pos_conv_groups": cfg.conv_pos_groups,
        "encoder_num_layers": layers,
        "encoder_use_attention": [bool(h) for h in cfg.layer_heads],
        "encoder_use_feed_forward": [f > 0 for f in cfg.layer_ffn_dims],
        "encoder_attention_dropout": cfg.attention_dropout,
        "encoder_ff_interm_features": list(cfg.layer_ffn_dims),
        "encoder_ff_interm_dropout": cfg.activation_dropout,
        "encoder_dropout": cfg.dropout,
        "encoder_layer_norm_first": cfg.layer_norm_first,
        "encoder_layer_drop": 0.0,
        "aux_num_out": None,
        "normalize_waveform": cfg.normalize_waveform,
        **{flag: False for flag in _PRUNE_FLAGS},
    }
    if cfg.family == "wavlm":
        out.update(
            encoder_total_num_heads=[cfg.total_heads] * layers,
            encoder_remaining_heads=[list(h) for h in cfg.layer_heads],
            encoder_num_buckets=cfg.num_buckets,
            encoder_max_distance=cfg.max_distance,
        )
    else:
        out.update(encoder_num_heads=list(cfg.head_counts), encoder_head_dim=cfg.head_dim)
    return out


def config_from_dphubert(raw: Mapping[str, Any]) -> PrunableConfig:
    """``PrunableConfig`` from a DPHuBERT config dict (HuBERT or WavLM form), strictly."""
    wavlm = "encoder_remaining_heads" in raw
    allowed = _COMMON_KEYS | (_WAVLM_KEYS if wavlm else _HUBERT_KEYS)
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise CheckpointFormatError(f"unknown DPHuBERT config keys: {unknown}")
    gated = [flag for flag in _PRUNE_FLAGS if raw.get(flag)]
    if gated:
        raise CheckpointFormatError(f"a gated (stage-1) DPHuBERT checkpoint ({', '.join(gated)}): prune it first")
    if raw.get("aux_num_out") not in (None, 0):
        raise CheckpointFormatError("DPHuBERT checkpoints with an auxiliary (CTC) head are not supported")
    try:
        layers = int(raw["encoder_num_layers"])
        use_attention = [bool(u) for u in raw["encoder_use_attention"]]
        use_ffn = [bool(u) for u in raw["encoder_use_feed_forward"]]
        ffn = [int(f) if u else 0 for f, u in zip(raw["encoder_ff_interm_features"], use_ffn)]
        embed = int(raw["encoder_embed_dim"])
        if wavlm:
            totals = {int(t) for t in raw["encoder_total_num_heads"]}
            if len(totals) != 1:
                raise CheckpointFormatError(f"per-layer encoder_total_num_heads differ: {sorted(totals)}")
            total = totals.pop()
            heads = [[int(h) for h in hs] if u else [] for hs, u in zip(raw["encoder_remaining_heads"], use_attention)]
            head_dim = embed // total
        else:
            counts = [int(n) if u else 0 for n, u in zip(raw["encoder_num_heads"], use_attention)]
            head_dim = int(raw["encoder_head_dim"])
            total = max(max(counts), 1)
            heads = [list(range(n)) for n in counts]
        lengths = {len(use_attention), len(use_ffn), len(ffn), len(heads)}
        if lengths != {layers}:
            raise CheckpointFormatError(f"per-layer lists do not all have encoder_num_layers={layers} entries")
        data = PrunableConfig(
            family="wavlm" if wavlm else "hubert",
            conv_layers=[[int(v) for v in c] for c in raw["extractor_conv_layer_config"]],
            conv_bias=bool(raw["extractor_conv_bias"]),
            extractor_mode="default" if raw["extractor_mode"] == "group_norm" else str(raw["extractor_mode"]),
            embed_dim=embed,
            head_dim=head_dim,
            total_heads=total,
            layer_heads=heads,
            layer_ffn_dims=ffn,
            layer_norm_first=bool(raw["encoder_layer_norm_first"]),
            conv_pos=int(raw["encoder_pos_conv_kernel"]),
            conv_pos_groups=int(raw["encoder_pos_conv_groups"]),
            num_buckets=int(raw.get("encoder_num_buckets", 320)),
            max_distance=int(raw.get("encoder_max_distance", 800)),
            normalize_waveform=bool(raw["normalize_waveform"]),
            dropout=float(raw["encoder_dropout"]),
            attention_dropout=float(raw["encoder_attention_dropout"]),
            activation_dropout=float(raw["encoder_ff_interm_dropout"]),
            projection_dropout=float(raw["encoder_projection_dropout"]),
        )
    except KeyError as exc:
        raise CheckpointFormatError(f"DPHuBERT config lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointFormatError(f"invalid DPHuBERT config: {exc}") from None
    data.validate()
    return data


# ------------------------------------------------------------------ files


def parse_dphubert_checkpoint(raw: Any, source: str = "<checkpoint>") -> DPHuBERTCheckpoint:
    if not is_dphubert_checkpoint(raw):
        raise CheckpointFormatError(f"{source}: not a DPHuBERT checkpoint (needs 'state_dict' and 'config' dicts)")
    if not all(isinstance(v, Tensor) for v in raw["state_dict"].values()):
        raise CheckpointFormatError(f"{source}: 'state_dict' holds non-tensor values")
    try:
        config = config_from_dphubert(raw["config"])
        state = dphubert_to_ours(raw["state_dict"], group_norm=config.extractor_mode == "default")
    except (ValueError, KeyError) as exc:
        raise CheckpointFormatError(f"{source}: {exc.args[0]}") from None
    projs = raw.get("distill_linear_projs") or {}
    return DPHuBERTCheckpoint(config, state, dict(projs), raw)


def model_from_dphubert(checkpoint: DPHuBERTCheckpoint, source: str = "<checkpoint>") -> PrunableModel:
    """Build the model and load its weights strictly (eval mode)."""
    model = PrunableModel(checkpoint.config)
    # Keys and shapes are checked before copying; the message uses the file's (torchaudio) names.
    load_strict(
        model,
        checkpoint.state_dict,
        f"{source} (DPHuBERT)",
        display=lambda key: map_key(key, _OURS_TO_DP, group_norm=True) or key,
    )
    return model.eval()


def save_dphubert_checkpoint(
    path: str | Path,
    model: PrunableModel,
    *,
    distill_linear_projs: Mapping[str, Tensor] | None = None,
    extra: Mapping[str, Any] | None = None,
    head: EnhancementHead | None = None,
) -> Path:
    """Write ``model`` (ungated) in DPHuBERT's format, atomically; ``extra`` adds top-level keys
    (plain values only, see :func:`atomic_torch_save`); ``head`` (an enhancement head) is stored
    with its config by :func:`robustdistiller.checkpoints.heads.store_head`."""
    clashes = sorted(set(extra or {}) & {"state_dict", "config", "distill_linear_projs"})
    if clashes:
        raise CheckpointFormatError(f"extra keys {clashes} are reserved for the DPHuBERT format")
    config = config_to_dphubert(model.config)  # first: refuses gated models with a clear message
    state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "state_dict": ours_to_dphubert(state),
        "config": config,
        "distill_linear_projs": {k: v.detach().float().cpu().clone() for k, v in (distill_linear_projs or {}).items()},
        **(extra or {}),
    }
    if head is not None:
        store_head(payload, "dphubert", head)
    return atomic_torch_save(path, payload)


def atomic_torch_save(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """``torch.save`` to a temp file, check it reads back with ``weights_only=True``, then
    move it onto ``path`` (a reader never sees a half-written or unsafe file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(dict(payload), fh)
        try:
            torch.load(tmp, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means the payload is not plain
            raise CheckpointFormatError(f"{path}: payload is not loadable with weights_only=True: {exc}") from None
    return path


def read_dphubert_checkpoint(path: str | Path) -> DPHuBERTCheckpoint:
    from robustdistiller.checkpoints.safe_pickle import safe_load

    return parse_dphubert_checkpoint(safe_load(path), str(path))
