"""Feature extraction over a folder or manifest: batched by length, resumable, bad files reported.

Output: one file per input at ``out_dir/<relative path>.npy`` (``[layers, frames, dim]`` float32,
layers in the order asked for) or ``.pt`` (a list of ``[frames, dim]`` tensors). Files that exist are
skipped, so a rerun only does what is missing; ``out_dir/extract.json`` records the model and
layers, and a rerun with different settings is refused instead of mixing features. Recordings longer
than ``ChunkConfig.full_context_seconds`` go through chunked inference (bounded memory, npy only).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from tqdm import tqdm

from robustdistiller.atomic import atomic_write, stale_temps
from robustdistiller.data.audio import MAX_PEAK, SAMPLE_RATE, AudioError, load_audio
from robustdistiller.data.manifest import Manifest, ManifestEntry, read_inputs
from robustdistiller.data.report import BadFileReport
from robustdistiller.errors import UsageError
from robustdistiller.inference.backends import Backend
from robustdistiller.inference.chunked import ChunkConfig, extract_long
from robustdistiller.inference.writer import FORMATS, save_features

log = logging.getLogger(__name__)

SETTINGS_FILE = "extract.json"
BAD_FILES = "bad_files.tsv"
LOCK_FILE = ".extract.lock"


@dataclass
class ExtractSummary:
    done: int
    """Files written in this run."""
    skipped_existing: int
    """Files already present from an earlier run."""
    bad: BadFileReport = field(default_factory=BadFileReport)
    """Unusable inputs (from scanning and from decoding)."""


def safe_relative(path: str) -> Path:
    """``path`` (a manifest row: relative, possibly with ``..``, or absolute) as a relative path that
    cannot leave the folder it is joined to: ``..`` parts become ``_up``, an absolute path goes under
    ``_abs/``."""
    parts = []
    for part in PurePath(path).parts:
        if part == "..":
            parts.append("_up")
        elif PurePath(part).anchor:  # "/" (or a drive on Windows)
            parts.append("_abs")
        elif part != ".":
            parts.append(part)
    return Path(*parts)


def output_paths(out_dir: Path, entries: list[ManifestEntry], fmt: str) -> dict[str, Path]:
    """Feature file of each row (keyed by its manifest path), always inside ``out_dir``.

    ``a/x.wav`` -> ``out_dir/a/x.<fmt>``. Inputs whose names would collide (``x.wav`` and ``x.flac``)
    keep their extension instead (``x.wav.<fmt>``, ``x.flac.<fmt>``), and are logged.
    """
    plain = {e.path: safe_relative(e.path).with_suffix(f".{fmt}") for e in entries}
    sharing = Counter(plain.values())
    renamed = sorted(p for p, out in plain.items() if sharing[out] > 1)
    if renamed:
        log.warning(
            "%d inputs would share an output name; their features keep the input extension (e.g. %s)",
            len(renamed),
            ", ".join(f"{p} -> {safe_relative(p)}.{fmt}" for p in renamed[:3]),
        )
    out = {}
    for path, rel in plain.items():
        full = safe_relative(path)
        out[path] = out_dir / (full.parent / f"{full.name}.{fmt}" if sharing[rel] > 1 else rel)
    return out


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir``'s lock for the run: a second ``extract`` into the same folder fails at once
    (two runs would mix settings and race on the same files). The OS drops the lock if we die."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"another extract is writing into {out_dir} (it holds {out_dir / LOCK_FILE}); wait for it "
                "to finish or use another --out folder"
            ) from None
        yield


def _clean_stale_temps(out_dir: Path) -> None:
    """Remove temp files that killed runs left beside the feature files."""
    for folder, _, _ in os.walk(out_dir):
        for stale in stale_temps(folder):
            log.info("removing %s, left by a write that never finished", stale)
            stale.unlink(missing_ok=True)


def _check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    path = out_dir / SETTINGS_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != settings:
            raise UsageError(
                f"{out_dir} holds features made with {previous}; this run asks for {settings}. "
                "Use another --out folder (or delete the old one)."
            )
    else:
        atomic_write(path, lambda fh: fh.write((json.dumps(settings, indent=2) + "\n").encode()))


def _batches(entries: list[ManifestEntry], batch_seconds: float) -> list[list[ManifestEntry]]:
    """Group length-sorted entries so that batch size x longest length stays within ``batch_seconds``."""
    budget = int(batch_seconds * SAMPLE_RATE)
    batches: list[list[ManifestEntry]] = []
    for entry in sorted(entries, key=lambda e: e.num_samples):
        current = batches[-1] if batches else None
        if current is not None and (len(current) + 1) * entry.num_samples <= budget:
            current.append(entry)
        else:
            batches.append([entry])
    return batches


def extract_files(
    backend: Backend,
    source: str | Path,
    out_dir: str | Path,
    *,
    fmt: str = "npy",
    batch_seconds: float = 120.0,
    chunk: ChunkConfig | None = None,
    settings: dict[str, Any] | None = None,
) -> ExtractSummary:
    """Extract ``backend.layers`` for every recording in ``source`` (folder or manifest) into ``out_dir``.

    ``settings`` (model, backend...) are stored with the features; ``layers`` and ``fmt`` are added.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown feature format {fmt!r}; choose from {', '.join(FORMATS)}")
    chunk = chunk or ChunkConfig()
    chunk.validate()
    out_dir = Path(out_dir)
    manifest, report = read_inputs(source)
    with _exclusive(out_dir):
        _clean_stale_temps(out_dir)
        _check_settings(out_dir, {**(settings or {}), "layers": backend.layers, "format": fmt})
        return _extract_all(backend, manifest, out_dir, fmt, batch_seconds, chunk, report)


