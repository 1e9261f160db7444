"""PNG plots of evaluation results (matplotlib, Agg backend: no display needed).

Each function takes a :class:`~robustdistiller.evaluate.results.Results`, writes one figure per
task or model into a folder and returns the written paths (nothing when there is nothing to plot);
:func:`caption` says in a sentence what a written figure shows. In the score curves, models named
``<name>-seed<N>`` are one line with ``<name>``: the mean over its seeds.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from robustdistiller.atomic import atomic_path  # noqa: E402
from robustdistiller.evaluate.probe_tasks import probe_task_for_metric  # noqa: E402
from robustdistiller.evaluate.results import Results  # noqa: E402
from robustdistiller.evaluate.rows import DistortionRow  # noqa: E402


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _kinds(results: Results) -> dict[str, dict]:
    return {c["id"]: c for c in results.conditions}


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:  # the temp name keeps ".png" for matplotlib's format choice
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


SEED_SUFFIX = re.compile(r"-seed\d+$")


def seed_group(model: str) -> str:
    """``robustdistiller-seed1`` -> ``robustdistiller``: the line a model's scores join."""
    return SEED_SUFFIX.sub("", model)


def _probe_curves(results: Results, kind: str, key: str) -> dict[str, dict[str, dict[float, list[float]]]]:
    """task -> model (seed group) -> x value -> scores (averaged over noise types and seeds by the caller)."""
    conds = _kinds(results)
    out: dict[str, dict[str, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for p in results.probes:
        c = conds.get(p.condition)
        if c is not None and c["kind"] == kind and p.value is not None:
            out[p.task][seed_group(p.model)][float(c[key])].append(p.value)
    return out


def _clean_scores(results: Results) -> dict[tuple[str, str], float]:
    """(model seed group, task) -> clean score, the mean over the group's seeds."""
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for p in results.probes:
        if p.condition == "clean" and p.value is not None:
            scores[(seed_group(p.model), p.task)].append(p.value)
    return {k: float(np.mean(v)) for k, v in scores.items()}


def _metric_label(results: Results, task: str) -> str:
    metric = next((t["metric"] for t in results.tasks if t["name"] == task), "accuracy")
    return probe_task_for_metric(metric).metric_label


def _curve_plots(results: Results, out_dir: Path, kind: str, key: str, xlabel: str, prefix: str) -> list[Path]:
    paths = []
    clean = _clean_scores(results)
    for task, models in _probe_curves(results, kind, key).items():
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for model, points in models.items():
            xs = sorted(points)
            line = ax.plot(xs, [float(np.mean(points[x])) for x in xs], marker="o", label=model)[0]
            if (model, task) in clean:
                ax.axhline(clean[(model, task)], color=line.get_color(), linestyle=":", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"probe {_metric_label(results, task)}")
        ax.set_title(f"{task} ({'dotted: clean' if clean else ''})".replace(" ()", ""), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(_save(fig, out_dir / f"{prefix}_{slug(task)}.png"))
    return paths


def plot_snr_curves(results: Results, out_dir: Path) -> list[Path]:
    """Probe score vs SNR (mean over noise types), one line per model, one figure per task."""
    return _curve_plots(results, out_dir, "noise", "snr_db", "SNR (dB)", "snr")


def plot_reverb_curves(results: Results, out_dir: Path) -> list[Path]:
    """Probe score vs RT60 bin, one line per model, one figure per task."""
    return _curve_plots(results, out_dir, "reverb", "rt60", "RT60 (s)", "reverb")


def plot_distortion_heatmaps(results: Results, out_dir: Path) -> list[Path]:
    """Per model: cosine similarity of each hidden state, corrupted vs its own clean output
    (rows: conditions, columns: hidden-state index)."""
    paths = []
    by_model: dict[str, list[DistortionRow]] = defaultdict(list)
    for row in results.distortion:
        if row.reference == "self_clean":
            by_model[row.model].append(row)
    for model, rows in by_model.items():
        conditions = list(dict.fromkeys(r.condition for r in rows))
        layers = sorted({r.index_a for r in rows})
        grid = np.full((len(conditions), len(layers)), np.nan)
        labels = {r.index_a: r.layer for r in rows}
        for r in rows:
            grid[conditions.index(r.condition), layers.index(r.index_a)] = r.cosine
        fig, ax = plt.subplots(figsize=(max(5.0, 2.5 + 0.45 * len(layers)), max(2.8, 1.6 + 0.25 * len(conditions))))
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=np.nanmin(grid), vmax=1.0)
        ax.set_xticks(range(len(layers)), [labels[i] for i in layers], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(conditions)), conditions, fontsize=6)
        ax.set_title(f"{model}: cosine(corrupted, clean)", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.04)
        paths.append(_save(fig, out_dir / f"distortion_{slug(model)}.png"))
    return paths


def plot_teacher_distortion(results: Results, out_dir: Path) -> list[Path]:
    """Mean L1 and cosine of (model on corrupted audio) vs (teacher on clean audio) against SNR,
    averaged over noise types and compared layers; one line per model (clean shown at the right)."""
    conds = _kinds(results)
    points: dict[str, dict[float, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in results.distortion:
        c = conds.get(r.condition)
        if r.reference != "teacher_clean" or c is None or c["kind"] not in ("noise", "clean"):
            continue
        x = float("inf") if c["kind"] == "clean" else float(c["snr_db"])
        points[r.model][x].append((r.l1, r.cosine))
    if not points:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for model, by_x in points.items():
        finite = sorted(x for x in by_x if np.isfinite(x))
        xs = finite + ([max(finite, default=0) + 10] if float("inf") in by_x else [])
        keys = finite + ([float("inf")] if float("inf") in by_x else [])
        for k, ax in enumerate(axes):
            ax.plot(xs, [float(np.mean([v[k] for v in by_x[x]])) for x in keys], marker="o", label=model)
    ticks = sorted({x for by_x in points.values() for x in by_x if np.isfinite(x)})
    for ax, name in zip(axes, ("L1 (lower is better)", "cosine (higher is better)")):
        labels = [f"{t:g}" for t in ticks]
        extra = [max(ticks, default=0) + 10] if any(float("inf") in b for b in points.values()) else []
        ax.set_xticks(ticks + extra, labels + (["clean"] if extra else []))
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("model(corrupted) vs teacher(clean) target layers", fontsize=10)
    return [_save(fig, out_dir / "teacher_distortion_vs_snr.png")]


CAPTIONS = {
    "snr": "Probe {metric} on {task} against the SNR of the added noise (mean over noise types and seeds); one "
    "line per model, its dotted line at the same colour is its clean score.",
    "reverb": "Probe {metric} on {task} against the reverberation time (RT60 bin) of the room (mean over rooms "
    "and seeds); one line per model, dotted: its clean score.",
    "teacher_distortion_vs_snr": "Distance of each model's output on noisy audio from the teacher's target layers "
    "on clean audio, against SNR (left L1, lower is better; right cosine, higher is "
    "better).",
    "distortion": "{model}: cosine similarity of each hidden state on corrupted vs clean audio, per condition "
    "(brighter = less disturbed).",
}


def caption(path: Path, results: Results) -> str:
    """A sentence saying what the figure at ``path`` (written by this module) shows."""
    stem = path.stem
    if stem in CAPTIONS:
        return CAPTIONS[stem]
    prefix, _, rest = stem.partition("_")
    task = next((t["name"] for t in results.tasks if slug(t["name"]) == rest), rest)
    model = next((m["name"] for m in results.models if slug(m["name"]) == rest), rest)
    template = CAPTIONS.get(prefix, stem.replace("_", " "))
    return template.format(metric=_metric_label(results, task), task=task, model=model)


def all_plots(results: Results, out_dir: Path) -> list[Path]:
    return [
        *plot_snr_curves(results, out_dir),
        *plot_reverb_curves(results, out_dir),
        *plot_teacher_distortion(results, out_dir),
        *plot_distortion_heatmaps(results, out_dir),
    ]
