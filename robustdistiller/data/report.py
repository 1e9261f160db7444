"""Bad-file report: every skipped file, its reason, logged once and summarised at the end.

Files are keyed by path: a file that is bad in every epoch is counted (and logged) once.
DataLoader workers cannot share this object; they return their skips inside each batch
(``Batch.skipped``) and the main process ``extend``s its report with them.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from robustdistiller.atomic import atomic_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BadFile:
    path: str
    reason: str
    detail: str = ""


class BadFileReport:
    """Thread-safe, picklable collection of skipped files."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, BadFile] = {}

    def add(self, path: str | Path, reason: str, detail: str = "") -> bool:
        """Record a skip; returns False (and stays quiet) when ``path`` was already recorded."""
        key = str(path)
        with self._lock:
            if key in self._files:
                return False
            self._files[key] = BadFile(key, reason, detail)
        log.warning("skipping %s: %s%s", key, reason, f" ({detail})" if detail else "")
        return True

    def extend(self, items: Iterable[BadFile | tuple[str, str] | tuple[str, str, str]]) -> int:
        """Add many skips (another report, BadFile records or (path, reason[, detail]) tuples);
        returns how many were new."""
        added = 0
        for item in list(items):
            if isinstance(item, BadFile):
                added += self.add(item.path, item.reason, item.detail)
            else:
                added += self.add(*item)
        return added

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[BadFile]:
        with self._lock:
            return iter(list(self._files.values()))

    def counts(self) -> dict[str, int]:
        """Number of bad files per reason, most frequent first."""
        with self._lock:
            return dict(Counter(f.reason for f in self._files.values()).most_common())

    def summary(self, examples: int = 3) -> str:
        """One line per reason with a few example paths, e.g. for the end of ``prepare``."""
        if not self._files:
            return "no bad files"
        lines = [f"{len(self)} bad file(s) skipped:"]
        for reason, count in self.counts().items():
            paths = [f.path for f in self if f.reason == reason][:examples]
            more = ", ..." if count > len(paths) else ""
            lines.append(f"  {reason}: {count} (e.g. {', '.join(paths)}{more})")
        return "\n".join(lines)

    def write(self, path: str | Path) -> Path:
        """Write ``path<TAB>reason<TAB>detail`` rows with a header line, atomically. Names that are
        not valid UTF-8 are written with backslash escapes (the report must not fail on them)."""
        text = io.StringIO()
        writer = csv.writer(text, delimiter="\t", lineterminator="\n")
        writer.writerow(["path", "reason", "detail"])
        for item in self:
            writer.writerow([item.path, item.reason, item.detail])
        data = text.getvalue().encode("utf-8", errors="backslashreplace")
        return atomic_write(path, lambda fh: fh.write(data))

    # A lock cannot be pickled; datasets holding a report are pickled into DataLoader workers.
    def __getstate__(self) -> dict[str, BadFile]:
        with self._lock:
            return dict(self._files)

    def __setstate__(self, state: dict[str, BadFile]) -> None:
        self._lock = threading.Lock()
        self._files = dict(state)
