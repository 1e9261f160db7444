"""``robustdistiller info``: a summary of any model ``robustdistiller.load`` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustdistiller.checkpoints.load import non_finite_weights, open_model
from robustdistiller.models.conv import format_conv_layers
from robustdistiller.models.pruning import PrunableModel
from robustdistiller.models.student import DistillerModel
from robustdistiller.models.teacher import Teacher


def describe(path: str | Path) -> dict[str, Any]:
    """Format, architecture, parameter counts, training step and recorded teacher (JSON-ready)."""
    loaded = open_model(path)
    model = loaded.model
    info: dict[str, Any] = {"path": str(path), "format": loaded.format}
    if isinstance(model, DistillerModel):
        cfg = model.config
        counts = model.parameter_counts()
        info["architecture"] = {
            "kind": "distiller student",
            "conv_layers": cfg.extractor_conv_feature_layers,
            "extractor_mode": cfg.extractor_mode,
            "encoder_layers": cfg.encoder_layers,
            "embed_dim": cfg.encoder_embed_dim,
            "attention_heads": cfg.layer_heads,
            "ffn_dims": cfg.layer_ffn_dims,
            "layer_norm_first": cfg.layer_norm_first,
            "prediction_heads": cfg.n_tasks,
            "pred_layer_id": list(cfg.pred_layer_id),
        }
        info["parameters"] = {"total": counts.total, "without_heads": counts.without_heads}
    elif isinstance(model, Teacher):
        tcfg = model.model.config
        total = sum(p.numel() for p in model.parameters())
        info["architecture"] = {
            "kind": f"{tcfg.family} encoder",
            "conv_layers": tcfg.conv_layers,
            "extractor_mode": tcfg.extractor_mode,
            "encoder_layers": tcfg.num_layers,
            "embed_dim": tcfg.embed_dim,
            "attention_heads": tcfg.head_counts,
            "ffn_dims": tcfg.ffn_dims,
            "layer_norm_first": tcfg.layer_norm_first,
        }
        info["parameters"] = {"total": total, "without_heads": total}
    elif isinstance(model, PrunableModel):
        pcfg = model.config
        total = sum(p.numel() for p in model.parameters())  # dummy_weight included, as DPHuBERT counts
        info["architecture"] = {
            "kind": f"pruned {pcfg.family} encoder (DPHuBERT)",
            "conv_layers": format_conv_layers(pcfg.conv_spec),
            "extractor_mode": pcfg.extractor_mode,
            "encoder_layers": pcfg.num_layers,
            "embed_dim": pcfg.embed_dim,
            "attention_heads": pcfg.head_counts,
            "ffn_dims": pcfg.layer_ffn_dims,
            "layer_norm_first": pcfg.layer_norm_first,
        }
        info["parameters"] = {"total": total, "without_heads": total}
    else:
        raise TypeError(f"no summary for {type(model).__name__}")  # a new format must add its branch
    checkpoint = loaded.checkpoint
    info["non_finite_weights"] = non_finite_weights(model)
    info["step"] = checkpoint.step if checkpoint is not None else None
    info["teacher"] = checkpoint.teacher if checkpoint is not None else None
    return info


def format_text(info: dict[str, Any]) -> str:
    """Human-readable rendering of ``describe``'s result."""
    arch = info["architecture"]
    params = info["parameters"]
    lines = [
        f"path:         {info['path']}",
        f"format:       {info['format']}",
        f"architecture: {arch['kind']}, {arch['encoder_layers']} layers x {arch['embed_dim']} dims, "
        f"heads {_uniform(arch['attention_heads'])}, FFN {_uniform(arch['ffn_dims'])}, "
        f"{'pre' if arch['layer_norm_first'] else 'post'}-LN",
        f"conv layers:  {arch['conv_layers']} ({arch['extractor_mode']})",
    ]
    if "prediction_heads" in arch:
        lines.append(f"heads:        {arch['prediction_heads']} predicting teacher layers {arch['pred_layer_id']}")
    lines.append(f"parameters:   {params['total']:,} total, {params['without_heads']:,} without prediction heads")
    if info["step"] is not None:
        lines.append(f"step:         {info['step']}")
    if info["teacher"] is not None:
        lines.append(f"teacher:      {info['teacher']}")
    bad = info["non_finite_weights"]
    if bad:
        lines.append(f"DAMAGED:      {len(bad)} weight tensor(s) hold NaN/inf (e.g. {', '.join(bad[:3])})")
    return "\n".join(lines)


def _uniform(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else str(values)
