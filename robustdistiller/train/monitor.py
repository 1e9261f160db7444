"""What a training run reports: per-phase step timing, TensorBoard scalars, a JSONL log, a progress bar.

Only the main rank writes; other ranks get a monitor whose writers are disabled but whose timer
still works (the timing feeds the throughput numbers every rank computes the same way).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from robustdistiller.atomic import atomic_write

# Step phases in the order they run; "data" is time spent waiting for the DataLoader.
PHASES: tuple[str, ...] = ("data", "corruption", "teacher", "student", "enhancement", "backward", "optimizer")


class PhaseTimer:
    """Accumulates wall time per phase. ``sync`` waits for queued GPU work at each phase boundary,
    which makes the split exact at a small cost (used by the benchmark; off in normal training,
    where only the data-wait fraction is reported and needs no sync)."""

    def __init__(self, device: torch.device, sync: bool = False) -> None:
        self.sync = sync and device.type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            self.totals[name] += time.perf_counter() - start

    def reset(self) -> dict[str, float]:
        """Return the totals since the last reset and start again."""
        out = dict(self.totals)
        self.totals.clear()
        return out


class TrainMonitor:
    """TensorBoard + ``log.jsonl`` + tqdm bar for the main rank; a silent no-op elsewhere."""

    def __init__(
        self, out_dir: Path, *, enabled: bool, total_steps: int, start_step: int, label: str = "distill"
    ) -> None:
        self.enabled = enabled
        self.log_path = out_dir / "log.jsonl"
        self._writer = None
        self._bar = None
        if enabled:
            _drop_rows_after(self.log_path, start_step)  # a resumed run rewrites what followed
            # Imported lazily: tensorboard pulls in a lot and non-main ranks never need it.
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=start_step + 1)
            self._bar = tqdm(total=total_steps, initial=start_step, desc=label, unit="step", dynamic_ncols=True)

    def advance(self, step: int, loss: float | None) -> None:
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            if loss is not None:
                self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def log(self, step: int, scalars: Mapping[str, float], texts: Mapping[str, str] | None = None) -> None:
        if not self.enabled:
            return
        assert self._writer is not None
        for name, value in scalars.items():
            self._writer.add_scalar(name, value, step)
        for name, text in (texts or {}).items():
            self._writer.add_text(name, text, step)
        with self.log_path.open("a") as fh:
            fh.write(json.dumps({"step": step, **scalars, **(texts or {})}) + "\n")

    def message(self, text: str) -> None:
        """Print above the progress bar without breaking it."""
        if self.enabled:
            tqdm.write(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()


def _drop_rows_after(path: Path, step: int) -> None:
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    text = "".join(line + "\n" for line in keep)
    atomic_write(path, lambda fh: fh.write(text.encode()))


def read_log(out_dir: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``log.jsonl`` (one per logged step)."""
    path = Path(out_dir) / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
