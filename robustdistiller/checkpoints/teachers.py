"""Teacher sources: Hugging Face folders and hub ids, official fairseq / unilm ``.pt`` files.

``load_teacher(source)`` reads a Hugging Face directory or hub id, or an official fairseq / unilm
``.pt`` checkpoint (HuBERT, Robust HuBERT, wav2vec 2.0, WavLM) without fairseq installed, and
returns the frozen ``models.teacher.Teacher``; ``save_teacher`` writes a teacher as an HF
``HubertModel`` or ``WavLMModel`` folder. The architecture translation (``teacher_config_from_hf`` /
``teacher_config_from_fairseq``) lives with the model in ``models/teacher.py``; this module reads
and writes the files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustdistiller.atomic import atomic_dir
from robustdistiller.checkpoints.safe_pickle import safe_load, stand_in
from robustdistiller.errors import UnsupportedTeacherError
from robustdistiller.models.convert import fairseq_to_ours, hf_to_ours, ours_to_hf
from robustdistiller.models.teacher import (
    BUNDLED_DIR,
    Teacher,
    TeacherModel,
    hf_config_from_teacher,
    teacher_config_from_fairseq,
    teacher_config_from_hf,
    teacher_path,
)

# File names of checkpoints (never hub ids).
CHECKPOINT_SUFFIXES = (".pt", ".ckpt", ".pth")


def load_teacher(source: str | Path) -> Teacher:
    """A frozen teacher from a Hugging Face directory / hub id or a fairseq / unilm ``.pt`` file
    (``robustdistiller/assets/teachers/<name>``: the bundled one, from any folder)."""
    path = teacher_path(source)
    if path.is_dir():
        return Teacher(_from_hf(str(path), path), str(source))
    if path.is_file():
        return teacher_from_fairseq(safe_load(path, extra_allowed=fairseq_allowed()), str(source))
    if looks_like_hub_id(str(source)):
        return Teacher(_from_hf(str(source), None), str(source))
    raise FileNotFoundError(f"teacher source not found: {source} (expected a directory, a .pt file or a hub id)")


def looks_like_hub_id(source: str) -> bool:
    """``owner/name`` without a checkpoint suffix: a Hugging Face hub id rather than a local path."""
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.endswith(CHECKPOINT_SUFFIXES)


# ---------------------------------------------------------------- Hugging Face


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


def load_pretrained(folder: str | Path) -> tuple[TeacherModel, Tensor | None]:
    """A Hugging Face teacher folder's encoder (float32, trainable) and its learned mask embedding
    (``masked_spec_embed``, None where the file has none): what continual pre-training starts from.

    Raises:
        FileNotFoundError: ``folder`` is not a folder with a ``config.json``.
        UnsupportedTeacherError: its weights do not match its config.
    """
    path = teacher_path(folder)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder}: not a Hugging Face model folder (no config.json); give the teacher folder "
            f"`robustdistiller pretrain` wrote (train.out_dir/teacher) or a bundled one (in {BUNDLED_DIR})"
        )
    weights = _hf_weights(str(path), path)
    mask = weights.get("masked_spec_embed")
    return _from_hf(str(path), path, weights), None if mask is None else mask.float()


def _from_hf(name: str, local: Path | None, weights: dict[str, Tensor] | None = None) -> TeacherModel:
    from transformers import AutoConfig

    config = teacher_config_from_hf(AutoConfig.from_pretrained(name))
    model = TeacherModel(config)
    # The tensors are read and mapped here rather than through from_pretrained so that a missing
    # tensor (e.g. a pos-conv stored under the other weight-norm naming) is an error, never random.
    weights = _hf_weights(name, local) if weights is None else weights
    state = hf_to_ours(weights, group_norm=config.extractor_mode == "default")
    load_strict(model, state, name)
    return model


def save_teacher(
    model: TeacherModel,
    out_dir: str | Path,
    *,
    mask_emb: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    add_files: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``model`` as a Hugging Face ``HubertModel`` or ``WavLMModel`` folder (``save_pretrained``)
    at ``out_dir``, which must not exist yet (written in a temp folder, then renamed).

    Args:
        model: a HuBERT- or WavLM-family encoder.
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
    from transformers import AutoModel

    hf_model = AutoModel.from_config(hf_config_from_teacher(model.config))
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
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
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


def fairseq_allowed() -> dict[str, Callable[..., Any]]:
    """``safe_load``'s extra allow-list for fairseq / unilm files: inert stand-ins only."""
    return {name: stand_in(name) for name in _FAIRSEQ_OPAQUE_GLOBALS}


def fairseq_flavour(ckpt: Any) -> str | None:
    """``"fairseq"`` (hydra ``cfg.model`` or argparse ``args``), ``"unilm"`` (flat ``cfg``, WavLM)
    or None when the unpickled ``ckpt`` is neither."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        return None
    raw = ckpt.get("cfg")
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        return "fairseq"
    if isinstance(raw, dict) and "encoder_layers" in raw:
        return "unilm"
    return "fairseq" if ckpt.get("args") is not None else None


def read_fairseq_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Tensor]]:
    """(model cfg, task cfg, state dict) of a fairseq (``cfg.model`` / legacy ``args``) or unilm
    (flat ``cfg``) checkpoint, loaded without executing arbitrary pickles."""
    return parse_fairseq_checkpoint(safe_load(path, extra_allowed=fairseq_allowed()), path)


def parse_fairseq_checkpoint(ckpt: Any, source: str | Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Tensor]]:
    """:func:`read_fairseq_checkpoint` on an already-unpickled file."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise UnsupportedTeacherError(f"{source}: not a fairseq/unilm checkpoint (no 'model' state dict)")
    flavour = fairseq_flavour(ckpt)
    if flavour is None:
        raise UnsupportedTeacherError(f"{source}: no model configuration found under 'cfg' or 'args'")
    raw = ckpt.get("cfg")
    if flavour == "unilm":
        assert isinstance(raw, dict)  # fairseq_flavour says "unilm" only for a dict cfg
        cfg, task = raw, {"normalize": raw.get("normalize", False)}
    elif isinstance(raw, dict) and isinstance(raw.get("model"), dict):  # fairseq (hydra)
        cfg, task = raw["model"], raw.get("task") or {}
    else:  # fairseq (argparse era)
        cfg = dict(vars(ckpt["args"]))
        task = cfg
    return dict(cfg), dict(task), ckpt["model"]


def teacher_from_fairseq(ckpt: Any, source: str) -> Teacher:
    """A frozen teacher from an already-unpickled fairseq / unilm checkpoint (see :func:`load_teacher`)."""
    cfg, task, state = parse_fairseq_checkpoint(ckpt, source)
    model = TeacherModel(teacher_config_from_fairseq(cfg, task, state))
    load_strict(model, fairseq_to_ours(state), source)
    return Teacher(model, source)
