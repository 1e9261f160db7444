"""Frame labels for masked prediction: k-means over MFCC frames (iteration 1) or over a layer of an
earlier model (iteration 2).

:func:`fit_clusters` fits scikit-learn's ``MiniBatchKMeans`` on standardised frames;
:class:`ClusterModel` keeps the standardisation and the centres in an ``.npz`` file (no pickle)
saved next to the teacher, so the targets can be reproduced. :class:`FrameLabeller` turns a batch
of clean audio into one label per CNN frame.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from robustdistiller.atomic import atomic_write
from robustdistiller.data import AudioError, BadFileReport, Manifest
from robustdistiller.data.audio import load_audio
from robustdistiller.data.features import mfcc_frames
from robustdistiller.errors import ConfigError, DataError
from robustdistiller.models.teacher import Teacher

log = logging.getLogger(__name__)

CLUSTERS_FILE = "clusters.npz"

FrameLengths = Callable[[Tensor], Tensor]
"""Samples per row -> CNN frames per row (the model's ``frame_lengths``)."""


@dataclass
class ClusterModel:
    """k-means centres over standardised features; ``feature`` says which features."""

    centers: np.ndarray
    """(K, D) float32 centres in standardised units."""
    mean: np.ndarray
    """(D,) feature mean subtracted before clustering."""
    scale: np.ndarray
    """(D,) feature standard deviation divided out before clustering."""
    feature: str
    """``"mfcc"`` or ``"layer<i>"`` (hidden state i of the model the labels came from)."""
    inertia: float = float("nan")
    """Mean squared distance of the fitted frames to their centre (standardised units)."""

    @property
    def num_clusters(self) -> int:
        return int(self.centers.shape[0])

    def predict(self, feats: Tensor) -> Tensor:
        """(N, D) features -> (N,) int64 index of the nearest centre (``MiniBatchKMeans.predict``)."""
        x = (feats.float() - _t(self.mean, feats)) / _t(self.scale, feats)
        return torch.cdist(x, _t(self.centers, feats)).argmin(dim=1)

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` of plain arrays plus a JSON metadata string (loads without pickle)."""
        meta = json.dumps({"feature": self.feature, "inertia": self.inertia, "library": _sklearn_version()})
        return atomic_write(
            path,
            lambda fh: np.savez(fh, centers=self.centers, mean=self.mean, scale=self.scale, meta=np.array(meta)),
        )

    @classmethod
    def load(cls, path: str | Path) -> ClusterModel:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return cls(data["centers"], data["mean"], data["scale"], meta["feature"], float(meta["inertia"]))


def _t(array: np.ndarray, like: Tensor) -> Tensor:
    return torch.as_tensor(array, dtype=torch.float32, device=like.device)


def _sklearn_version() -> str:
    import sklearn

    return f"scikit-learn {sklearn.__version__}"


def fit_clusters(
    frames: np.ndarray, num_clusters: int, *, feature: str, seed: int, batch_size: int = 10_000, max_iter: int = 100
) -> ClusterModel:
    """Fit ``MiniBatchKMeans`` on standardised ``frames`` (N, D).

    Raises ValueError before fitting when there are fewer frames than clusters, and RuntimeError
    naming the cause when k-means fails or leaves clusters empty of distinct points."""
    from sklearn.cluster import MiniBatchKMeans

    if frames.ndim != 2 or frames.shape[0] < num_clusters:
        raise DataError(
            f"k-means needs at least targets.num_clusters={num_clusters} frames, got {frames.shape[0]} "
            f"(feature {feature!r}): add audio to the manifest or lower targets.num_clusters"
        )
    if not np.isfinite(frames).all():
        raise RuntimeError(f"k-means input for {feature!r} has NaN/inf values: check the audio and the model")
    mean = frames.mean(axis=0)
    scale = np.maximum(frames.std(axis=0), 1e-5)  # constant dims (e.g. silence-only data) stay finite
    x = ((frames - mean) / scale).astype(np.float32)
    kmeans = MiniBatchKMeans(
        n_clusters=num_clusters,
        batch_size=batch_size,
        max_iter=max_iter,
        n_init=3,
        random_state=seed,
        compute_labels=True,
    )
    try:
        kmeans.fit(x)
    except Exception as exc:  # sklearn raises several types; the user needs the cause, not the type
        raise RuntimeError(f"k-means ({num_clusters} clusters on {len(x)} {feature} frames) failed: {exc}") from exc
    used = np.unique(kmeans.labels_).size
    if used < num_clusters // 2:
        raise RuntimeError(
            f"k-means used only {used} of {num_clusters} clusters on {len(x)} {feature} frames: the features "
            "have too few distinct values; lower targets.num_clusters or use more varied audio"
        )
    inertia = float(kmeans.inertia_) / len(x)
    log.info(
        "k-means: %d clusters (%d used) on %d %s frames, mean squared distance %.3f",
        num_clusters,
        used,
        len(x),
        feature,
        inertia,
    )
    return ClusterModel(
        kmeans.cluster_centers_.astype(np.float32), mean.astype(np.float32), scale.astype(np.float32), feature, inertia
    )


class FrameLabeller:
    """One cluster label per CNN frame of clean audio: MFCC frames (``teacher`` None) or hidden
    state ``layer`` of a frozen earlier model."""

    def __init__(self, clusters: ClusterModel | None, teacher: Teacher | None = None, layer: int = 0) -> None:
        if teacher is not None and not 0 <= layer <= teacher.num_layers:
            raise ConfigError(f"targets.layer={layer} outside the label model's hidden states 0..{teacher.num_layers}")
        self.clusters = clusters
        self.teacher = teacher
        self.layer = layer

    @property
    def feature(self) -> str:
        return "mfcc" if self.teacher is None else f"layer{self.layer}"

    def features(self, wavs: Tensor, lengths: Tensor, frame_lengths: Tensor) -> list[Tensor]:
        """Per utterance, (T_i, D) fp32 features of its ``frame_lengths[i]`` valid frames."""
        if self.teacher is not None:
            hidden = self.teacher(wavs, lengths).hidden_states[self.layer]
            return [hidden[i, : int(n)] for i, n in enumerate(frame_lengths)]
        audio = wavs.detach().float().cpu().numpy()
        return [
            torch.from_numpy(mfcc_frames(audio[i, : int(n)], int(t))).to(wavs.device)
            for i, (n, t) in enumerate(zip(lengths, frame_lengths))
        ]

    def labels(self, wavs: Tensor, lengths: Tensor, frame_lengths: Tensor, num_frames: int) -> Tensor:
        """(B, num_frames) int64 labels; -1 on padded frames."""
        if self.clusters is None:
            raise RuntimeError("FrameLabeller has no cluster model yet: fit or load one first")
        out = torch.full((wavs.shape[0], num_frames), -1, dtype=torch.long, device=wavs.device)
        with torch.no_grad():
            for i, feats in enumerate(self.features(wavs, lengths, frame_lengths)):
                out[i, : feats.shape[0]] = self.clusters.predict(feats)
        return out

    def sample_frames(
        self, manifest: Manifest, frame_lengths: FrameLengths, *, max_frames: int, seed: int, report: BadFileReport
    ) -> np.ndarray:
        """Up to ``max_frames`` feature frames drawn evenly from every readable file of ``manifest``
        (unreadable / too-short files are skipped into ``report``), for :func:`fit_clusters`."""
        chunks = list(self._file_features(manifest, frame_lengths, report))
        if not chunks:
            raise DataError(f"no readable audio in the training manifest ({report.summary()})")
        frames = np.concatenate(chunks, axis=0)
        if len(frames) > max_frames:
            rng = np.random.default_rng(seed)
            frames = frames[np.sort(rng.choice(len(frames), max_frames, replace=False))]
        return frames

    def _file_features(
        self, manifest: Manifest, frame_lengths: FrameLengths, report: BadFileReport
    ) -> Iterator[np.ndarray]:
        for i in range(len(manifest)):
            path = manifest.abspath(i)
            try:
                wav = torch.from_numpy(load_audio(path))
            except AudioError as exc:
                report.add(path, exc.reason, exc.detail)
                continue
            lengths = torch.tensor([wav.shape[0]])
            if self.teacher is not None:
                wav = wav.to(next(self.teacher.parameters()).device)
                lengths = lengths.to(wav.device)
            feats = self.features(wav[None], lengths, frame_lengths(lengths))
            yield feats[0].cpu().numpy()
