"""Manifests: which files to train on, their length at 16 kHz, and optional labels.

File format (TSV, UTF-8)::

    # root: /abs/path/to/corpus        <- absolute, or relative to the manifest's own folder
    path<TAB>num_samples[<TAB>label columns...]
    train-clean-100/103/1240/103-1240-0000.flac<TAB>225360[<TAB>...]

Paths are relative to the root; ``num_samples`` is the length after resampling to 16 kHz.
``Manifest.read`` also accepts fairseq / DPHuBERT ``.tsv`` files (first line = root, then
``path<TAB>num_samples`` rows without a header).

Builders read only file headers, in parallel, and return ``(manifest, BadFileReport)``: files that
are unreadable, empty or shorter than the CNN receptive field are skipped and reported.
"""

from __future__ import annotations

import csv
import errno
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from robustdistiller.atomic import atomic_write
from robustdistiller.data.audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, audio_info
from robustdistiller.data.report import BadFileReport
from robustdistiller.errors import DataError

ROOT_PREFIX = "# root:"
DEFAULT_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")
LIBRISPEECH_SPLITS: tuple[str, ...] = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)


@dataclass(frozen=True)
class ManifestEntry:
    path: str  # relative to Manifest.root
    num_samples: int  # at 16 kHz
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Manifest:
    root: Path
    entries: list[ManifestEntry]
    label_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def total_seconds(self) -> float:
        return sum(e.num_samples for e in self.entries) / SAMPLE_RATE

    @property
    def lengths(self) -> list[int]:
        return [e.num_samples for e in self.entries]

    def abspath(self, index: int) -> Path:
        return self.root / self.entries[index].path

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"manifest not found: {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines:
            raise DataError(f"{path}: empty manifest (expected a '{ROOT_PREFIX} ...' first line)")
        first = lines[0]
        if first.startswith(ROOT_PREFIX):
            root_text, rows = first[len(ROOT_PREFIX) :].strip(), lines[1:]
            if not rows or rows[0].split("\t")[:2] != ["path", "num_samples"]:
                raise DataError(f"{path}:2: expected the header 'path<TAB>num_samples[<TAB>labels...]'")
            label_names, rows, first_row = rows[0].split("\t")[2:], rows[1:], 3
        else:  # fairseq / DPHuBERT: bare root line, no header, no labels
            root_text, rows, label_names, first_row = first.strip(), lines[1:], [], 2
        root = Path(root_text)
        if not root.is_absolute():
            root = (path.parent / root).resolve()
        width = 2 + len(label_names)
        entries = []
        for lineno, row in enumerate(rows, start=first_row):
            if not row.strip():
                continue
            cols = row.split("\t")
            if len(cols) != width:
                raise DataError(f"{path}:{lineno}: expected {width} tab-separated columns, got {len(cols)}")
            try:
                num = int(cols[1])
            except ValueError:
                raise DataError(f"{path}:{lineno}: num_samples {cols[1]!r} is not an integer") from None
            entries.append(ManifestEntry(cols[0], num, dict(zip(label_names, cols[2:]))))
        return cls(root, entries, label_names)

    def write(self, path: str | Path, *, relative_root: bool = False) -> Path:
        """Write the manifest; ``relative_root`` stores the root relative to the manifest's folder
        (so a folder holding both can be moved)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        root = Path(os.path.relpath(self.root, path.parent.resolve())) if relative_root else self.root
        header = ["path", "num_samples", *self.label_names]
        out = [f"{ROOT_PREFIX} {root}", "\t".join(header)]
        for e in self.entries:
            cells = [e.path, str(e.num_samples), *(e.labels.get(n, "") for n in self.label_names)]
            bad = [c for c in cells if "\t" in c or "\n" in c]
            if bad:
                raise DataError(f"manifest cell {bad[0]!r} contains a tab or newline")
            out.append("\t".join(cells))
        data = ("\n".join(out) + "\n").encode("utf-8")
        return atomic_write(path, lambda fh: fh.write(data))


def validate_manifest(manifest: Manifest, report: BadFileReport | None = None) -> Manifest:
    """Refuse a manifest with no usable rows, before any training starts."""
    if len(manifest) == 0:
        if report is not None and len(report):
            raise DataError(f"all {len(report)} files under {manifest.root} were bad: {report.summary()}")
        raise DataError(f"manifest with root {manifest.root} has no rows")
    short = [e.path for e in manifest.entries if e.num_samples < MIN_SAMPLES]
    if short:
        raise DataError(f"{len(short)} manifest rows are shorter than {MIN_SAMPLES} samples, e.g. {short[0]}")
    return manifest


Row = tuple[str, dict[str, str]]  # (path relative to root, labels)


def _header_length(path: Path, min_samples: int) -> int:
    info = audio_info(path)
    if info.num_samples_16k == 0:
        raise AudioError(path, "empty", "0 frames in header")
    if info.num_samples_16k < min_samples:
        raise AudioError(path, "too_short", f"{info.num_samples_16k} samples at 16 kHz < {min_samples}")
    return info.num_samples_16k


def scan_files(
    root: Path,
    rows: Sequence[Row],
    label_names: Sequence[str] = (),
    *,
    workers: int = 8,
    min_samples: int = MIN_SAMPLES,
    desc: str = "reading headers",
    report: BadFileReport | None = None,
) -> tuple[Manifest, BadFileReport]:
    """Read the header of every row in parallel threads (libsndfile releases the GIL).

    Bad rows are recorded (and so logged, once) in ``report`` when given, else in a new report;
    that report is returned. Pass the caller's report rather than ``extend``-ing it with the
    returned one, which would log every bad file a second time.
    """
    report = report if report is not None else BadFileReport()
    root = Path(root).resolve()

    def length(row: Row) -> int | AudioError:
        try:
            return _header_length(root / row[0], min_samples)
        except AudioError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(tqdm(pool.map(length, rows), total=len(rows), desc=desc, unit="file", disable=None))
    entries = []
    for (rel, labels), result in zip(rows, results):
        if isinstance(result, AudioError):
            report.add(result.path, result.reason, result.detail)
        else:
            entries.append(ManifestEntry(rel, result, labels))
    return Manifest(root, entries, list(label_names)), report


def _find_audio(folder: Path, extensions: Sequence[str], report: BadFileReport) -> list[Path]:
    """Audio files under ``folder`` with one of ``extensions``, sorted. Matches that cannot be used
    are listed in ``report`` rather than dropped: broken or looping links, folders and other
    non-files, and names a manifest (UTF-8 text, one row per line, tab-separated) cannot hold."""
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts):
        problem = _unusable_name(path) or _unusable_file(path)
        if problem:
            report.add(path, *problem)
        elif path.is_file():
            found.append(path)
        else:  # a folder named like audio, a FIFO (reading it would block), a socket...
            report.add(path, "not_a_file", "a folder" if path.is_dir() else "not a regular file")
    return found


def _unusable_name(path: Path) -> tuple[str, str] | None:
    """(reason, detail) when a manifest row cannot hold ``path``'s name."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return "bad_name", "the name is not valid UTF-8; rename the file"
    if "\t" in path.name or "\n" in path.name or "\r" in path.name:
        return "bad_name", "the name holds a tab or line break; rename the file"
    return None


