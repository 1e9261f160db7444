"""The enhancement head inside a checkpoint: its config and its weights, stored one way in every format.

A head is saved as two entries, its ``EnhancementConfig`` (a plain dict) and its state dict, so a
reader rebuilds it without the recipe. Where the two entries sit is fixed per format, keeping the
keys files already carry:

- s3prl / ours: weights under ``"EnhancementHead"``, config under ``Config["enhancement_head"]``
  (s3prl's own loader ignores both);
- DPHuBERT (``prune``'s ``pruned.pth`` / ``final.pth``): weights under ``"enhancement_head"``, config
  under ``"enhancement_config"`` (DPHuBERT's loader reads only ``state_dict`` and ``config``).

Writers call :func:`store_head`, readers :func:`read_head` (or :func:`head_weights` to continue
training a head that already exists).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from robustdistiller.config import from_dict, to_dict
from robustdistiller.errors import CheckpointFormatError
from robustdistiller.models.enhancement import EnhancementConfig, EnhancementHead

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadLayout:
    """Where a format keeps the head: the key path of its weights and of its config."""

    weights: tuple[str, ...]
    config: tuple[str, ...]

    def describe(self, path: tuple[str, ...]) -> str:
        return path[0] + "".join(f"[{k!r}]" for k in path[1:])


HEAD_LAYOUTS: dict[str, HeadLayout] = {
    "s3prl": HeadLayout(weights=("EnhancementHead",), config=("Config", "enhancement_head")),
    "dphubert": HeadLayout(weights=("enhancement_head",), config=("enhancement_config",)),
}


@dataclass
class SavedHead:
    """A head read back from a checkpoint, in eval mode."""

    head: EnhancementHead
    input: str
    """The features it reads: ``"cnn"`` (CNN output) or ``"last"`` (last encoder layer)."""


def _layout(fmt: str) -> HeadLayout:
    if fmt not in HEAD_LAYOUTS:
        raise CheckpointFormatError(
            f"format {fmt!r} stores no enhancement head; formats with one: {sorted(HEAD_LAYOUTS)}"
        )
    return HEAD_LAYOUTS[fmt]


def _get(raw: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(raw, dict):
            return None
        raw = raw.get(key)
    return raw


def store_head(payload: dict[str, Any], fmt: str, head: EnhancementHead) -> None:
    """Put ``head``'s config and fp32 CPU weights into ``payload`` (in place) where ``fmt`` keeps them.

    Args:
        payload: the dict about to be written (for s3prl, with its ``"Config"`` section).
        fmt: ``"s3prl"`` or ``"dphubert"``.
        head: the trained head; its ``config`` is stored as a plain dict.
    """
    layout = _layout(fmt)
    entries = (
        (layout.weights, {k: v.detach().float().cpu().clone() for k, v in head.state_dict().items()}),
        (layout.config, to_dict(head.config)),
    )
    for path, value in entries:
        target = payload
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value


def head_weights(raw: Any, fmt: str) -> dict[str, Tensor] | None:
    """The head's state dict stored in the unpickled file ``raw``; None when it has no head."""
    state = _get(raw, _layout(fmt).weights)
    return state if isinstance(state, dict) else None


def read_head(raw: Any, fmt: str, source: str) -> SavedHead | None:
    """Rebuild the head a training run saved in ``raw`` (weights loaded strictly, eval mode).

    Args:
        raw: the unpickled file.
        fmt: its format, ``"s3prl"`` or ``"dphubert"``; other formats hold no head (None).
        source: the path, for messages.
    Returns:
        The head and the features it reads, or None when the file has no head, or has weights but
        no config (files written before heads kept their config: logged, never guessed).
    Raises:
        CheckpointFormatError: the config is invalid or the weights do not fit it.
    """
    if fmt not in HEAD_LAYOUTS:
        return None
    layout = HEAD_LAYOUTS[fmt]
    state, section = head_weights(raw, fmt), _get(raw, layout.config)
    if state is None:
        return None
    if not isinstance(section, dict):
        log.warning(
            "%s: has %s weights but no %s (written before heads kept their config); head ignored",
            source,
            layout.describe(layout.weights),
            layout.describe(layout.config),
        )
        return None
    try:
        head = EnhancementHead(from_dict(EnhancementConfig, section, layout.describe(layout.config)))
        head.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())  # torch's message spans lines
        raise CheckpointFormatError(f"{source}: enhancement head does not match its config: {detail}") from None
    return SavedHead(head.eval(), head.config.input)
