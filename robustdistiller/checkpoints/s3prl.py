"""The s3prl "distiller" checkpoint format, which is also this project's own format.

A file is a ``torch.save`` of a plain dict (reference-formats.md A.4)::

    {"Distiller": student state_dict (fp32), "Config": {"distiller": {...}, "teacher": {...},
     "task": {...}, "audio": {...}}, "Step": int, ...trainer resume state under its own keys}

Files we write hold only tensors and plain containers, so both s3prl's stock ``distiller_local``
and ``torch.load(weights_only=True)`` read them. Released s3prl / RobustDistiller files also carry
an ``argparse.Namespace`` and pickled schedule objects; they are read through ``safe_load``.
"""

from __future__ import annotations

import collections
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustdistiller.atomic import atomic_write
from robustdistiller.checkpoints.heads import store_head
from robustdistiller.checkpoints.safe_pickle import safe_load
from robustdistiller.errors import CheckpointFormatError
from robustdistiller.models.enhancement import EnhancementHead
from robustdistiller.models.student import DistillerConfig, DistillerModel

# Keys this module owns; trainer state goes under other top-level keys.
RESERVED_KEYS = ("Distiller", "Config", "Step")

# s3prl's pretrain recipe writes these sections next to "distiller"; `target_level: None` in its
# YAML is the *string* "None", kept as such for byte-level familiarity with released files.
_DEFAULT_SECTIONS: dict[str, dict[str, Any]] = {
    "task": {"sequence_length": 250000},
    "audio": {"target_level": "None"},
}

_PLAIN_SCALARS = (str, int, float, bool, type(None))


@dataclass
class S3PRLCheckpoint:
    """A parsed distiller checkpoint: what is needed to rebuild the student, plus everything else."""

    config: DistillerConfig
    state_dict: dict[str, torch.Tensor]
    step: int
    raw: dict[str, Any]

    @property
    def teacher(self) -> str | None:
        """The teacher source recorded under ``Config["teacher"]["model"]``, if any."""
        teacher = self.raw["Config"].get("teacher")
        model = teacher.get("model") if isinstance(teacher, dict) else None
        return str(model) if model not in (None, "") else None


def save_s3prl_checkpoint(
    path: str | Path,
    model: DistillerModel,
    *,
    step: int = 0,
    extra_config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    head: EnhancementHead | None = None,
) -> Path:
    """Write ``model`` as an s3prl distiller checkpoint, atomically (:func:`robustdistiller.atomic.atomic_write`).

    ``extra_config`` is merged (recursively) into ``Config``, e.g. ``{"teacher": {"model": src}}``;
    ``extra`` adds top-level keys (optimizer / trainer state). Every value must be a tensor or a
    plain container/scalar so the file stays loadable with ``weights_only=True``. ``head`` (an
    enhancement head) is stored with its config by :func:`robustdistiller.checkpoints.heads.store_head`.
    """
    path = Path(path)
    config: dict[str, Any] = {
        "distiller": model.config.to_s3prl(),
        "teacher": {"model": None, "n_layers": max(model.config.pred_layer_id)},
        **copy.deepcopy(_DEFAULT_SECTIONS),
    }
    _merge(config, extra_config or {})
    clashes = sorted(set(extra or {}) & set(RESERVED_KEYS))
    if clashes:
        raise CheckpointFormatError(f"extra keys {clashes} are reserved for the checkpoint format")
    state = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone()
        for k, v in model.state_dict().items()
    }
    payload = {"Distiller": state, "Config": config, "Step": int(step), **(extra or {})}
    if head is not None:
        store_head(payload, "s3prl", head)
    _check_plain(payload, "checkpoint")

    return atomic_write(path, lambda fh: torch.save(payload, fh))


def is_s3prl_checkpoint(raw: Any) -> bool:
    return isinstance(raw, dict) and "Distiller" in raw and "Config" in raw


def parse_s3prl_checkpoint(raw: Any, source: str = "<checkpoint>") -> S3PRLCheckpoint:
    """Validate an already-unpickled checkpoint dict and build its ``DistillerConfig``."""
    if not is_s3prl_checkpoint(raw):
        keys = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointFormatError(
            f"{source}: not an s3prl distiller checkpoint (needs 'Distiller' and 'Config'; has {keys})"
        )
    section = raw["Config"].get("distiller") if isinstance(raw["Config"], dict) else None
    if not isinstance(section, dict):
        raise CheckpointFormatError(f"{source}: Config['distiller'] is missing, cannot rebuild the student")
    state = raw["Distiller"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointFormatError(f"{source}: 'Distiller' is not a state dict of tensors")
    try:
        config = DistillerConfig.from_s3prl(section)
    except ValueError as exc:
        raise CheckpointFormatError(f"{source}: invalid Config['distiller']: {exc}") from None
    return S3PRLCheckpoint(config=config, state_dict=dict(state), step=int(raw.get("Step", 0) or 0), raw=raw)


def read_s3prl_checkpoint(path: str | Path) -> S3PRLCheckpoint:
    """Read one of our checkpoints or a released s3prl / RobustDistiller one (safely unpickled)."""
    return parse_s3prl_checkpoint(safe_load(path), str(path))


def _merge(base: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def _check_plain(value: Any, where: str) -> None:
    """Refuse values ``weights_only`` loaders (and s3prl) could not read back."""
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN_SCALARS:
        return
    if type(value) in (dict, collections.OrderedDict):
        for key, item in value.items():
            if type(key) not in _PLAIN_SCALARS:
                raise CheckpointFormatError(f"{where}: key {key!r} is not a plain str/int")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise CheckpointFormatError(
        f"{where}: {type(value).__name__} is not a plain value (tensor, number, str, list, dict)"
    )
