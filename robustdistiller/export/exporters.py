"""``robustdistiller export``: convert a checkpoint into another format.

Each exporter takes (source path, output path) and returns what it wrote. Adding a format means
adding one entry to ``EXPORTERS``; the CLI offers whatever is listed here. Exporters import their
dependencies (torch, transformers) when called, so building the CLI parser stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

Exporter = Callable[[Path, Path], Path]


def _to_hf(source: Path, out: Path) -> Path:
    from robustdistiller.export.hf import export_hf
    from robustdistiller.export.load import load_student

    model, _ = load_student(source)
    return export_hf(model, out)


def _to_s3prl(source: Path, out: Path) -> Path:
    """A slim re-save: weights, config, step and teacher; optimizer / trainer state is dropped."""
    from robustdistiller.export.load import load_student
    from robustdistiller.export.s3prl import save_s3prl_checkpoint

    model, checkpoint = load_student(source)
    kept = {k: v for k, v in checkpoint.raw["Config"].items() if k != "distiller"}
    return save_s3prl_checkpoint(out, model, step=checkpoint.step, extra_config=kept)


EXPORTERS: dict[str, Exporter] = {
    "hf": _to_hf,
    "s3prl": _to_s3prl,
}


def export(source: str | Path, fmt: str, out: str | Path) -> Path:
    """Write the model at ``source`` (any format ``robustdistiller.load`` reads) as ``fmt`` to ``out``."""
    if fmt not in EXPORTERS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORTERS)}")
    return EXPORTERS[fmt](Path(source), Path(out))
