"""Loading ``torch.save`` files without executing arbitrary pickles.

Released s3prl / RobustDistiller checkpoints hold two kinds of non-tensor objects: an
``argparse.Namespace`` under ``"Args"`` and s3prl learning-rate schedule objects (pickled as
``optimizers.WarmupLinearSchedule`` because the recipe runs from inside ``s3prl/s3prl``) inside the
optimizer's param groups. Both are allow-listed here; the schedules become inert stand-ins that only
hold their pickled state, so no s3prl code is imported or run. Anything else that names a global
outside torch's own weights-only allow-list is refused before a single object is built.
"""

from __future__ import annotations

import argparse
import functools
import io
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from robustdistiller.errors import CheckpointFormatError, UnsafeCheckpointError

# s3prl/optimizers.py schedule classes; the module is pickled under both names depending on
# whether the recipe ran from the repo root (`s3prl.optimizers`) or from inside it (`optimizers`).
_S3PRL_SCHEDULE_CLASSES = (
    "ConstantLR",
    "WarmupConstantSchedule",
    "WarmupCosineSchedule",
    "WarmupCosineWithHardRestartsSchedule",
    "WarmupCosineWithWarmupRestartsSchedule",
    "WarmupLinearSchedule",
)
_S3PRL_OPTIMIZER_MODULES = ("optimizers", "s3prl.optimizers")

# Phrases of torch's weights-only unpickler that mean "this file asks for something not allowed"
# (as opposed to "this file is damaged").
_REFUSAL_MARKERS = (
    "Unsupported global",
    "unsupported GLOBAL",
    "Can only create new object",
    "Can only build",
    "reduce for unrecognized function",
)
_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")


class PickledStandIn:
    """Inert record of a pickled object whose real class is deliberately not imported.

    It keeps whatever the pickle handed it (constructor args and ``__dict__`` state) so callers can
    inspect it, and has no behaviour beyond that.
    """

    qualified_name: str = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledStandIn:
        obj = super().__new__(cls)
        obj.__dict__["_pickled_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Reached only when a pickle *calls* the class (REDUCE); keep the arguments, run nothing.
        self.__dict__["_pickled_args"] = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict state, slot state)
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_pickled_state"] = state

    def __repr__(self) -> str:
        fields = {k: v for k, v in self.__dict__.items() if not k.startswith("_pickled")}
        return f"<stand-in for {self.qualified_name} {fields}>"


@functools.cache
def stand_in(qualified_name: str) -> type[PickledStandIn]:
    """The (cached, hence unique) inert stand-in class for the global ``module.Name``."""
    name = qualified_name.rsplit(".", 1)[-1]
    return type(name, (PickledStandIn,), {"qualified_name": qualified_name})


def default_allowed() -> dict[str, Callable[..., Any]]:
    """Globals every checkpoint may reference beyond torch's own tensor/container allow-list."""
    allowed: dict[str, Callable[..., Any]] = {"argparse.Namespace": argparse.Namespace}
    for module in _S3PRL_OPTIMIZER_MODULES:
        for cls in _S3PRL_SCHEDULE_CLASSES:
            allowed[f"{module}.{cls}"] = stand_in(f"{module}.{cls}")
    return allowed


def safe_load(f: str | Path | BinaryIO, extra_allowed: Mapping[str, Callable[..., Any]] | None = None) -> Any:
    """``torch.load`` restricted to tensors, plain containers and the allow-listed globals.

    ``extra_allowed`` maps further ``module.Name`` globals to the object to use in their place
    (typically ``stand_in(name)``; a real class only if constructing it is harmless). Raises
    ``UnsafeCheckpointError`` naming every offending global, ``FileNotFoundError`` for a missing
    path, and ``ValueError`` for files that are not readable ``torch.save`` output.
    """
    allowed = {**default_allowed(), **(extra_allowed or {})}
    if isinstance(f, (str, Path)):
        if not Path(f).is_file():
            raise FileNotFoundError(f"checkpoint not found: {f}")
        with open(f, "rb") as fh:  # a handle, not the bytes: teacher files are hundreds of MB
            return _load_stream(fh, str(f), allowed)
    source = getattr(f, "name", "<stream>")
    return _load_stream(f if f.seekable() else io.BytesIO(f.read()), source, allowed)


def _load_stream(stream: BinaryIO, source: str, allowed: dict[str, Callable[..., Any]]) -> Any:
    start = stream.tell()
    with torch.serialization.safe_globals([(obj, name) for name, obj in allowed.items()]):
        offending = _unsafe_globals(stream)
        if offending:
            raise UnsafeCheckpointError(source, offending)
        stream.seek(start)
        try:
            return torch.load(stream, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            message = str(exc)
            if any(marker in message for marker in _REFUSAL_MARKERS):
                # torch prints builtins without their module; restore it so names read `module.name`.
                names = {n if "." in n else f"builtins.{n}" for n in _GLOBAL_IN_MESSAGE.findall(message)}
                raise UnsafeCheckpointError(source, sorted(names)) from None
            raise CheckpointFormatError(f"{source}: not a readable torch checkpoint ({_reason(exc)})") from None
        except Exception as exc:  # noqa: BLE001 - damaged bytes surface as KeyError, IndexError, ...
            raise CheckpointFormatError(f"{source}: not a readable torch checkpoint ({_reason(exc)})") from None


def _unsafe_globals(stream: BinaryIO) -> list[str]:
    """Statically listed globals of a zip-format checkpoint that are not allowed (in context).

    Legacy (pre-zip) files cannot be listed this way; torch's unpickler still refuses them while
    loading and its message names the global.
    """
    start = stream.tell()
    try:
        if not zipfile.is_zipfile(stream):
            return []
        stream.seek(start)
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(stream))
    except (ValueError, RuntimeError, EOFError, pickle.UnpicklingError):
        return []  # damaged or TorchScript; torch.load reports it properly below
    finally:
        stream.seek(start)


def _reason(exc: BaseException) -> str:
    """The useful part of a load failure (torch wraps the unpickler's reason in boilerplate)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n\n", 1)[0]
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
