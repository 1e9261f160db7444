"""SUPERB-style probes on a frozen upstream: cached features, probe training and scoring.

An *upstream* is any object with ``extract(wavs [B, L], lengths [B]) -> list[Tensor[B, T, D]]`` and,
optionally, ``frame_lengths(lengths [B]) -> Tensor[B]``. Its hidden states are extracted once per
utterance set and kept per utterance as ``[num_layers, T, D]`` float16 (valid frames only), optionally
cached on disk under a content hash of (model state, condition, audio). Probes then train on those
tensors only, so a whole condition sweep costs one upstream pass per condition.

Labels are integers: class ids for ``task="utterance"``; token ids ``1..num_classes-1`` for
``task="ctc"`` (0 is the CTC blank). What differs between the two (head, loss, decoding, metric) is
the task's strategy in :mod:`robustdistiller.evaluate.probe_tasks`; the heads are in
:mod:`robustdistiller.evaluate.heads`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from robustdistiller.atomic import atomic_write, stale_temps
from robustdistiller.config import from_dict
from robustdistiller.digest import state_fingerprint, update_with_tensor
from robustdistiller.errors import DataError
from robustdistiller.evaluate.probe_tasks import Labels, ProbeTask, probe_task
from robustdistiller.models.conv import DEFAULT_CONV_LAYERS, conv_output_lengths, parse_conv_layers

log = logging.getLogger(__name__)

# Frame grid of upstreams that do not define ``frame_lengths``: the wav2vec2 / HuBERT feature
# encoder (400-sample receptive field, 320-sample hop, so 16000 samples -> 49 frames).
_DEFAULT_CNN = parse_conv_layers(DEFAULT_CONV_LAYERS)

# A feature-cache entry's file name: the 128-bit feature_cache_key in hex.
_CACHE_ENTRY = re.compile(r"^[0-9a-f]{32}\.pt$")


class Upstream(Protocol):
    def extract(self, wavs: Tensor, lengths: Tensor) -> list[Tensor]: ...


def upstream_frame_lengths(upstream: Upstream, lengths: Tensor) -> Tensor:
    """The upstream's own frame count when it defines one, else the wav2vec2 CNN formula."""
    own: Callable[[Tensor], Tensor] | None = getattr(upstream, "frame_lengths", None)
    return own(lengths).long() if callable(own) else conv_output_lengths(lengths, _DEFAULT_CNN)


# --------------------------------------------------------------------------------- features


def _check_wavs(wavs: Sequence[Tensor]) -> None:
    if len(wavs) == 0:
        raise ValueError("no utterances to extract")
    for i, w in enumerate(wavs):
        if w.ndim != 1 or w.numel() == 0:
            raise ValueError(f"utterance {i}: expected a non-empty 1-D waveform, got shape {tuple(w.shape)}")
        if not torch.isfinite(w).all():
            raise ValueError(f"utterance {i}: waveform contains NaN or Inf")


def _stack_layers(hidden: Sequence[Tensor], batch: int) -> Tensor:
    """[B, L, T, D] from a hidden-state list, insisting on the shared shape a weighted sum needs."""
    if len(hidden) == 0:
        raise ValueError("upstream returned no hidden states")
    shape = hidden[0].shape
    for i, h in enumerate(hidden):
        if h.ndim != 3 or h.shape != shape or h.shape[0] != batch:
            raise ValueError(
                f"hidden state {i} has shape {tuple(h.shape)}; every entry must be [B={batch}, T, D] "
                f"and equal to entry 0 {tuple(shape)}"
            )
    return torch.stack(list(hidden), dim=1)


