"""The training loop, driven by an objective (:mod:`robustdistiller.train.objective`).

Per optimizer step (``grad_accum`` micro-batches): the corruption plan drawn in a DataLoader worker
is applied on the device; the objective gets the corrupted and the clean batch and returns its
loss (it runs its modules under ``train.precision`` autocast where it chooses); the gradients are
clipped and, unless non-finite, AdamW and the warm-up/linear schedule step. Non-finite steps are
skipped and counted; ``train.max_bad_steps`` of them in a row abort the run.

Under ``torchrun`` each rank trains on its shard; DDP averages the gradients. Only rank 0 logs and
writes checkpoints; all ranks meet at a barrier around each write. SIGINT / SIGTERM finish the
current step, save a checkpoint and return with ``interrupted`` set (the CLI exits with 128 + signal
number: 130 / 143).
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from robustdistiller.atomic import atomic_write
from robustdistiller.augment import CorruptionConfig, CorruptionPolicy, CorruptionResult, build_policy, summarize
from robustdistiller.config import config_changes, flatten, to_dict
from robustdistiller.data import SAMPLE_RATE, BadFileReport
from robustdistiller.errors import ConfigError, DataError
from robustdistiller.models.student import DistillerModel
from robustdistiller.train.checkpointing import (
    checkpoint_path,
    claim_run_folder,
    load_latest_checkpoint,
    prune_checkpoints,
)
from robustdistiller.train.distributed import (
    DistContext,
    all_reduce_flag,
    all_reduce_mean,
    barrier,
    init_distributed,
)
from robustdistiller.train.loader import PlannedBatch, TrainingStream, load_training_manifest
from robustdistiller.train.monitor import PhaseTimer, TrainMonitor
from robustdistiller.train.objective import LoopTools, MicroBatch, Objective, RunSetup
from robustdistiller.train.optim import WarmupLinear, adamw, clip_and_check, warmup_linear_schedule
from robustdistiller.train.recipe import DataSection, OptimSection, TrainSection
from robustdistiller.train.rng import capture_rng_state, restore_rng_state

log = logging.getLogger(__name__)

_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class DistillResult:
    checkpoint: Path | None
    """The last checkpoint written (None only when the run had nothing to do)."""
    step: int
    losses: list[float] = field(default_factory=list)
    """Total loss of every optimizer step this process ran (NaN for skipped non-finite steps)."""
    interrupted: int | None = None
    """Signal number (SIGINT 2, SIGTERM 15) when a signal stopped the run early."""
    bad_steps: int = 0
    bad_files: BadFileReport = field(default_factory=BadFileReport)

    @property
    def exit_code(self) -> int:
        return 128 + self.interrupted if self.interrupted else 0


@dataclass
class StepStats:
    loss: float
    taken: bool
    grad_norm: float
    audio_seconds: float
    scalars: dict[str, Tensor]
    corruption: list[CorruptionResult]


class TrainingDivergedError(RuntimeError):
    """Too many non-finite steps in a row (``train.max_bad_steps``)."""


class NoUsableAudioError(DataError):
    """Every file of a whole epoch failed to load: nothing to train on (a data error, not a bug)."""


class _StopRequest:
    """SIGINT/SIGTERM set a flag the loop checks between steps. A second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received %s: finishing this step, saving a checkpoint, then stopping", signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (e.g. called from a worker thread): no handlers
            self._previous.clear()
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


class LoopRecipe(Protocol):
    """The recipe sections the loop reads (every training recipe has them)."""

    data: DataSection
    corruption: CorruptionConfig
    optim: OptimSection
    train: TrainSection


