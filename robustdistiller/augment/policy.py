"""Corruption policy: which rows get noise, reverberation, both, or stay clean, and how.

The work is split so that the trainer never waits on files:

* :meth:`CorruptionPolicy.plan` (DataLoader workers, numpy, file-bound) draws each row's operation,
  reads and crops/tiles its noise segment, picks its RIR, and draws two uniform numbers per row.
* :meth:`CorruptionPolicy.apply` (training device, batched torch) turns the uniforms into an SNR and a
  reverb decision *for the current optimizer step* and does the exact arithmetic
  (``augment/mixing.py``). The curriculum therefore advances per optimizer step, and a resumed run
  recomputes the same corruption for the same (seed, epoch, batch index, step).
* Without a curriculum nothing depends on the step, so a worker can also do the arithmetic
  (``plan(wavs=...)``, chosen by ``apply_on``); ``apply`` then only hands the finished batch over.
  That is the default when training on CPU: the trainer never waits for a convolution.

Original behaviour kept (RobustDistiller's ``robustness.py``): four operations with probability 1/4,
integer SNR uniform in [0, 20] dB, 30 % white Gaussian noise, noise before reverb, raw RIRs, the
output truncated to the input length, curriculum ``inc_steps`` (SNR floor from ``snr_high`` down to
``snr_low``, reverb probability 0 -> 1). Fixed: SNR measured on the unpadded signal, padding stays
zero, curriculum per optimizer step.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

from robustdistiller.augment.builtin import COLOR_EXPONENTS, SpeechSource, colored_noise, synthetic_speech
from robustdistiller.augment.mixing import mix_at_snr, reverberate
from robustdistiller.augment.noise import NoiseBank, NoiseBankConfig
from robustdistiller.augment.rir import RIR, RIRBank, RIRBankConfig
from robustdistiller.config import to_dict
from robustdistiller.data.report import BadFileReport
from robustdistiller.data.shared import SmallTensorsByValue, batch_zeros

log = logging.getLogger(__name__)

OPS: tuple[str, ...] = ("clean", "noise", "reverb", "noise+reverb")
APPLY_ON: tuple[str, ...] = ("auto", "workers", "device")
CLEAN, NOISE, REVERB, NOISE_REVERB = range(4)
_WITH_NOISE = (NOISE, NOISE_REVERB)
_WITH_REVERB = (REVERB, NOISE_REVERB)


@dataclass
class CorruptionConfig:
    p_clean: float = 0.25
    p_noise: float = 0.25
    p_reverb: float = 0.25
    p_noise_reverb: float = 0.25  # noise first, then reverb (original order)
    snr_low: int = 0  # SNR is an integer drawn uniformly in [snr_low, snr_high] dB, inclusive
    snr_high: int = 20
    white_noise_prob: float = 0.3  # share of noise events using white Gaussian noise instead of a file
    colored_noise_prob: float = 0.0  # share using generated coloured noise (one of ``colors``)
    colors: list[str] = field(default_factory=lambda: ["pink", "brown"])
    inc_steps: int = -1  # curriculum length in optimizer steps; <= 0 = off
    # Where the arithmetic runs: "workers" (DataLoader workers finish the batch; needs inc_steps <= 0),
    # "device" (the training device, batched), "auto" (workers when training on CPU without a
    # curriculum, else device: cuFFT is cheaper than the worker's CPU time).
    apply_on: str = "auto"
    noise: NoiseBankConfig = field(default_factory=NoiseBankConfig)
    rir: RIRBankConfig = field(default_factory=RIRBankConfig)

    @property
    def has_curriculum(self) -> bool:
        """Whether the corruption depends on the optimizer step (``inc_steps`` > 0)."""
        return self.inc_steps > 0

    def finish_in_workers(self, device: torch.device | str) -> bool:
        """Whether DataLoader workers should finish the corruption for a trainer on ``device``."""
        if self.apply_on == "auto":
            return torch.device(device).type == "cpu" and not self.has_curriculum
        return self.apply_on == "workers"

    @property
    def op_probs(self) -> tuple[float, float, float, float]:
        return (self.p_clean, self.p_noise, self.p_reverb, self.p_noise_reverb)

    def validate(self) -> None:
        if any(p < 0 for p in self.op_probs) or not math.isclose(sum(self.op_probs), 1.0, abs_tol=1e-6):
            raise ValueError(
                f"p_clean + p_noise + p_reverb + p_noise_reverb must be 1 (each >= 0), got {self.op_probs}"
            )
        if self.snr_low > self.snr_high:
            raise ValueError(f"snr_low ({self.snr_low}) must be <= snr_high ({self.snr_high})")
        synth = (self.white_noise_prob, self.colored_noise_prob)
        if any(not 0 <= p <= 1 for p in synth) or sum(synth) > 1 + 1e-9:
            raise ValueError(f"white_noise_prob + colored_noise_prob must lie in [0, 1], got {synth}")
        if self.apply_on not in APPLY_ON:
            raise ValueError(f"apply_on must be one of {APPLY_ON}, got {self.apply_on!r}")
        if self.apply_on == "workers" and self.has_curriculum:
            raise ValueError(
                "apply_on=workers needs inc_steps <= 0: the curriculum depends on the optimizer "
                "step, which DataLoader workers do not know; use apply_on=device or auto"
            )
        bad = [c for c in self.colors if c not in COLOR_EXPONENTS]
        if bad or (self.colored_noise_prob > 0 and not self.colors):
            raise ValueError(f"colors must be a non-empty subset of {sorted(COLOR_EXPONENTS)}, got {self.colors}")


def curriculum(step: int, inc_steps: int, snr_low: int, snr_high: int) -> tuple[int, float]:
    """(SNR floor, reverb probability) at optimizer ``step``.

    As the original (``round(linspace(high, low, inc_steps))[step]`` and ``linspace(0, 1, inc_steps)``,
    last value afterwards), but indexed by optimizer step. Off (``inc_steps <= 0``): (snr_low, 1).
    """
    if inc_steps <= 0:
        return snr_low, 1.0
    frac = 1.0 if inc_steps == 1 else min(max(step, 0) / (inc_steps - 1), 1.0)
    # np.round rounds half to even, like torch.round in the original.
    return int(np.round(snr_high + (snr_low - snr_high) * frac)), frac


def plan_rng(seed: int, epoch: int, batch_index: int) -> np.random.Generator:
    """The generator for one batch's plan: same (seed, epoch, batch index), same plan, in any worker."""
    return np.random.default_rng([seed, epoch, batch_index])


