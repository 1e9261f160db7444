"""Content digests of tensors and module states, the keys of caches that must never serve stale values.

Two equal digests mean equal names, dtypes, shapes and bytes: the evaluation's feature cache keys
its files by the model's state and the exact audio (:mod:`robustdistiller.evaluate.probes`), and the
distillation's target memo its entries by the teacher's state and the exact clean batch
(:mod:`robustdistiller.train.targets`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor, nn


def update_with_tensor(h: Any, t: Tensor) -> None:
    """Feed ``t``'s dtype, shape and bytes (on CPU, contiguous) to the hash object ``h``."""
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())


def state_fingerprint(module: nn.Module) -> str:
    """Content hash of a module's state dict (names, dtypes, shapes and values)."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        update_with_tensor(h, tensor)
    return h.hexdigest()
