"""Room impulse responses: measured RIR folders and simulated shoebox rooms, each with its RT60.

Real RIRs come from any folder (recursive): SLR28 ``RIRS_NOISES/{real_rirs_isotropic_noises,
simulated_rirs}``, the DNS ``impulse_responses`` archive, your own recordings. SLR28 mixes noise
recordings into those folders (``*noise*`` files, ``pointsource_noises/``), so files whose name
contains "noise" and the ``pointsource_noises`` folder are left out. They are loaded lazily (SLR28
alone holds ~60k files) at 16 kHz; a multi-channel RIR gives one random channel per draw, as in the
original RobustDistiller code.

Simulated RIRs come from pyroomacoustics shoebox rooms (see :func:`simulate_rirs`), generated once
and cached on disk in a folder keyed by the generation parameters and seed.

Every RIR handed out carries its measured RT60 (``augment/rt60.py``) and a name. Post-processing
options (``align_direct_path``, ``normalize``, ``max_seconds``) default to the original code's raw RIRs.
Raw RIRs delay the speech: a simulated room by the source distance / 343 m/s plus pyroomacoustics'
40-sample fractional-delay offset (105-365 samples, 7-23 ms, in the demo's 16 training rooms), i.e.
up to about one 20 ms frame against teacher targets computed on the clean audio and 1-2 hops against
a clean enhancement target. ``align_direct_path`` removes that shift; the levels need no fix (the
same rooms change the speech level by -8 to +6 dB).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from robustdistiller.atomic import atomic_write
from robustdistiller.augment.rt60 import decay_length, measure_rt60
from robustdistiller.data.audio import SAMPLE_RATE, AudioError, load_audio_channels
from robustdistiller.data.manifest import DEFAULT_EXTENSIONS, Row, scan_files
from robustdistiller.data.report import BadFileReport
from robustdistiller.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Normalize = Literal["none", "energy", "peak"]
MAX_BAD_RETRIES = 20
# Bump when the simulation recipe changes, so old caches are not reused.
SIMULATION_VERSION = 1
SPEED_OF_SOUND = 343.0  # pyroomacoustics' default
MAX_IMAGE_ORDER = 100


@dataclass
class SimulatedRIRConfig:
    """pyroomacoustics shoebox RIRs; ``count: 0`` disables simulation."""

    count: int = 0
    rt60_range: tuple[float, float] = (0.2, 1.2)  # target RT60 drawn uniformly in this range (s)
    cache_dir: Path | None = None  # default: <tmp>/robustdistiller-rirs
    seed: int = 0

    def validate(self) -> None:
        lo, hi = self.rt60_range
        if self.count < 0:
            raise ConfigError(f"count must be >= 0, got {self.count}")
        if not 0.05 <= lo <= hi <= 5.0:
            raise ConfigError(f"rt60_range must satisfy 0.05 <= low <= high <= 5 s, got {self.rt60_range}")


@dataclass
class RIRBankConfig:
    rir_dirs: list[Path] = field(default_factory=list)
    simulate_rirs: SimulatedRIRConfig = field(default_factory=SimulatedRIRConfig)
    align_direct_path: bool = False  # drop the samples before the peak (original: False)
    normalize: Normalize = "none"  # "energy": unit L2 norm, "peak": unit max |h| (original: none)
    max_seconds: float | None = None  # truncate longer RIRs (original: keep whole)
    cache_mb: float = 64.0  # per-process LRU cache of decoded RIR files
    workers: int = 8

    def validate(self) -> None:
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError(f"max_seconds must be > 0, got {self.max_seconds}")
        if self.cache_mb < 0:
            raise ConfigError(f"cache_mb must be >= 0, got {self.cache_mb}")


@dataclass(frozen=True)
class RIR:
    samples: np.ndarray  # float32 mono at 16 kHz
    rt60: float  # measured, seconds (NaN if the RIR decays less than 25 dB)
    name: str


@dataclass(frozen=True)
class RIRFile:
    path: Path
    name: str


def _is_noise_path(rel: Path) -> bool:
    # SLR28's folder names say "noises" (RIRS_NOISES, real_rirs_isotropic_noises) but hold RIRs:
    # only file names and the pointsource_noises folder mark noise recordings.
    return "noise" in rel.name.lower() or "pointsource_noises" in rel.parts[:-1]


def index_rir_folder(folder: str | Path, *, workers: int = 8, report: BadFileReport | None = None) -> list[RIRFile]:
    """Every RIR audio file under ``folder`` (recursive), noise recordings excluded (module docstring)."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"RIR folder not found: {root}")
    rows: list[Row] = [
        (p.relative_to(root).as_posix(), {})
        for p in sorted(root.rglob("*"))
        if p.suffix.lower() in DEFAULT_EXTENSIONS and p.is_file() and not _is_noise_path(p.relative_to(root))
    ]
    if not rows:
        raise DataError(f"no RIR audio files ({', '.join(DEFAULT_EXTENSIONS)}) under {root}")
    manifest, bad = scan_files(
        root, rows, workers=workers, min_samples=1, desc=f"indexing RIRs in {root.name}", report=report
    )
    if not manifest.entries:
        raise DataError(f"all {len(rows)} RIR files under {root} are unusable: {bad.summary()}")
    return [RIRFile(root / e.path, f"{root.name}/{e.path}") for e in manifest.entries]