@dataclass
class CorruptionPlan(SmallTensorsByValue):
    """Everything file-bound about a batch's corruption, drawn in a worker. ``noise`` has one row per
    batch row whose op adds noise, in batch order (that set does not depend on the step), holding
    its segment on the first ``lengths[b]`` samples; ``rirs`` are zero-padded to the longest; the SNR
    is drawn from ``u_snr`` at apply time (the curriculum's floor depends on the step)."""

    BY_VALUE = ("ops", "rir_lengths", "rt60", "u_snr", "u_reverb")

    ops: torch.Tensor  # int64 [B], index into OPS, as drawn
    noise: torch.Tensor | None  # float32 [rows with noise, L]; None once finished (mixed into ``noisy``)
    rirs: torch.Tensor  # float32 [B, Lr]
    rir_lengths: torch.Tensor  # int64 [B] (0 where no RIR)
    rt60: torch.Tensor  # float32 [B] (NaN where no RIR)
    u_snr: torch.Tensor  # float64 [B] uniform in [0, 1)
    u_reverb: torch.Tensor  # float64 [B] uniform in [0, 1)
    noise_names: list[str]
    rir_names: list[str]
    # Only when planned with ``wavs`` (no curriculum): the finished batch, corrupted in the worker.
    noisy: torch.Tensor | None = None  # float32 [B, L]

    def __len__(self) -> int:
        return int(self.ops.shape[0])

    @property
    def num_samples(self) -> int:
        """L, the padded length of the batch this plan is for."""
        rows = self.noisy if self.noisy is not None else self.noise
        assert rows is not None
        return int(rows.shape[1])

    def _map(self, fn: Any) -> CorruptionPlan:
        return replace(
            self,
            **{
                f.name: fn(getattr(self, f.name))
                for f in fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)
            },
        )

    def pin_memory(self) -> CorruptionPlan:
        """Called by ``DataLoader(pin_memory=True)`` on batches that contain a plan."""
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> CorruptionPlan:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))


