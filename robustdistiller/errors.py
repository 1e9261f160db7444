"""The project's user-facing errors: one base class, one subclass per kind of bad input.

``cli.main`` prints a :class:`RobustDistillerError` as one line (``error: <message>``) and exits 1;
any other exception is a bug and keeps its traceback. Each subclass also inherits the builtin it
replaces (``ValueError``), so callers that catch the builtin keep working. Messages name the key,
file or value at fault, what was found and how to fix it.

This module is a foundation utility: it imports nothing from the package, and every layer may use it.
"""

from __future__ import annotations

from pathlib import Path


class RobustDistillerError(Exception):
    """Base of the errors caused by the user's input or environment, not by a bug."""


class ConfigError(RobustDistillerError, ValueError):
    """A configuration value or key is invalid (recipes, YAML, ``key=value`` overrides, options)."""


class UsageError(RobustDistillerError, ValueError):
    """Command-line arguments that contradict each other or are out of range."""


class DataError(RobustDistillerError, ValueError):
    """A manifest, data set or corpus cannot be used as given."""


class AudioError(RobustDistillerError, ValueError):
    """A file that cannot be used as audio. ``reason`` is one of: missing, unreadable, empty,
    too_short, non_finite, out_of_range, channels_cancel, silent, truncated, no_channel."""

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


class CheckpointFormatError(RobustDistillerError, ValueError):
    """A checkpoint file or model folder is not in a supported format, or its content is damaged."""


class UnsafeCheckpointError(CheckpointFormatError):
    """The file references Python globals that are not on the allow-list; nothing was executed."""

    def __init__(self, source: str, offending: list[str], detail: str = "") -> None:
        self.source = source
        self.offending = offending
        names = ", ".join(offending) if offending else "an object torch refuses to rebuild"
        msg = f"{source}: refusing to load, it references {names}, which is not an allowed global"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class UnsupportedTeacherError(RobustDistillerError, ValueError):
    """The source is not a HuBERT / wav2vec 2.0 / WavLM model this code can rebuild (architecture,
    configuration or weights that do not match it)."""