def _room_geometry(target_rt60: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Room dimensions and source/microphone positions for a target RT60.

    A random room (3-10 m long, width 60-100 % of the length, 2.5-4 m high) is scaled uniformly so
    that (1) the Sabine absorption it needs stays within [0.08, 0.9] (long RT60s in tiny rooms would
    need near-perfect reflectors, short ones in halls absorption above 1) and (2) the image-source
    order pyroomacoustics derives, ``c·RT60 / R_min``, stays under ``MAX_IMAGE_ORDER`` (the image
    count grows with its cube: order 250 takes minutes, 100 about a second). Sabine absorption grows
    linearly with a uniform scale, the order falls inversely.
    """
    length = rng.uniform(3.0, 10.0)
    dims = np.array([length, length * rng.uniform(0.6, 1.0), rng.uniform(2.5, 4.0)])
    absorption = _sabine_absorption(dims, target_rt60)
    dims = dims * float(np.clip(absorption, 0.08, 0.9) / absorption)
    r_min = min(a * b / np.hypot(a, b) for a, b in ((dims[0], dims[1]), (dims[0], dims[2]), (dims[1], dims[2])))
    needed = SPEED_OF_SOUND * target_rt60 / (MAX_IMAGE_ORDER + 1)
    if r_min < needed:
        dims = dims * (needed / r_min)
    margin = 0.5
    for _ in range(100):
        src, mic = rng.uniform(margin, dims - margin), rng.uniform(margin, dims - margin)
        if np.linalg.norm(src - mic) >= 1.0:
            break
    return dims, src, mic


def _sabine_absorption(dims: np.ndarray, rt60: float) -> float:
    volume = float(np.prod(dims))
    surface = 2.0 * (dims[0] * dims[1] + dims[0] * dims[2] + dims[1] * dims[2])
    return 24.0 * np.log(10.0) * volume / (SPEED_OF_SOUND * surface * rt60)


def _simulate_room(dims: np.ndarray, src: np.ndarray, mic: np.ndarray, rt60: float, sample_rate: int) -> np.ndarray:
    import pyroomacoustics as pra  # heavy import, only needed when simulating

    absorption, max_order = pra.inverse_sabine(rt60, dims, c=SPEED_OF_SOUND)
    # The corrected second pass may ask for a little more than the geometry was sized for.
    max_order = min(max_order, int(1.3 * MAX_IMAGE_ORDER))
    room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption), max_order=max_order)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    return np.asarray(room.rir[0][0], dtype=np.float64)


def simulate_rir(
    target_rt60: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE
) -> tuple[np.ndarray, float]:
    """One shoebox RIR aiming at ``target_rt60``; returns (float32 RIR, measured RT60).

    Sabine's formula assumes a diffuse field, which a shoebox image-source model is not, so the first
    room often decays 10-50 % slower than asked; it is simulated again once with the target corrected
    by the measured ratio, which brings it within ~10 %. The RIR is cut where its energy decay
    reaches -60 dB (the rest is inaudible, and it keeps FFT sizes down).
    """
    dims, src, mic = _room_geometry(target_rt60, rng)
    rir = _simulate_room(dims, src, mic, target_rt60, sample_rate)
    measured = measure_rt60(rir, sample_rate)
    if np.isfinite(measured) and abs(measured / target_rt60 - 1.0) > 0.05:
        corrected = float(np.clip(target_rt60**2 / measured, 0.5 * target_rt60, 2.0 * target_rt60))
        try:
            second = _simulate_room(dims, src, mic, corrected, sample_rate)
        except ValueError:  # the corrected RT60 needs absorption > 1 in this room: keep the first
            second = None
        if second is not None:
            rir, measured = second, measure_rt60(second, sample_rate)
    rir = rir[: max(1, decay_length(rir, 60.0))]
    return rir.astype(np.float32), measured


def simulate_rirs(cfg: SimulatedRIRConfig, sample_rate: int = SAMPLE_RATE) -> list[RIR]:
    """``cfg.count`` RIRs; room ``i`` uses the generator seeded by (seed, i), so counts extend stably."""
    out = []
    for i in tqdm(range(cfg.count), desc="simulating RIRs", unit="room", disable=None):
        rng = np.random.default_rng([cfg.seed, i])
        target = float(rng.uniform(*cfg.rt60_range))
        rir, rt60 = simulate_rir(target, rng, sample_rate)
        out.append(RIR(rir, rt60, f"pra/{cfg.seed}/{i:05d}_rt{target:.2f}"))
    return out


def simulation_cache_dir(cfg: SimulatedRIRConfig, sample_rate: int = SAMPLE_RATE) -> Path:
    """``<cache_dir>/pra-<hash>``: the hash covers every parameter that changes the RIRs."""
    key = {
        "count": cfg.count,
        "rt60_range": list(cfg.rt60_range),
        "seed": cfg.seed,
        "sample_rate": sample_rate,
        "version": SIMULATION_VERSION,
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    base = cfg.cache_dir or Path(tempfile.gettempdir()) / "robustdistiller-rirs"
    return Path(base) / f"pra-{digest}"


def load_or_simulate(cfg: SimulatedRIRConfig, sample_rate: int = SAMPLE_RATE) -> list[RIR]:
    """Simulated RIRs from the cache folder, simulating (and caching) them on the first run."""
    folder = simulation_cache_dir(cfg, sample_rate)
    path = folder / "rirs.npz"
    if path.is_file():
        with np.load(path) as data:
            offsets, flat = data["offsets"], data["samples"]
            rirs = [
                RIR(flat[offsets[i] : offsets[i + 1]].copy(), float(data["rt60"][i]), str(data["names"][i]))
                for i in range(len(offsets) - 1)
            ]
        if len(rirs) == cfg.count:
            log.info("reusing %d simulated RIRs from %s", len(rirs), folder)
            return rirs
        log.warning("simulated RIR cache %s holds %d RIRs, expected %d: simulating again", path, len(rirs), cfg.count)
    log.info("simulating %d shoebox RIRs (RT60 %.2f-%.2f s) into %s", cfg.count, *cfg.rt60_range, folder)
    rirs = simulate_rirs(cfg, sample_rate)
    folder.mkdir(parents=True, exist_ok=True)
    offsets = np.cumsum([0] + [r.samples.size for r in rirs])
    samples = np.concatenate([r.samples for r in rirs]) if rirs else np.zeros(0, np.float32)
    rt60, names = np.array([r.rt60 for r in rirs]), np.array([r.name for r in rirs])
    # a concurrent run never reads a half-written cache
    atomic_write(path, lambda fh: np.savez(fh, samples=samples, offsets=offsets, rt60=rt60, names=names))
    params = json.dumps(asdict(cfg) | {"sample_rate": sample_rate}, default=str, indent=1)
    atomic_write(folder / "params.json", lambda fh: fh.write(params.encode()))
    return rirs


class RIRBank:
    """Random RIRs from files (lazy, cached) and/or in-memory (simulated) RIRs."""

    def __init__(
        self,
        files: Sequence[RIRFile] = (),
        rirs: Sequence[RIR] = (),
        *,
        align_direct_path: bool = False,
        normalize: Normalize = "none",
        max_seconds: float | None = None,
        cache_mb: float = 64.0,
        report: BadFileReport | None = None,
    ) -> None:
        if normalize not in ("none", "energy", "peak"):
            raise ValueError(f"normalize must be none, energy or peak, got {normalize!r}")
        self.files = list(files)
        self.rirs = list(rirs)
        self.align_direct_path = align_direct_path
        self.normalize = normalize
        self.max_samples = None if max_seconds is None else max(1, int(round(max_seconds * SAMPLE_RATE)))
        self.report = report if report is not None else BadFileReport()
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_cap = int(cache_mb * 2**20)
        self._cache_bytes = 0

    @classmethod
    def from_config(cls, cfg: RIRBankConfig, report: BadFileReport | None = None) -> RIRBank:
        report = report if report is not None else BadFileReport()
        files: list[RIRFile] = []
        for folder in cfg.rir_dirs:
            files += index_rir_folder(folder, workers=cfg.workers, report=report)
        simulated = load_or_simulate(cfg.simulate_rirs) if cfg.simulate_rirs.count > 0 else []
        log.info("RIR bank: %d files, %d simulated", len(files), len(simulated))
        return cls(
            files,
            simulated,
            align_direct_path=cfg.align_direct_path,
            normalize=cfg.normalize,
            max_seconds=cfg.max_seconds,
            cache_mb=cfg.cache_mb,
            report=report,
        )

    def __len__(self) -> int:
        return len(self.files) + len(self.rirs)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.files] + [r.name for r in self.rirs]

    def _decoded(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """File ``index`` as ([channels, samples] at 16 kHz, RT60 per channel), through the LRU cache:
        the RT60 is measured once per file, not at every draw."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        # Channels kept apart: a multi-channel RIR gives one random microphone per draw.
        channels = load_audio_channels(self.files[index].path, SAMPLE_RATE, min_samples=1)
        entry = channels, np.array([measure_rt60(c, SAMPLE_RATE) for c in channels])
        if channels.nbytes <= self._cache_cap:
            self._cache[index] = entry
            self._cache_bytes += channels.nbytes
            while self._cache_bytes > self._cache_cap:
                _, (old, _) = self._cache.popitem(last=False)
                self._cache_bytes -= old.nbytes
        return entry

    def preload(self) -> int:
        """Decode RIR files into the cache until it is full (all of them if they fit); returns how
        many are cached. Call it before DataLoader workers fork so they start with a warm cache
        (shared copy-on-write). Unreadable files are reported and skipped."""
        for index in range(len(self.files)):
            if self._cache_bytes >= self._cache_cap:
                break
            try:
                self._decoded(index)
            except AudioError as exc:
                self.report.add(exc.path, exc.reason, exc.detail)
        return len(self._cache)

    def get(self, index: int, rng: np.random.Generator) -> RIR:
        """RIR ``index`` (a random channel of a multi-channel file), post-processed, with its RT60.

        RT60 is measured before ``max_seconds`` truncation: it labels the room, not the cut.
        """
        if index >= len(self.files):
            raw = self.rirs[index - len(self.files)]
            return self._finish(raw.samples, raw.rt60, raw.name)
        channels, rt60 = self._decoded(index)
        name = self.files[index].name
        channel = 0
        if channels.shape[0] > 1:
            channel = int(rng.integers(channels.shape[0]))
            name = f"{name}#ch{channel}"
        return self._finish(channels[channel], float(rt60[channel]), name)

    def _finish(self, samples: np.ndarray, rt60: float, name: str) -> RIR:
        if self.align_direct_path:
            samples = samples[int(np.argmax(np.abs(samples))) :]
        if self.max_samples is not None:
            samples = samples[: self.max_samples]
        if self.normalize == "energy":
            samples = samples / max(float(np.linalg.norm(samples)), 1e-12)
        elif self.normalize == "peak":
            samples = samples / max(float(np.max(np.abs(samples))), 1e-12)
        return RIR(np.asarray(samples, dtype=np.float32), rt60, name)

    def draw(self, rng: np.random.Generator) -> RIR:
        """A uniformly chosen RIR. An unreadable file is reported and replaced by another draw (kept in
        the pool so that every worker consumes the generator the same way)."""
        if len(self) == 0:
            raise ValueError("the RIR bank is empty")
        for _ in range(MAX_BAD_RETRIES):
            index = int(rng.integers(len(self)))
            try:
                return self.get(index, rng)
            except AudioError as exc:
                self.report.add(exc.path, exc.reason, exc.detail)
        raise RuntimeError(f"{MAX_BAD_RETRIES} RIR draws in a row hit unreadable files: {self.report.summary()}")