@dataclass
class CorruptionResult:
    noisy: torch.Tensor  # [B, L], padding zero
    ops: list[str]  # operation actually applied per row (a curriculum may skip a drawn reverb)
    snr_db: torch.Tensor  # float32 [B] on CPU, NaN where no noise
    noise_names: list[str]  # "" where no noise; "white" / "pink" / "brown" for generated noise
    rir_names: list[str]  # "" where no reverb
    rt60: torch.Tensor  # float32 [B] on CPU, NaN where no reverb


class CorruptionPolicy:
    """Draws per-row corruption plans and applies them (see the module docstring)."""

    def __init__(
        self, cfg: CorruptionConfig, noise_bank: NoiseBank | None = None, rir_bank: RIRBank | None = None
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.noise_bank = noise_bank
        self.rir_bank = rir_bank
        self._op_cdf = np.cumsum(cfg.op_probs)
        file_noise = 1.0 - cfg.white_noise_prob - cfg.colored_noise_prob
        if cfg.p_noise + cfg.p_noise_reverb > 0 and file_noise > 1e-9 and not noise_bank:
            raise ValueError(
                "noise operations draw noise files but no noise source is configured "
                "(musan / urbansound / noise_dirs / builtin), or set white_noise_prob + "
                "colored_noise_prob to 1"
            )
        if cfg.p_reverb + cfg.p_noise_reverb > 0 and not rir_bank:
            raise ValueError(
                "reverb operations need RIRs: set rir_dirs or simulate_rirs.count, "
                "or set p_reverb and p_noise_reverb to 0"
            )

    @classmethod
    def from_config(
        cls, cfg: CorruptionConfig, noise_bank: NoiseBank | None, rir_bank: RIRBank | None
    ) -> CorruptionPolicy:
        return cls(cfg, noise_bank, rir_bank)

    # ---------------------------------------------------------------- plan (workers)
    def plan(
        self,
        lengths: torch.Tensor | Sequence[int],
        max_len: int,
        rng: np.random.Generator,
        wavs: torch.Tensor | None = None,
    ) -> CorruptionPlan:
        """Draw the file-bound part of a batch's corruption (see :class:`CorruptionPlan`).

        With ``wavs`` (the batch itself) the plan is also applied here, in the worker, and carries the
        finished batch in ``noisy``: only possible without a curriculum, when the result does not
        depend on the optimizer step. In a DataLoader worker it is written straight into shared
        memory, so handing it to the trainer copies nothing.
        """
        lengths = [int(n) for n in lengths]
        if wavs is not None and self.cfg.has_curriculum:
            raise ValueError(
                "a plan can only be finished in advance without a curriculum (inc_steps <= 0): "
                "with one, the result depends on the optimizer step"
            )
        if wavs is not None and tuple(wavs.shape) != (len(lengths), max_len):
            raise ValueError(f"wavs {tuple(wavs.shape)} do not match the plan's {(len(lengths), max_len)}")
        # The noise of a plan finished here never leaves the worker: ordinary memory.
        plan = self._build_plan(lengths, max_len, self.draw_ops(len(lengths), rng), rng, shared=wavs is None)
        if wavs is None:
            return plan
        out = batch_zeros(*wavs.shape).copy_(wavs)
        noisy = self._corrupt_rows(out, torch.tensor(lengths), plan, *self._decisions(plan, step=0))
        return replace(plan, noise=None, noisy=noisy)

    def draw_ops(self, count: int, rng: np.random.Generator) -> list[int]:
        """The first draws of a plan: ``count`` operations (indices into OPS) with the configured odds."""
        # min(): the cumulative sum may end a rounding error below 1.
        return [min(int(np.searchsorted(self._op_cdf, rng.random(), side="right")), 3) for _ in range(count)]

    def _build_plan(
        self, lengths: list[int], max_len: int, ops: list[int], rng: np.random.Generator, *, shared: bool = True
    ) -> CorruptionPlan:
        if any(n > max_len for n in lengths):
            raise ValueError(f"a length in {lengths} exceeds max_len {max_len}")
        batch = len(lengths)
        with_noise = sum(op in _WITH_NOISE for op in ops)
        noise_batch = batch_zeros(with_noise, max_len) if shared else torch.zeros(with_noise, max_len)
        noise_rows, noise_row = noise_batch.numpy(), 0
        noise_names, rir_names, rir_list, rt60 = [""] * batch, [""] * batch, [], np.full(batch, np.nan, np.float32)
        u_snr, u_reverb = np.empty(batch), np.empty(batch)
        for b, (n, op) in enumerate(zip(lengths, ops)):
            # Fixed draw order per row (uniforms, noise, RIR): same generator state, same plan.
            u_snr[b], u_reverb[b] = rng.random(), rng.random()
            if op in _WITH_NOISE:
                if n > 0:
                    noise_rows[noise_row, :n], noise_names[b] = self._noise(n, rng)
                noise_row += 1
            if op in _WITH_REVERB:
                chosen = self._rir(rng)
                rir_list.append((b, chosen.samples))
                rir_names[b], rt60[b] = chosen.name, chosen.rt60
        rir_len = max([r.size for _, r in rir_list], default=1)
        rirs, rir_lengths = np.zeros((batch, rir_len), dtype=np.float32), np.zeros(batch, dtype=np.int64)
        for b, samples in rir_list:
            rirs[b, : samples.size], rir_lengths[b] = samples, samples.size
        return CorruptionPlan(
            ops=torch.tensor(ops, dtype=torch.int64),
            noise=noise_batch,
            rirs=torch.from_numpy(rirs),
            rir_lengths=torch.from_numpy(rir_lengths),
            rt60=torch.from_numpy(rt60),
            u_snr=torch.from_numpy(u_snr),
            u_reverb=torch.from_numpy(u_reverb),
            noise_names=noise_names,
            rir_names=rir_names,
        )

    def _noise(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        u = rng.random()
        if u < self.cfg.white_noise_prob:
            # Gaussian like the original's randn_like; generated here so the plan holds all randomness.
            # torch's vectorised sampler, seeded from the plan's generator: 3x numpy's for 250k samples
            # (same values on the same machine; another CPU's SIMD path may differ in the last bit).
            seeded = torch.Generator().manual_seed(int(rng.integers(2**63)))
            return torch.randn(n, generator=seeded).numpy(), "white"
        if u < self.cfg.white_noise_prob + self.cfg.colored_noise_prob:
            color = self.cfg.colors[int(rng.integers(len(self.cfg.colors)))]
            return colored_noise(n, color, rng), color
        assert self.noise_bank is not None  # checked in __init__
        return self.noise_bank.draw(n, rng)

    def _rir(self, rng: np.random.Generator) -> RIR:
        if self.rir_bank is None:
            raise ValueError("reverb requested but there is no RIR bank")
        return self.rir_bank.draw(rng)

    # ---------------------------------------------------------------- apply (training device)
    def apply(self, wavs: torch.Tensor, lengths: torch.Tensor, plan: CorruptionPlan, step: int) -> CorruptionResult:
        """Corrupt ``wavs`` [B, L] (zero-padded, on any device) as ``plan`` says, with the curriculum at
        optimizer ``step``. Keep the plan on the CPU (pinned by the DataLoader): the per-row decisions
        are read from it without a device sync, and only the rows that need them are copied over."""
        if len(plan) != wavs.shape[0] or plan.num_samples != wavs.shape[1]:
            raise ValueError(f"plan for {len(plan)} x {plan.num_samples} samples, batch is {tuple(wavs.shape)}")
        snr, has_noise, has_reverb = self._decisions(plan, step)
        if plan.noisy is not None:  # finished in the worker, for any step (no curriculum)
            out = plan.noisy.to(wavs.device, non_blocking=True)
        else:
            out = self._corrupt_rows(wavs.clone(), lengths.to(wavs.device), plan, snr, has_noise, has_reverb)
        names = [OPS[int(n) + 2 * int(r)] for n, r in zip(has_noise, has_reverb)]
        return CorruptionResult(
            noisy=out,
            ops=names,
            snr_db=torch.where(has_noise, snr, torch.tensor(math.nan)),
            noise_names=[name if h else "" for name, h in zip(plan.noise_names, has_noise.tolist())],
            rir_names=[name if r else "" for name, r in zip(plan.rir_names, has_reverb.tolist())],
            rt60=torch.where(has_reverb, plan.rt60.cpu(), torch.tensor(math.nan)),
        )

    def _decisions(self, plan: CorruptionPlan, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(SNR [B], has_noise [B], has_reverb [B]) at optimizer ``step``, on the CPU."""
        cfg = self.cfg
        floor, p_reverb = curriculum(step, cfg.inc_steps, cfg.snr_low, cfg.snr_high)
        # Decisions are made from the CPU copy of the plan, so the device never has to sync for them.
        ops, u_snr, u_rev = plan.ops.cpu(), plan.u_snr.cpu(), plan.u_reverb.cpu()
        drawn_snr = (floor + torch.floor(u_snr * (cfg.snr_high - floor + 1))).clamp(max=cfg.snr_high)
        snr = drawn_snr.to(torch.float32)
        has_noise = (ops == NOISE) | (ops == NOISE_REVERB)
        has_reverb = ((ops == REVERB) | (ops == NOISE_REVERB)) & (u_rev < p_reverb)
        return snr, has_noise, has_reverb

    @staticmethod
    def _corrupt_rows(
        out: torch.Tensor,
        lengths: torch.Tensor,
        plan: CorruptionPlan,
        snr: torch.Tensor,
        has_noise: torch.Tensor,
        has_reverb: torch.Tensor,
    ) -> torch.Tensor:
        """Noise then reverb, in place on ``out`` (a copy of the clean batch), on the rows that need
        them, batched (row selection from CPU masks)."""
        device, dtype = out.device, out.dtype
        rows = has_noise.nonzero().squeeze(1)
        if rows.numel():
            assert plan.noise is not None and plan.noise.shape[0] == rows.numel()  # finished plans drop it
            idx = rows.to(device)
            noise = plan.noise.to(device, dtype, non_blocking=True)
            out[idx] = mix_at_snr(out[idx], noise, lengths[idx], snr[rows].to(device))
        rows = has_reverb.nonzero().squeeze(1)
        if rows.numel():
            idx = rows.to(device)
            rir_lengths = plan.rir_lengths.cpu()[rows]
            rirs = plan.rirs.index_select(0, rows)[:, : int(rir_lengths.max())]
            rirs = rirs.to(device, dtype, non_blocking=True)
            out[idx] = reverberate(out[idx], lengths[idx], rirs, rir_lengths.to(device))
        return out

    # ---------------------------------------------------------------- resume
    def fingerprint(self) -> dict[str, str]:
        """Hashes of the noise and RIR pools: plans are only reproducible over the same pools."""

        def digest(names: list[str]) -> str:
            return hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]

        return {
            "noise": digest(self.noise_bank.names if self.noise_bank else []),
            "rir": digest(self.rir_bank.names if self.rir_bank else []),
        }

    def state_dict(self) -> dict[str, Any]:
        """The policy keeps no mutable state (the step comes from the trainer); this records what a
        resumed run must match for its plans to be the same."""
        return {
            "fingerprint": self.fingerprint(),
            "config": {k: v for k, v in to_dict(self.cfg).items() if k not in ("noise", "rir")},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Warn (not fail) when the pools or probabilities changed: the run continues, differently."""
        mine = self.state_dict()
        for key in ("fingerprint", "config"):
            if state.get(key) != mine[key]:
                log.warning(
                    "corruption %s differs from the checkpoint's (%s vs %s): "
                    "corruption after resume will not match the original run",
                    key,
                    state.get(key),
                    mine[key],
                )


def build_policy(
    cfg: CorruptionConfig, report: BadFileReport | None = None, speech: SpeechSource = synthetic_speech
) -> CorruptionPolicy:
    """Index the configured noise and RIR sources and build the policy. ``speech`` feeds the built-in
    babble noise when ``cfg.noise.builtin`` is on (default: the synthetic corpus)."""
    n = cfg.noise
    noise_bank = (
        NoiseBank.from_config(n, report, speech) if n.musan or n.urbansound or n.noise_dirs or n.builtin else None
    )
    r = cfg.rir
    rir_bank = RIRBank.from_config(r, report) if r.rir_dirs or r.simulate_rirs.count > 0 else None
    return CorruptionPolicy.from_config(cfg, noise_bank, rir_bank)
