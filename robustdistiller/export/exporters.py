"""``robustdistiller export``: convert a checkpoint into another format.

Each exporter takes (source path, output path, **format-specific options) and returns what it wrote. Adding a format means
adding one entry to ``EXPORTERS``; the CLI offers whatever is listed here. Exporters import their
dependencies (torch, transformers) when called, so building the CLI parser stays fast.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robustdistiller.errors import UsageError

Exporter = Callable[..., Path]


def _to_hf(source: Path, out: Path) -> Path:
    from robustdistiller.checkpoints.load import check_finite_weights, load_student
    from robustdistiller.export.hf import export_hf

    model, _ = load_student(source)
    check_finite_weights(model, source)
    return export_hf(model, out)


def _to_s3prl(source: Path, out: Path) -> Path:
    """A slim re-save: weights, config, step and teacher; optimizer / trainer state is dropped."""
    from robustdistiller.checkpoints.load import check_finite_weights, load_student
    from robustdistiller.checkpoints.s3prl import save_s3prl_checkpoint

    model, checkpoint = load_student(source)
    check_finite_weights(model, source)
    kept = {k: v for k, v in checkpoint.raw["Config"].items() if k != "distiller"}
    return save_s3prl_checkpoint(out, model, step=checkpoint.step, extra_config=kept)


def _to_onnx(
    source: Path,
    out: Path,
    *,
    layers: list[int] | None = None,
    quantize: str | None = None,
    int8_scheme: str | None = None,
    calibration: str | None = None,
) -> Path:
    from robustdistiller.export.onnx import export_onnx_file

    return export_onnx_file(
        source, out, layers=layers, quantize=quantize, int8_scheme=int8_scheme, calibration=calibration
    )


EXPORTERS: dict[str, Exporter] = {
    "hf": _to_hf,
    "s3prl": _to_s3prl,
    "onnx": _to_onnx,
}


def export(source: str | Path, fmt: str, out: str | Path, **options: Any) -> Path:
    """Write the model at ``source`` (any format ``robustdistiller.load`` reads) as ``fmt`` to ``out``.

    ``options`` set to None are ignored; others must be accepted by that format's exporter.
    """
    if fmt not in EXPORTERS:
        raise UsageError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORTERS)}")
    given = {k: v for k, v in options.items() if v is not None}
    unknown = [k for k in given if k not in inspect.signature(EXPORTERS[fmt]).parameters]
    if unknown:
        raise UsageError(f"option(s) {', '.join(unknown)} do not apply to format {fmt!r}")
    return EXPORTERS[fmt](Path(source), Path(out), **given)
