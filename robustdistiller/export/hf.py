"""Export a student as a Hugging Face ``HubertModel`` directory (the DistilHuBERT port's layout).

The prediction heads are dropped (HF has no place for them) and ``feat_proj_layer_norm=False``
because the student has no LayerNorm on its CNN features. Layer outputs 1..L equal the student's;
HF's ``hidden_states[0]`` is after the positional conv + LayerNorm while ours is before them.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError
from transformers import HubertConfig, HubertModel

from robustdistiller.atomic import atomic_dir, commit
from robustdistiller.errors import UnsupportedTeacherError
from robustdistiller.models.convert import ours_to_hf
from robustdistiller.models.student import DistillerConfig, DistillerModel


def hubert_config(config: DistillerConfig) -> HubertConfig:
    """The ``HubertConfig`` describing the student's encoder (heads excluded)."""
    if len(set(config.layer_heads)) != 1 or len(set(config.layer_ffn_dims)) != 1:
        raise UnsupportedTeacherError(
            "Hugging Face HubertModel needs the same head count and FFN size in every layer; "
            f"got heads {config.layer_heads}, FFN sizes {config.layer_ffn_dims}"
        )
    channels, kernels, strides = zip(*config.conv_layers, strict=True)
    return HubertConfig(
        architectures=["HubertModel"],
        hidden_size=config.encoder_embed_dim,
        num_hidden_layers=config.encoder_layers,
        num_attention_heads=config.layer_heads[0],
        intermediate_size=config.layer_ffn_dims[0],
        hidden_act=config.activation_fn,
        hidden_dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout,
        feat_proj_layer_norm=False,
        feat_proj_dropout=0.0,  # s3prl's distiller has no dropout after the projection
        layerdrop=config.encoder_layerdrop,
        layer_norm_eps=1e-5,
        feat_extract_norm="group" if config.extractor_mode == "default" else "layer",
        conv_dim=list(channels),
        conv_kernel=list(kernels),
        conv_stride=list(strides),
        conv_bias=False,
        num_conv_pos_embeddings=config.conv_pos,
        num_conv_pos_embedding_groups=config.conv_pos_groups,
        do_stable_layer_norm=config.layer_norm_first,
        # No SpecAugment: the student has no mask embedding to export (HF would create a random one).
        apply_spec_augment=False,
        mask_time_prob=0.0,
        mask_feature_prob=0.0,
    )


def export_hf(model: DistillerModel, out_dir: str | Path) -> Path:
    """Write ``model`` (heads dropped) with ``save_pretrained``; verified to reload without missing keys."""
    out_dir = Path(out_dir)
    hf_model = HubertModel(hubert_config(model.config))
    state = ours_to_hf(model.state_dict())
    if model.post_extract_proj is None:
        # HF always has the projection; the student skips it when CNN channels == embed dim.
        dim = model.config.encoder_embed_dim
        state["feature_projection.projection.weight"] = torch.eye(dim)
        state["feature_projection.projection.bias"] = torch.zeros(dim)
    hf_model.load_state_dict(state, strict=True)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(errno.EEXIST, "exists and is not a folder (--format hf writes a folder)", str(out_dir))
    # Saved and verified in a temp folder first, so a failure (full disk) leaves no half export.
    if not out_dir.exists():
        with atomic_dir(out_dir) as staged:
            _save_verified(hf_model, staged, out_dir)
        return out_dir
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-{os.getpid()}-") as staged:
        _save_verified(hf_model, Path(staged), out_dir)
        for path in sorted(Path(staged).iterdir()):  # replace the previous export file by file
            commit(path, out_dir / path.name)
    return out_dir


def _save_verified(hf_model: HubertModel, folder: Path, out_dir: Path) -> None:
    """Save into the staging ``folder`` and check it reloads; errors name the destination ``out_dir``."""
    try:
        hf_model.save_pretrained(folder)
    except SafetensorError as exc:  # how safetensors reports a failed write (full disk, size limit)
        raise OSError(errno.EIO, f"could not write the model ({exc})", str(out_dir)) from None
    # output_loading_info=True makes from_pretrained return (model, info); its annotation says model only
    _, info = cast(tuple[HubertModel, dict[str, Any]], HubertModel.from_pretrained(folder, output_loading_info=True))
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise RuntimeError(f"exported Hugging Face model does not reload cleanly: {problems}")
