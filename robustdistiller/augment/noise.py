"""Noise bank: an index of noise recordings (MUSAN, UrbanSound8K, DNS-style or any folders) and
random segments of them at 16 kHz.

Files are indexed once from their headers (bad ones are skipped and put in a ``BadFileReport``); a
folder that does not exist is an error at construction. A segment of ``n`` samples is a uniformly
random crop of a longer file (only that span is decoded for 16 kHz files), or the file tiled from its
start when it is shorter, as in the original code. Decoded files can be kept in an LRU cache with a byte
cap; each DataLoader worker holds its own copy of the bank and so its own cache.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustdistiller.augment.builtin import SpeechSource, synthetic_speech, write_builtin_noises
from robustdistiller.data.audio import SAMPLE_RATE, AudioError, load_audio, load_audio_segment
from robustdistiller.data.manifest import DEFAULT_EXTENSIONS, Manifest, Row, scan_files
from robustdistiller.data.report import BadFileReport
from robustdistiller.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MUSAN_SUBSETS = ("noise", "music", "speech")
URBANSOUND_CSV = Path("metadata") / "UrbanSound8K.csv"
# The original code's choice: these two classes contain speech-like / musical content, not background noise.
URBANSOUND_DEFAULT_EXCLUDE = ("children_playing", "street_music")
# Draws of another file after an unreadable one before giving up on the whole bank.
MAX_BAD_RETRIES = 20


@dataclass
class NoiseBankConfig:
    """Where the noise recordings are. Every folder given must exist."""

    musan: Path | None = None  # MUSAN root (holds noise/, music/, speech/)
    musan_subsets: list[str] = field(default_factory=lambda: ["noise"])
    urbansound: Path | None = None  # UrbanSound8K root (holds metadata/ and audio/fold*/)
    urbansound_exclude: list[str] = field(default_factory=lambda: list(URBANSOUND_DEFAULT_EXCLUDE))
    noise_dirs: list[Path] = field(default_factory=list)  # DNS noise folders or any folder (recursive)
    builtin: bool = False  # add the generated noises of augment/builtin.py
    builtin_textures: int = 0  # and this many random noise textures (augment/builtin.py ``texture``)
    builtin_dir: Path | None = None  # where they are written (default: <tmp>/robustdistiller-builtin-noise)
    cache_mb: float = 0.0  # per-process LRU cache of decoded files; 0 = decode spans on demand
    workers: int = 8  # threads reading headers at start

    def validate(self) -> None:
        unknown = [s for s in self.musan_subsets if s not in MUSAN_SUBSETS]
        if unknown:
            raise ConfigError(f"musan_subsets: {unknown} not in {list(MUSAN_SUBSETS)}")
        if self.musan is not None and not self.musan_subsets:
            raise ConfigError("musan is set but musan_subsets is empty")
        if self.cache_mb < 0:
            raise ConfigError(f"cache_mb must be >= 0, got {self.cache_mb}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.builtin_textures < 0:
            raise ConfigError(f"builtin_textures must be >= 0, got {self.builtin_textures}")
        if self.builtin_textures and not self.builtin:
            raise ConfigError(f"builtin_textures is {self.builtin_textures} but builtin is false: set builtin: true")


@dataclass(frozen=True)
class NoiseFile:
    path: Path
    num_samples: int  # at 16 kHz, from the header
    name: str  # "<source>/<relative path>", stable across machines


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def _rows(paths: Sequence[Path], root: Path) -> list[Row]:
    return [(p.relative_to(root).as_posix(), {}) for p in paths]


def _audio_rows(folder: Path, root: Path) -> list[Row]:
    return _rows(sorted(p for p in folder.rglob("*") if p.suffix.lower() in DEFAULT_EXTENSIONS and p.is_file()), root)


def _to_files(manifest: Manifest, source: str) -> list[NoiseFile]:
    return [NoiseFile(manifest.root / e.path, e.num_samples, f"{source}/{e.path}") for e in manifest.entries]


def index_musan(
    root: str | Path, subsets: Sequence[str] = ("noise",), *, workers: int = 8, report: BadFileReport | None = None
) -> list[NoiseFile]:
    """``<root>/<subset>/**`` audio files of MUSAN (the original code uses ``noise`` only)."""
    root = _require_dir(Path(root).resolve(), "MUSAN")
    rows = []
    for subset in subsets:
        rows += _audio_rows(_require_dir(root / subset, f"MUSAN '{subset}'"), root)
    return _scan(root, rows, "musan", workers, report)


def index_urbansound(
    root: str | Path,
    exclude: Sequence[str] = URBANSOUND_DEFAULT_EXCLUDE,
    *,
    workers: int = 8,
    report: BadFileReport | None = None,
) -> list[NoiseFile]:
    """UrbanSound8K clips listed in ``metadata/UrbanSound8K.csv`` (``audio/fold<fold>/<slice_file_name>``),
    minus the ``exclude`` classes. Rows whose file is missing are reported, not fatal."""
    root = _require_dir(Path(root).resolve(), "UrbanSound8K")
    csv_path = root / URBANSOUND_CSV
    if not csv_path.is_file():
        raise FileNotFoundError(f"UrbanSound8K metadata not found: {csv_path}")
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"fold", "slice_file_name", "class"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{csv_path}: missing column(s) {sorted(missing)}")
        table = list(reader)
    classes = {row["class"] for row in table}
    absent = [c for c in exclude if c not in classes]
    if absent:
        log.warning("UrbanSound8K exclude class(es) %s do not occur in %s", absent, csv_path)
    excluded = set(exclude)
    rows: list[Row] = [
        (f"audio/fold{row['fold']}/{row['slice_file_name']}", {}) for row in table if row["class"] not in excluded
    ]
    return _scan(root, rows, "urbansound", workers, report)


def index_folder(folder: str | Path, *, workers: int = 8, report: BadFileReport | None = None) -> list[NoiseFile]:
    """Every audio file under ``folder`` (recursive): DNS ``noise`` folders, built-in noises, anything."""
    folder = _require_dir(Path(folder).resolve(), "noise")
    return _scan(folder, _audio_rows(folder, folder), folder.name, workers, report)


def _scan(
    root: Path, rows: list[tuple[str, dict[str, str]]], source: str, workers: int, report: BadFileReport | None
) -> list[NoiseFile]:
    if not rows:
        raise DataError(f"no audio files ({', '.join(DEFAULT_EXTENSIONS)}) under {root}")
    manifest, bad = scan_files(root, rows, workers=workers, desc=f"indexing {source} noise", report=report)
    if not manifest.entries:
        raise DataError(f"all {len(rows)} noise files under {root} are unusable: {bad.summary()}")
    return _to_files(manifest, source)


class NoiseBank:
    """Random noise segments drawn from indexed files (see the module docstring)."""

    def __init__(
        self, files: Sequence[NoiseFile], *, cache_mb: float = 0.0, report: BadFileReport | None = None
    ) -> None:
        self.files = list(files)
        self.report = report if report is not None else BadFileReport()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_cap = int(cache_mb * 2**20)
        self._cache_bytes = 0

    @classmethod
    def from_config(
        cls, cfg: NoiseBankConfig, report: BadFileReport | None = None, speech: SpeechSource = synthetic_speech
    ) -> NoiseBank:
        """Index every configured source; ``speech`` (waveforms or a sampler) makes the built-in babble."""
        report = report if report is not None else BadFileReport()
        files: list[NoiseFile] = []
        if cfg.musan is not None:
            files += index_musan(cfg.musan, cfg.musan_subsets, workers=cfg.workers, report=report)
        if cfg.urbansound is not None:
            files += index_urbansound(cfg.urbansound, cfg.urbansound_exclude, workers=cfg.workers, report=report)
        for folder in cfg.noise_dirs:
            files += index_folder(folder, workers=cfg.workers, report=report)
        if cfg.builtin:
            folder = cfg.builtin_dir or Path(tempfile.gettempdir()) / "robustdistiller-builtin-noise"
            written = write_builtin_noises(folder, speech=speech, textures=cfg.builtin_textures)
            # Only what this run wrote: the folder may hold another run's textures.
            folder = folder.resolve()
            files += _scan(folder, _rows([p.resolve() for p in written], folder), folder.name, cfg.workers, report)
        log.info("noise bank: %d files", len(files))
        return cls(files, cache_mb=cfg.cache_mb, report=report)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.files]

    def _decoded(self, index: int) -> np.ndarray:
        """Whole file at 16 kHz, through the LRU cache."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        wav = load_audio(self.files[index].path, SAMPLE_RATE, min_samples=1, allow_silent=True)
        if 0 < wav.nbytes <= self._cache_cap:
            self._cache[index] = wav
            self._cache_bytes += wav.nbytes
            while self._cache_bytes > self._cache_cap:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old.nbytes
        return wav

    def preload(self) -> int:
        """Decode files into the cache while they fit (none when ``cache_mb`` is 0); returns how many
        are cached. Call it before DataLoader workers fork: they then start warm, sharing the decoded
        arrays copy-on-write, instead of each decoding and resampling every file on its first draw.
        Unreadable files are reported and skipped."""
        for index, entry in enumerate(self.files):
            if index in self._cache or self._cache_bytes + 4 * entry.num_samples > self._cache_cap:
                continue  # a file that does not fit would evict one already cached
            try:
                self._decoded(index)
            except AudioError as exc:
                self.report.add(exc.path, exc.reason, exc.detail)
        return len(self._cache)

    def segment(self, index: int, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """``num_samples`` of file ``index``: a random crop if it is longer, else tiled from its start.

        Raises AudioError when the file turns out to be unreadable or shorter than its header said.
        """
        if num_samples <= 0:
            return np.zeros(0, dtype=np.float32)
        entry = self.files[index]
        if entry.num_samples >= num_samples:
            start = int(rng.integers(0, entry.num_samples - num_samples + 1))
            if self._cache_cap == 0:
                return load_audio_segment(entry.path, start, num_samples, SAMPLE_RATE)
            wav = self._decoded(index)
            if wav.shape[0] < start + num_samples:
                raise AudioError(entry.path, "truncated", f"{wav.shape[0]} samples, header said {entry.num_samples}")
            return wav[start : start + num_samples].copy()
        wav = self._decoded(index)
        return tile(wav, num_samples)

    def draw(self, num_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """A segment of a uniformly chosen file and its name. An unreadable file is reported and
        replaced by another draw; it is not removed from the pool, so the generator is consumed the
        same way in every worker (plans stay reproducible) whichever worker met the file first."""
        if not self.files:
            raise ValueError("the noise bank is empty")
        for _ in range(MAX_BAD_RETRIES):
            index = int(rng.integers(len(self.files)))
            try:
                return self.segment(index, num_samples, rng), self.files[index].name
            except AudioError as exc:
                self.report.add(exc.path, exc.reason, exc.detail)
        raise RuntimeError(f"{MAX_BAD_RETRIES} noise draws in a row hit unreadable files: {self.report.summary()}")


def tile(wav: np.ndarray, num_samples: int) -> np.ndarray:
    """``wav`` repeated from its start and cut to ``num_samples`` (the original code's length matching)."""
    if wav.shape[0] == 0:
        raise ValueError("cannot tile an empty waveform")
    reps = -(-num_samples // wav.shape[0])
    return np.tile(wav, reps)[:num_samples].astype(np.float32, copy=False)