def _extract_all(
    backend: Backend,
    manifest: Manifest,
    out_dir: Path,
    fmt: str,
    batch_seconds: float,
    chunk: ChunkConfig,
    report: BadFileReport,
) -> ExtractSummary:
    """The body of :func:`extract_files`, run while holding ``out_dir``'s lock."""
    outputs = output_paths(out_dir, manifest.entries, fmt)
    todo = [e for e in manifest.entries if not outputs[e.path].exists()]
    summary = ExtractSummary(done=0, skipped_existing=len(manifest) - len(todo), bad=report)
    if summary.skipped_existing:
        log.info("%d of %d files already extracted; skipping them", summary.skipped_existing, len(manifest))
    long_limit = chunk.full_context_seconds * SAMPLE_RATE
    short = [e for e in todo if e.num_samples <= long_limit]
    long = [e for e in todo if e.num_samples > long_limit]
    if long and fmt != "npy":
        raise UsageError(f"{len(long)} recordings are longer than {chunk.full_context_seconds} s: use --format npy")
    with tqdm(total=sum(e.num_samples for e in todo) / SAMPLE_RATE, unit="s", desc="extracting", disable=None) as bar:
        for batch in _batches(short, batch_seconds):
            summary.done += _run_batch(backend, manifest.root, batch, outputs, fmt, report)
            bar.update(sum(e.num_samples for e in batch) / SAMPLE_RATE)
        for entry in long:
            try:
                extract_long(backend, manifest.root / entry.path, outputs[entry.path], chunk)
                summary.done += 1
            except AudioError as exc:
                report.add(exc.path, exc.reason, exc.detail)
            bar.update(entry.num_samples / SAMPLE_RATE)
    if len(report):
        report.write(out_dir / BAD_FILES)
        log.warning("%s (listed in %s)", report.summary(), out_dir / BAD_FILES)
    return summary


def _run_batch(
    backend: Backend,
    root: Path,
    batch: list[ManifestEntry],
    outputs: dict[str, Path],
    fmt: str,
    report: BadFileReport,
) -> int:
    wavs: list[np.ndarray] = []
    kept: list[ManifestEntry] = []
    for entry in batch:
        try:
            wav = load_audio(root / entry.path, min_samples=backend.geometry.receptive_field, max_peak=MAX_PEAK)
        except AudioError as exc:
            report.add(exc.path, exc.reason, exc.detail)
            continue
        wavs.append(wav)
        kept.append(entry)
    if not wavs:
        return 0
    lengths = np.array([w.shape[0] for w in wavs], dtype=np.int64)
    padded = np.zeros((len(wavs), int(lengths.max())), dtype=np.float32)
    for i, wav in enumerate(wavs):
        padded[i, : wav.shape[0]] = wav
    hidden = backend.extract(padded, lengths)
    frames = backend.geometry.frames(lengths)
    written = 0
    for i, entry in enumerate(kept):
        layers = [h[i, : frames[i]] for h in hidden]
        if not all(np.isfinite(layer).all() for layer in layers):
            report.add(
                root / entry.path,
                "non_finite_features",
                "the model output NaN/inf for it; check the model with `robustdistiller info`",
            )
            continue
        save_features(outputs[entry.path], layers, fmt)
        written += 1
    return written