def _unusable_file(path: Path) -> tuple[str, str] | None:
    """(reason, detail) for a link that leads nowhere (dangling, or a loop)."""
    if not path.is_symlink():
        return None
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a symlink loop this way
        return "broken_link", "symbolic link loop"
    except OSError as exc:
        return (
            "broken_link",
            "symbolic link loop" if exc.errno == errno.ELOOP else f"link to missing {os.readlink(path)}",
        )
    return None


def manifest_from_folder(
    root: str | Path,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    *,
    workers: int = 8,
    label_fn: Callable[[Path], dict[str, str]] | None = None,
    label_names: Sequence[str] = (),
    report: BadFileReport | None = None,
) -> tuple[Manifest, BadFileReport]:
    """Every audio file under ``root`` (recursive, sorted). ``label_fn(relative_path)`` may derive
    labels (keys ``label_names``) from the path. Bad files go to ``report`` (see :func:`scan_files`)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder not found: {root}")
    report = report if report is not None else BadFileReport()
    files = _find_audio(root, extensions, report)
    if not files:
        raise DataError(
            f"no audio files with extensions {', '.join(extensions)} under {root}"
            + (f" that can be used ({report.summary()})" if len(report) else "")
        )
    rows = []
    for f in files:
        rel = f.relative_to(root)
        rows.append((rel.as_posix(), label_fn(rel) if label_fn else {}))
    return scan_files(root, rows, label_names, workers=workers, report=report)


def manifest_from_librispeech(
    root: str | Path, splits: Sequence[str], *, workers: int = 8, report: BadFileReport | None = None
) -> tuple[Manifest, BadFileReport]:
    """LibriSpeech ``root/<split>/<speaker>/<chapter>/*.flac``; adds a ``speaker`` label column.
    Bad files go to ``report`` (see :func:`scan_files`)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"LibriSpeech root not found: {root}")
    if not splits:
        raise DataError("no LibriSpeech splits given (e.g. train-clean-100)")
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    missing = [s for s in splits if s not in found]
    if missing:
        raise FileNotFoundError(
            f"LibriSpeech split(s) {', '.join(missing)} not found under {root}; "
            f"splits found: {', '.join(found) or 'none'}"
        )
    report = report if report is not None else BadFileReport()
    rows: list[Row] = []
    for split in splits:
        files = _find_audio(root / split, (".flac",), report)
        if not files:
            raise DataError(f"no .flac files under {root / split}")
        for f in files:
            rel = f.relative_to(root)
            # <split>/<speaker>/<chapter>/<file>: the speaker id is the second path part.
            speaker = rel.parts[1] if len(rel.parts) >= 4 else ""
            rows.append((rel.as_posix(), {"speaker": speaker}))
    return scan_files(root, rows, ["speaker"], workers=workers, desc=" + ".join(splits), report=report)


# Speakers whose numeric id is a multiple of this are held out of pre-training and distillation in
# every bundled recipe, demo and benchmark, so evaluation always hears voices no model was trained on.
HELD_OUT_SPEAKER_MODULUS = 5


def speaker_from_name(path: str | Path) -> str:
    """LibriSpeech speaker id from a file name ``<speaker>-<chapter>-<utt>.flac`` (any folder)."""
    return Path(path).name.split("-", 1)[0]


def is_held_out_speaker(speaker: str) -> bool:
    """True for the speakers kept out of training (numeric id divisible by
    :data:`HELD_OUT_SPEAKER_MODULUS`: 46 of the 251 in train-clean-100)."""
    if not speaker.isdigit():
        raise DataError(f"speaker id {speaker!r} is not numeric; held-out splits need LibriSpeech ids")
    return int(speaker) % HELD_OUT_SPEAKER_MODULUS == 0


def split_held_out(manifest: Manifest, column: str = "speaker") -> tuple[Manifest, Manifest]:
    """``(train, held_out)`` by :func:`is_held_out_speaker` on label ``column``."""
    if column not in manifest.label_names:
        raise KeyError(f"manifest has no {column!r} column (columns: {', '.join(manifest.label_names) or 'none'})")
    parts: tuple[list[ManifestEntry], list[ManifestEntry]] = ([], [])
    for entry in manifest.entries:
        parts[is_held_out_speaker(entry.labels[column])].append(entry)
    return tuple(Manifest(manifest.root, rows, list(manifest.label_names)) for rows in parts)  # type: ignore[return-value]


def manifest_from_csv(
    csv_path: str | Path,
    root: str | Path | None = None,
    path_column: str | None = None,
    label_columns: Sequence[str] = (),
    *,
    workers: int = 8,
    report: BadFileReport | None = None,
) -> tuple[Manifest, BadFileReport]:
    """A CSV with one file per row, e.g. s3prl's ``len_for_bucket/<split>.csv``
    (columns: index, file_path, length, label). Lengths are re-read from the headers.

    ``path_column`` defaults to ``file_path`` or ``path``. Relative paths are resolved against
    ``root`` (default: the CSV's folder; s3prl CSVs need ``root`` = the LibriSpeech folder).
    Bad files go to ``report`` (see :func:`scan_files`).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"CSV not found: {csv_path}")
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        table = list(reader)
    if path_column is None:
        path_column = next((c for c in ("file_path", "path") if c in columns), None)
        if path_column is None:
            raise DataError(f"{csv_path}: no 'file_path' or 'path' column (columns: {', '.join(columns)})")
    absent = [c for c in (path_column, *label_columns) if c not in columns]
    if absent:
        raise DataError(f"{csv_path}: column(s) {', '.join(absent)} not found (columns: {', '.join(columns)})")
    if not table:
        raise DataError(f"{csv_path}: no rows")
    base = Path(root).resolve() if root is not None else csv_path.parent.resolve()
    if not base.is_dir():
        raise FileNotFoundError(f"audio root not found: {base}")
    report = report if report is not None else BadFileReport()
    rows = []
    for rec in table:
        full = base / rec[path_column]  # an absolute path in the CSV wins over base
        rel = os.path.relpath(full, base)
        if rel == ".." or rel.startswith(f"..{os.sep}"):
            # A manifest row is relative to its root; a row climbing out of it would also make
            # `extract` write features outside its output folder.
            report.add(
                os.path.normpath(full), "outside_root", f"not under --root {base}; give a --root holding every file"
            )
            continue
        rows.append((rel, {c: rec[c] for c in label_columns}))
    return scan_files(base, rows, list(label_columns), workers=workers, report=report)


def read_inputs(source: str | Path) -> tuple[Manifest, BadFileReport]:
    """A folder (scanned recursively for audio) or a manifest file (``Manifest.read`` formats)."""
    source = Path(source)
    if source.is_dir():
        return manifest_from_folder(source)
    if source.is_file():
        return Manifest.read(source), BadFileReport()
    raise FileNotFoundError(f"input is neither a folder nor a manifest file: {source}")