@torch.no_grad()
def extract_features(
    upstream: Upstream,
    wavs: Sequence[Tensor],
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> list[Tensor]:
    """All hidden states of each utterance as ``[num_layers, T_i, D]`` float16 on CPU.

    Utterances are batched in length order (less padding) and returned in input order.
    """
    _check_wavs(wavs)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    all_lengths = torch.tensor([w.shape[0] for w in wavs])
    all_frames = upstream_frame_lengths(upstream, all_lengths).cpu()
    # Fail before any model time is spent (and before the model crashes on a too-short input).
    short = torch.nonzero(all_frames < 1).flatten().tolist()
    if short:
        raise DataError(
            f"{len(short)} utterance(s) shorter than the model's receptive field, e.g. utterance "
            f"{short[0]} ({int(all_lengths[short[0]])} samples)"
        )
    was_training = isinstance(upstream, nn.Module) and upstream.training
    order = sorted(range(len(wavs)), key=lambda i: wavs[i].shape[0])
    out: list[Tensor] = [torch.empty(0)] * len(wavs)
    try:
        if isinstance(upstream, nn.Module):
            upstream.eval()
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            lengths = all_lengths[idx]
            batch = torch.zeros(len(idx), int(lengths.max()))
            for row, i in enumerate(idx):
                batch[row, : lengths[row]] = wavs[i].float()
            stacked = _stack_layers(upstream.extract(batch.to(device), lengths.to(device)), len(idx))
            for row, i in enumerate(idx):
                n = int(all_frames[i])
                if n > stacked.shape[2]:
                    raise ValueError(
                        f"utterance {i}: frame_lengths gives {n} frames but the upstream returned {stacked.shape[2]}"
                    )
                feats = stacked[row, :, :n].to("cpu", torch.float16).clone()
                if not torch.isfinite(feats).all():
                    raise ValueError(f"utterance {i}: hidden states are NaN/Inf or exceed the float16 range")
                out[i] = feats
    finally:
        if was_training and isinstance(upstream, nn.Module):
            upstream.train()
    return out


def feature_cache_key(model_id: str, condition: str, wavs: Sequence[Tensor]) -> str:
    """Cache key for (model identity, condition name, exact audio content)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"model={model_id}\0condition={condition}\0n={len(wavs)}\0".encode())
    for w in wavs:
        update_with_tensor(h, w)
    return h.hexdigest()


class FeatureCache:
    """:func:`extract_features` memoised on disk, one ``folder/<key>.pt`` per (model, condition, audio).

    The key is :func:`feature_cache_key`, so a retrained checkpoint, another condition or other audio
    never reuses stale features. The cache remembers the entries it served (read or written), so that
    one evaluation can :meth:`prune` the rest of its folder when it is done. A hit also refreshes the
    entry's modification time, and :meth:`prune` keeps every entry touched since this cache was made:
    another evaluation sharing the folder at the same time keeps the features it is using.
    """

    def __init__(self, folder: str | Path, *, store: bool = True) -> None:
        self.folder = Path(folder)
        # False: read nothing and write nothing, for a run that never asks for the same features twice
        # (the demo: 2 GB written only to be deleted with the report).
        self.store = store
        self.used: set[Path] = set()
        # File times come from the kernel's coarse clock (a tick behind time.time()) or are rounded
        # (2 s on FAT): without the slack an entry another evaluation writes just after this start could
        # look older than it and be pruned. Entries touched in the slack are merely kept once more.
        self.started = time.time() - 2.0

    def features(
        self,
        upstream: Upstream,
        wavs: Sequence[Tensor],
        *,
        condition: str,
        model_id: str | None = None,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
    ) -> list[Tensor]:
        """:func:`extract_features` of ``wavs``, from the cache when present.

        ``model_id`` identifies the model; by default it is the hash of ``upstream.state_dict()``.
        Unreadable cache files are re-extracted with a warning.
        """
        _check_wavs(wavs)
        if not self.store:
            return extract_features(upstream, wavs, batch_size=batch_size, device=device)
        if model_id is None:
            if not isinstance(upstream, nn.Module):
                raise ValueError("caching features of an upstream that is not an nn.Module needs model_id")
            model_id = state_fingerprint(upstream)
        path = self.folder / f"{feature_cache_key(model_id, condition, wavs)}.pt"
        self.used.add(path)
        if path.is_file():
            try:
                feats = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(feats, list) and len(feats) == len(wavs):
                    log.debug("feature cache hit: %s", path)
                    _touch(path)
                    return feats
                log.warning("feature cache %s holds %s, not %d utterances; re-extracting", path, type(feats), len(wavs))
            except Exception as exc:  # noqa: BLE001 - any unreadable cache file is rebuilt, never fatal
                log.warning("feature cache %s is unreadable (%s); re-extracting", path, exc)
        feats = extract_features(upstream, wavs, batch_size=batch_size, device=device)
        atomic_write(path, lambda fh: torch.save(feats, fh))  # a concurrent reader never sees half a file
        return feats

    def prune(self) -> tuple[int, int]:
        """Delete the entries this cache did not serve and nobody touched since it was made; returns
        (files, bytes) removed."""
        if not self.store:  # it served nothing: every entry in its folder is another evaluation's to keep
            return 0, 0
        recent = {p for p in self._entries() if (st := _stat(p)) is not None and st.st_mtime >= self.started}
        return self._remove(keep=self.used | recent)

    def clear(self) -> tuple[int, int]:
        """Delete every entry (and the folder, once empty); returns (files, bytes) removed."""
        removed = self._remove(keep=set())
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()
        return removed

    def _remove(self, keep: set[Path]) -> tuple[int, int]:
        """Only the cache's own files go (``<32 hex digits>.pt`` and the temp files of its writers that were
        killed), so a folder shared with other files loses nothing else."""
        if not self.folder.is_dir():
            return 0, 0
        doomed = [p for p in self._entries() if p not in keep]
        doomed += [
            p for p in stale_temps(self.folder) if p.is_file() and _CACHE_ENTRY.match(p.name.split(".tmp-")[0][1:])
        ]
        size = 0
        for path in doomed:
            size += st.st_size if (st := _stat(path)) is not None else 0
            path.unlink(missing_ok=True)
        return len(doomed), size

    def _entries(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return [p for p in self.folder.iterdir() if _CACHE_ENTRY.match(p.name)]


def _touch(path: Path) -> None:
    """Mark a cache entry as in use; a read-only cache folder just stays unmarked."""
    try:
        os.utime(path)
    except OSError:
        pass


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:  # removed meanwhile by a concurrent evaluation's prune
        return None


# --------------------------------------------------------------------------------- training


@dataclass
class ProbeConfig:
    """Probe hyper-parameters (SUPERB-like defaults scaled down for small probes)."""

    task: Literal["utterance", "ctc"] = "utterance"  # the probe task kind (evaluate.probe_tasks)
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    patience: int = 5  # epochs without validation improvement before stopping
    batch_size: int = 32
    hidden: int = 0  # utterance: MLP hidden units (0 = linear); ctc: BiLSTM units per direction (0 = linear)
    layer_norm: bool = False  # per-layer layer norm before the weighted sum
    device: str = "cpu"

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.hidden < 0:
            raise ValueError("lr must be > 0; weight_decay and hidden must be >= 0")

    @property
    def probe_task(self) -> ProbeTask:
        return probe_task(self.task)


@dataclass
class TrainedProbe:
    """A trained probe plus what the report needs about its training."""

    model: nn.Module  # the head of ``config.probe_task``
    config: ProbeConfig
    num_classes: int
    best_epoch: int  # 1-based epoch whose weights were kept
    epochs_run: int
    val_metric: float  # validation metric (accuracy / error rate) of the kept weights
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def layer_weights(self) -> list[float]:
        return self.model.featurizer.layer_weights()  # type: ignore[union-attr, operator]

    @torch.no_grad()
    def predict(self, feats: Sequence[Tensor]) -> list[Any]:
        """One prediction per utterance (features ``[L, T_i, D]`` each): a class id or a token list."""
        self.model.eval()
        preds: list[Any] = []
        feats = self.config.probe_task.condense(feats, self.config.layer_norm)
        for x, lengths in _batches(feats, self.config.batch_size, self.config.device):
            preds.extend(self.config.probe_task.decode(self.model(x, lengths), lengths))
        return preds


def _check_feats(feats: Sequence[Tensor], name: str) -> tuple[int, int]:
    if len(feats) == 0:
        raise ValueError(f"{name}: no utterances")
    layers, dim = feats[0].shape[0], feats[0].shape[-1]
    for i, f in enumerate(feats):
        if f.ndim != 3 or f.shape[0] != layers or f.shape[2] != dim or f.shape[1] < 1:
            raise ValueError(f"{name}[{i}]: expected [{layers}, T>=1, {dim}], got {tuple(f.shape)}")
    return layers, dim


def _check_labels(labels: Labels, n: int, task: ProbeTask, name: str) -> None:
    if len(labels) != n:
        raise ValueError(f"{name}: {len(labels)} labels for {n} utterances")
    task.check_labels(labels, name)


def _collate(feats: Sequence[Tensor], device: str | torch.device) -> tuple[Tensor, Tensor]:
    """``[B, L, T_max, D]`` float32 (zero-padded) and frame lengths ``[B]`` from ``[L, T_i, D]`` features."""
    lengths = torch.tensor([f.shape[1] for f in feats])
    layers, dim = feats[0].shape[0], feats[0].shape[2]
    x = torch.zeros(len(feats), layers, int(lengths.max()), dim)
    for i, f in enumerate(feats):
        x[i, :, : f.shape[1]] = f.float()
    return x.to(device), lengths.to(device)


def _batches(feats: Sequence[Tensor], batch_size: int, device: str | torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    for start in range(0, len(feats), batch_size):
        yield _collate(feats[start : start + batch_size], device)


@torch.no_grad()
def _validate(probe: TrainedProbe, feats: Sequence[Tensor], labels: Labels) -> tuple[float, float]:
    """(metric, mean loss) on a labelled set."""
    probe.model.eval()
    cfg, task = probe.config, probe.config.probe_task
    total, count = 0.0, 0
    for start in range(0, len(feats), cfg.batch_size):
        x, lengths = _collate(feats[start : start + cfg.batch_size], cfg.device)
        batch_labels = list(labels[start : start + cfg.batch_size])
        total += float(task.loss(probe.model(x, lengths), lengths, batch_labels)) * len(batch_labels)
        count += len(batch_labels)
    return task.score(probe.predict(feats), labels), total / count


def _num_classes(task: ProbeTask, labels: Labels, num_classes: int | None) -> int:
    """``num_classes``, by default 1 + the largest label (for CTC that includes the blank); checked against the labels."""
    seen = task.largest_label(labels)
    classes = num_classes if num_classes is not None else seen + 1
    if classes <= seen:
        raise ValueError(f"num_classes={classes} but a label {seen} occurs")
    return classes


def _train_epoch(
    probe: TrainedProbe,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    feats: Sequence[Tensor],
    labels: Labels,
) -> float:
    """One pass over the training set in a seeded order; returns the mean training loss."""
    model, cfg = probe.model, probe.config
    model.train()
    order = torch.randperm(len(feats), generator=generator).tolist()
    total = 0.0
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        x, lengths = _collate([feats[i] for i in idx], cfg.device)
        loss = cfg.probe_task.loss(model(x, lengths), lengths, [labels[i] for i in idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return total / len(order)


def train_probe(
    train_feats: Sequence[Tensor],
    train_labels: Labels,
    val_feats: Sequence[Tensor],
    val_labels: Labels,
    config: ProbeConfig | None = None,
    *,
    num_classes: int | None = None,
    **overrides: Any,
) -> TrainedProbe:
    """Train a probe on cached features with a fixed seed and early stopping on the validation set.

    Args:
        train_feats, val_feats: per utterance ``[L, T_i, D]`` (same L and D everywhere).
        train_labels, val_labels: one label per utterance, as ``config.task`` expects.
        config: fields may also be given as keywords (``task="ctc", epochs=20, ...``), checked strictly.
        num_classes: default 1 + the largest label seen (for CTC, that includes the blank).
    Returns:
        The probe with the weights of its best validation epoch. Improvement means a better
        validation metric, or an equal metric with a lower loss (so a CTC probe still emitting only
        blanks keeps training while its loss falls).
    """
    base = dataclasses.asdict(config) if config is not None else {}
    cfg = from_dict(ProbeConfig, {**base, **overrides})
    task = cfg.probe_task
    layers, dim = _check_feats(train_feats, "train_feats")
    if _check_feats(val_feats, "val_feats") != (layers, dim):
        raise ValueError("val_feats and train_feats differ in layer count or dimension")
    _check_labels(train_labels, len(train_feats), task, "train_labels")
    _check_labels(val_labels, len(val_feats), task, "val_labels")
    task.check_training_set(train_feats, train_labels)
    classes = _num_classes(task, [*train_labels, *val_labels], num_classes)
    train_feats, val_feats = task.condense(train_feats, cfg.layer_norm), task.condense(val_feats, cfg.layer_norm)

    # Initialise from the seed without disturbing the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = task.head(layers, dim, classes, cfg.hidden, cfg.layer_norm).to(cfg.device)
    probe = TrainedProbe(model, cfg, classes, best_epoch=0, epochs_run=0, val_metric=float("nan"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    best: tuple[float, float] | None = None
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    for epoch in range(1, cfg.epochs + 1):
        train_loss = _train_epoch(probe, optimizer, generator, train_feats, train_labels)
        metric, val_loss = _validate(probe, val_feats, val_labels)
        probe.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_metric": metric})
        probe.epochs_run = epoch
        score = (task.improvement_key(metric), -val_loss)
        if best is None or score > best:
            best, stale = score, 0
            best_state = copy.deepcopy(model.state_dict())
            probe.best_epoch, probe.val_metric = epoch, metric
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    log.info(
        "probe (%s) kept epoch %d of %d, validation %s %.4f",
        cfg.task,
        probe.best_epoch,
        probe.epochs_run,
        task.metric_label,
        probe.val_metric,
    )
    return probe


def evaluate_probe(probe: TrainedProbe, feats: Sequence[Tensor], labels: Labels) -> dict[str, float | int]:
    """``{metric: value, "n": n}`` on ``feats`` (``[L, T_i, D]`` each): ``accuracy`` for utterance
    probes, ``error_rate`` for CTC probes."""
    layers, _ = _check_feats(feats, "feats")
    if layers != len(probe.layer_weights):
        raise ValueError(f"feats have {layers} layers; the probe was trained on {len(probe.layer_weights)}")
    task = probe.config.probe_task
    _check_labels(labels, len(feats), task, "labels")
    return {task.metric: task.score(probe.predict(feats), labels), "n": len(feats)}