class Trainer:
    """One training loop driven by an :class:`~robustdistiller.train.objective.Objective`.

    The constructor claims ``train.out_dir``, builds the data stream (cheap checks first: data and
    corruption sources fail before any model is loaded), then calls ``build_objective`` once with
    the :class:`RunSetup`, wraps the objective's modules for DDP, builds one AdamW over its
    parameter groups and the warm-up/linear schedule, and resumes if asked. :meth:`fit` runs the loop.

    Args:
        recipe: the loop settings (``data``, ``corruption``, ``optim``, ``train``); saved as
            ``recipe.yaml`` and compared on resume.
        build_objective: the objective's factory.
        resume: continue from the newest checkpoint in ``train.out_dir``.
        overwrite: replace another run in ``train.out_dir``.
        ctx: the process group (default: from the environment).
        sync_timing: synchronise the device around timed phases (exact phase times, slower).
    """

    def __init__(
        self,
        recipe: LoopRecipe,
        build_objective: Callable[[RunSetup], Objective],
        *,
        resume: bool = False,
        overwrite: bool = False,
        ctx: DistContext | None = None,
        sync_timing: bool = False,
    ) -> None:
        self.recipe = recipe
        self.ctx = ctx or init_distributed(recipe.train.device)
        self.device = self.ctx.device
        self.out_dir = Path(recipe.train.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.ctx.is_main:
            claim_run_folder(self.out_dir, resume=resume, overwrite=overwrite)
        barrier(self.ctx)
        self._check_precision()
        torch.manual_seed(recipe.train.seed)

        self.bad_files = BadFileReport()
        data = recipe.data
        manifest = load_training_manifest(data, self.out_dir, self.ctx, self.bad_files)
        self.policy = self._build_policy()
        self.stream = TrainingStream(
            manifest,
            self.policy,
            max_length=data.max_length,
            batch_size=data.batch_size,
            max_seconds=data.max_seconds,
            num_workers=data.num_workers,
            seed=data.seed,
            ctx=self.ctx,
            finish_corruption=recipe.corruption.finish_in_workers(self.device),
        )
        self.objective = build_objective(RunSetup(self.device, self.ctx, self.out_dir, manifest, self.bad_files))
        self.modules = self.objective.modules()
        self.nets = {name: self._wrap(module) for name, module in self.modules.items()}

        opt = recipe.optim
        self.optimizer = adamw(
            self.objective.param_groups(opt), lr=opt.lr, weight_decay=opt.weight_decay, betas=opt.betas, eps=opt.eps
        )
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.scheduler = warmup_linear_schedule(self.optimizer, opt.total_steps, opt.warmup_proportion)
        fp16 = recipe.train.precision == "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type) if fp16 else None
        self.timer = PhaseTimer(self.device, sync=sync_timing)
        self.tools = LoopTools(self.nets, self.timer.phase, self._autocast)

        self.step = 0
        self.bad_steps = 0
        self.bad_streak = 0
        self.last_checkpoint: Path | None = None
        if resume:
            self._resume()
        else:
            # Per-rank dropout streams; initial weights are equal anyway (DDP broadcasts rank 0's).
            torch.manual_seed(recipe.train.seed + self.ctx.rank)
            if self.ctx.is_main:
                log.info(self.objective.description)
                text = yaml.safe_dump(to_dict(recipe), sort_keys=False).encode()
                atomic_write(self.out_dir / "recipe.yaml", lambda fh: fh.write(text))

    # ------------------------------------------------------------------ set-up helpers
    def _check_precision(self) -> None:
        precision = self.recipe.train.precision
        if precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.precision=fp16 needs a GPU; use bf16 or fp32 on CPU")

    def _build_policy(self) -> CorruptionPolicy | None:
        cfg = self.recipe.corruption
        if cfg.p_clean >= 1.0:
            return None  # baseline DistilHuBERT: the student sees clean audio
        policy = build_policy(cfg, self.bad_files)
        # Decode noise/RIR files once, before DataLoader workers fork, so every worker starts with
        # the shared (copy-on-write) cache instead of decoding from disk on each draw.
        for bank in (policy.noise_bank, policy.rir_bank):
            if bank is not None:
                bank.preload()
        return policy

    def _wrap(self, module: nn.Module) -> nn.Module:
        if not self.ctx.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        # A zero feature_grad_mult freezes the CNN: DDP must then expect parameters without grads.
        unused = isinstance(module, DistillerModel) and module.config.feature_grad_mult == 0
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=unused)

    def _autocast(self) -> Any:
        precision = self.recipe.train.precision
        if precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_AUTOCAST_DTYPES[precision])

    # ------------------------------------------------------------------ one optimizer step
    def train_step(self, batches: list[PlannedBatch]) -> StepStats:
        """Forward/backward over the micro-batches, then clip and (unless non-finite) step."""
        for module in self.modules.values():
            module.train()
        sums: dict[str, Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        results: list[CorruptionResult] = []
        audio_seconds, total = 0.0, 0.0
        for i, item in enumerate(batches):
            with self.timer.phase("corruption"):
                wavs = item.batch.wavs.to(self.device, non_blocking=True)
                lengths = item.batch.lengths.to(self.device, non_blocking=True)
                noisy = wavs
                if self.policy is not None and item.plan is not None:
                    result = self.policy.apply(wavs, lengths, item.plan.to(self.device, non_blocking=True), self.step)
                    noisy = result.noisy
                    results.append(result)
            audio_seconds += float(item.batch.lengths.sum()) / SAMPLE_RATE
            with ExitStack() as sync_guard:
                if i < len(batches) - 1:  # gradients are all-reduced once, on the last micro-batch
                    for net in self.nets.values():
                        if isinstance(net, DistributedDataParallel):
                            sync_guard.enter_context(net.no_sync())
                step_loss = self.objective.loss(MicroBatch(noisy, wavs, lengths, self.step, i), self.tools)
                for name, value in step_loss.scalars.items():
                    sums[name] += value
                loss = step_loss.loss / len(batches)
                with self.timer.phase("backward"):
                    (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += float(loss.detach())
        with self.timer.phase("optimizer"):
            taken, norm = self._optimizer_step(total)
        scalars = {k: v / len(batches) for k, v in sums.items()}
        return StepStats(total, taken, norm, audio_seconds, scalars, results)

    def _optimizer_step(self, loss: float) -> tuple[bool, float]:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm, grads_finite = clip_and_check(self.params, self.recipe.optim.grad_clip)
        # After DDP's all-reduce every rank sees the same gradients, hence the same decision; a
        # non-finite *loss* is local, so it is shared explicitly.
        loss_finite = not all_reduce_flag(self.ctx, not math.isfinite(loss))
        overflow = self.scaler is not None and not grads_finite and loss_finite  # fp16: scaler backs off
        taken = loss_finite and grads_finite
        if taken:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
            else:
                self.optimizer.step()
            self.scheduler.step()
        if self.scaler is not None:
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if taken or overflow:
            self.bad_streak = 0
        else:
            self.bad_steps += 1
            self.bad_streak += 1
            if self.bad_streak >= self.recipe.train.max_bad_steps:
                raise TrainingDivergedError(
                    f"{self.bad_streak} non-finite steps in a row (at step {self.step}; loss {loss}, grad norm "
                    f"{norm}): stopping. Lower optim.lr, use precision=fp32/bf16, or check the data "
                    f"(train.max_bad_steps={self.recipe.train.max_bad_steps})"
                )
        return taken, norm

    # ------------------------------------------------------------------ the loop
    def fit(self) -> DistillResult:
        train, opt = self.recipe.train, self.recipe.optim
        last_step = min(train.stop_at_step or opt.total_steps, opt.total_steps)
        result = DistillResult(checkpoint=self.last_checkpoint, step=self.step, bad_files=self.bad_files)
        monitor = TrainMonitor(
            self.out_dir,
            enabled=self.ctx.is_main,
            total_steps=opt.total_steps,
            start_step=self.step,
            label=self.objective.label,
        )
        window = _Window()
        # TrainingStream.__iter__ is a generator (closed below); its annotation says Iterator
        data = cast(Generator[PlannedBatch, None, None], iter(self.stream))
        try:
            with _StopRequest().installed() as stop:
                while self.step < last_step:
                    step_start = time.perf_counter()
                    with self.timer.phase("data"):
                        batches = [self.next_batch(data) for _ in range(opt.grad_accum)]
                    stats = self.train_step(batches)
                    self.step += 1
                    result.losses.append(stats.loss if stats.taken else math.nan)
                    window.add(stats, time.perf_counter() - step_start)
                    monitor.advance(self.step, stats.loss)
                    if self.step % train.log_every == 0 or self.step == last_step:
                        self._log(monitor, window)
                    stopping = all_reduce_flag(self.ctx, stop.signum is not None)
                    if self.step % train.save_every == 0 or self.step == last_step or stopping:
                        self.save()
                    if stopping:
                        result.interrupted = stop.signum or signal.SIGTERM
                        monitor.message(f"stopped at step {self.step}; resume with --resume")
                        break
        finally:
            # Shut the DataLoader workers down here, on every exit path. Left to interpreter exit,
            # multiprocessing would SIGTERM them (which they ignore, see loader._worker_init) and
            # join them forever: a failed run would never exit.
            data.close()
            monitor.close()
            self._write_bad_files()
        result.step, result.checkpoint = self.step, self.last_checkpoint
        result.bad_steps = self.bad_steps
        if self.ctx.is_main:
            log.info("finished at step %d; last checkpoint %s", self.step, self.last_checkpoint)
        return result

    def _write_bad_files(self) -> None:
        """Summarise and list (``bad_files.tsv``) the skipped files, also when the run failed."""
        if self.ctx.is_main and len(self.bad_files):
            log.warning(self.bad_files.summary())
            self.bad_files.write(self.out_dir / "bad_files.tsv")

    def next_batch(self, data: Iterator[PlannedBatch]) -> PlannedBatch:
        """The next non-empty batch; files that failed to load are added to the bad-file report.

        Raises:
            NoUsableAudioError: a whole epoch of batches in a row had no readable file.
        """
        for _ in range(len(self.stream.sampler) + 1):
            item = next(data)
            self.bad_files.extend(item.batch.skipped)
            if len(item.batch):
                return item
        raise NoUsableAudioError(
            f"no file of the training data could be read ({len(self.bad_files)} bad, listed in "
            f"{self.out_dir / 'bad_files.tsv'}); check data.manifests / data.root"
        )

    def _log(self, monitor: TrainMonitor, window: _Window) -> None:
        scalars = window.flush(self.ctx)
        scalars["lr"] = float(self.scheduler.get_last_lr()[0])  # LambdaLR rates are floats
        scalars["bad_steps"] = float(self.bad_steps)
        timing = self.timer.reset()
        step_time = sum(timing.values())
        if step_time > 0:
            scalars["time/data_wait_fraction"] = timing.get("data", 0.0) / step_time
            for name, seconds in timing.items():
                if name != "data":
                    scalars[f"time/{name}_fraction"] = seconds / step_time
        monitor.log(self.step, scalars)

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Path:
        """Write ``states-{step}.ckpt`` on rank 0 (all ranks take part: RNG states are gathered)."""
        rng = _gather(self.ctx, capture_rng_state())
        barrier(self.ctx)
        path = checkpoint_path(self.out_dir, self.step)
        if self.ctx.is_main:
            loop_state: dict[str, Any] = {
                "Optimizer": self.optimizer.state_dict(),
                "Scheduler": self.scheduler.state_dict(),
                "Resume": {
                    "data": self.stream.state_dict(),
                    "rng": rng,
                    "world_size": self.ctx.world_size,
                    "bad_steps": self.bad_steps,
                    "bad_streak": self.bad_streak,
                    "scaler": self.scaler.state_dict() if self.scaler else None,
                    "corruption": self.policy.state_dict() if self.policy else None,
                    "recipe": to_dict(self.recipe),
                },
            }
            self.objective.save_checkpoint(path, self.step, loop_state)
            prune_checkpoints(self.out_dir, self.recipe.train.keep_last)
        barrier(self.ctx)
        self.last_checkpoint = path
        return path

    def _resume(self) -> None:
        found = load_latest_checkpoint(self.out_dir)
        if found is None:
            raise FileNotFoundError(f"--resume: no checkpoint with resume state in {self.out_dir}")
        path, state = found
        resume = state["Resume"]
        self._check_resume_changes(resume.get("recipe") or {}, path, int(state["Step"]))
        self.objective.load_checkpoint(state, path)
        recipe_lrs = [float(lr) for lr in self.scheduler.base_lrs]  # the peak rates (group["lr"] is warm-up scaled)
        self.optimizer.load_state_dict(state["Optimizer"])
        self.scheduler.load_state_dict(state["Scheduler"])
        self._apply_schedule(recipe_lrs)
        if self.scaler is not None and resume.get("scaler"):
            self.scaler.load_state_dict(resume["scaler"])
        if self.policy is not None and resume.get("corruption"):
            self.policy.load_state_dict(resume["corruption"])
        self.step = int(state["Step"])
        self.bad_steps, self.bad_streak = int(resume["bad_steps"]), int(resume["bad_streak"])
        if resume["world_size"] == self.ctx.world_size:
            self.stream.load_state_dict(resume["data"])
            restore_rng_state(resume["rng"][self.ctx.rank])
        else:
            # Batches are sharded by world size, so positions do not carry over: start the next epoch.
            log.warning(
                "resuming with %d processes instead of %d: data restarts at the next epoch",
                self.ctx.world_size,
                resume["world_size"],
            )
            self.stream.epoch = int(resume["data"]["epoch"]) + 1
            torch.manual_seed(self.recipe.train.seed + self.ctx.rank + self.step)
        self.last_checkpoint = path
        if self.ctx.is_main:
            log.info("resumed from %s (step %d)", path, self.step)

    def _check_resume_changes(self, saved: dict[str, Any], path: Path, step: int) -> None:
        """Refuse a resume whose recipe differs from the run's in anything but RESUMABLE_CHANGES,
        naming each difference; log the changes that will be applied."""
        # Keys the saved recipe lacks come from a newer version of this package: not a change.
        saved_keys = flatten(saved)
        changes = {k: v for k, v in config_changes(saved, to_dict(self.recipe)).items() if k in saved_keys}
        refused = {k: v for k, v in changes.items() if k not in RESUMABLE_CHANGES}
        if refused:
            listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
            raise ResumeMismatchError(
                f"--resume: the recipe differs from the run in {self.out_dir} ({path.name}) in settings a "
                f"resume cannot change: {listed}. Set them back, or start a new run (another "
                f"train.out_dir, or --overwrite). Changeable on resume: {', '.join(sorted(RESUMABLE_CHANGES))}"
            )
        total = self.recipe.optim.total_steps
        if total < step:
            raise ResumeMismatchError(
                f"--resume: optim.total_steps={total} is below the run's step {step} ({path}); "
                f"give optim.total_steps >= {step}"
            )
        for key, (old, new) in changes.items():
            if self.ctx.is_main:
                log.info("resuming with %s changed: %r -> %r", key, old, new)

    def _apply_schedule(self, recipe_lrs: list[float]) -> None:
        """After loading a checkpoint's optimizer and scheduler: the recipe's learning rates and
        ``optim.total_steps`` replace the saved ones (which ``load_state_dict`` restored), so a resume
        that changes them continues the schedule from the current step instead of ignoring them."""
        total = self.recipe.optim.total_steps
        for schedule in self.scheduler.lr_lambdas:
            if isinstance(schedule, WarmupLinear):
                schedule.total_steps = total
        self.scheduler.base_lrs = list(recipe_lrs)
        last = self.scheduler.last_epoch
        for group, base, schedule in zip(self.optimizer.param_groups, recipe_lrs, self.scheduler.lr_lambdas):
            group["initial_lr"] = base
            group["lr"] = base * schedule(last)
        # get_last_lr() reports what the next step uses; LambdaLR only refreshes it in step().
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]


# Settings a resumed run may change: the schedule (applied: see _apply_schedule) and run control.
# Any other difference from the run's recipe (data, model, loss, corruption, optimizer settings)
# would silently mix two experiments, so --resume refuses it.
RESUMABLE_CHANGES = frozenset(
    {
        "optim.lr",
        "optim.total_steps",
        "train.stop_at_step",
        "train.save_every",
        "train.log_every",
        "train.keep_last",
        "train.max_bad_steps",
        "train.device",
        "data.num_workers",
        "data.root",
    }
)


class ResumeMismatchError(ConfigError):
    """``--resume`` with recipe changes a resume cannot apply."""


class _Window:
    """Running sums between two log lines."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, Tensor] = defaultdict(lambda: torch.zeros(()))
        self.corruption: list[CorruptionResult] = []
        self.steps = self.taken = 0
        self.audio_seconds = self.wall = self.loss = self.grad_norm = 0.0

    def add(self, stats: StepStats, wall: float) -> None:
        self.steps += 1
        self.wall += wall
        self.audio_seconds += stats.audio_seconds
        self.corruption.extend(stats.corruption)
        if stats.taken:
            self.taken += 1
            self.loss += stats.loss
            self.grad_norm += stats.grad_norm
            for name, value in stats.scalars.items():
                self.sums[name] = self.sums[name] + value.detach().float().cpu()

    def flush(self, ctx: DistContext) -> dict[str, float]:
        taken = max(self.taken, 1)
        names = sorted(self.sums)
        local = torch.tensor(
            [self.loss / taken, self.audio_seconds] + [float(self.sums[n]) / taken for n in names],
            dtype=torch.float64,
            device=ctx.device,
        )
        mean = all_reduce_mean(ctx, local).cpu().tolist()
        out = {"loss/total": mean[0], "grad_norm": self.grad_norm / taken}
        out.update({name: value for name, value in zip(names, mean[2:])})
        # Audio of every rank over this rank's wall time: the job's audio-hours per wall-clock hour.
        out["throughput/audio_hours_per_hour"] = mean[1] * ctx.world_size / max(self.wall, 1e-9)
        if self.corruption:
            for name, value in summarize(self.corruption).items():
                if not math.isnan(value):
                    out[f"corruption/{name}"] = value
        self.reset()
        return out


def _gather(ctx: DistContext, obj: Any) -> list[Any]:
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(out, obj)
    return out
