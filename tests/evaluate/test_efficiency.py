import functools
import os
import time

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from robustdistiller.evaluate.efficiency import count_macs, count_parameters, peak_memory_mb, real_time_factor


class ConvLinear(nn.Module):
    """Conv1d(1 -> 4, k=10, s=5) over the waveform, then Linear(4 -> 8) per frame."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, kernel_size=10, stride=5)
        self.proj = nn.Linear(4, 8)

    def forward(self, wavs: Tensor) -> Tensor:
        return self.proj(self.conv(wavs[:, None]).transpose(1, 2))


class Recurrent(nn.Module):
    """2-layer BiLSTM over 10-sample chunks, exposed through the upstream protocol."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(10, 8, num_layers=2, bidirectional=True, batch_first=True)

    def extract(self, wavs: Tensor, lengths: Tensor) -> list[Tensor]:
        return [self.lstm(wavs.reshape(wavs.shape[0], -1, 10))[0]]


def test_count_parameters():
    linear = nn.Linear(10, 5)
    assert count_parameters(linear) == 55
    linear.bias.requires_grad_(False)
    assert count_parameters(linear, trainable_only=True) == 50
    assert count_parameters(ConvLinear()) == (4 * 10 + 4) + (4 * 8 + 8)


def test_macs_of_a_conv_linear_stack():
    frames = (16000 - 10) // 5 + 1
    assert count_macs(ConvLinear(), seconds=1.0) == frames * 4 * 10 + frames * 4 * 8
    frames = (8000 - 10) // 5 + 1
    assert count_macs(ConvLinear(), seconds=0.5) == frames * 4 * 10 + frames * 4 * 8


def test_macs_of_an_lstm_via_extract():
    model = Recurrent().train()
    steps = 16000 // 10
    per_step = 2 * 4 * 8 * (10 + 8) + 2 * 4 * 8 * (16 + 8)  # two directions, layer 1 then layer 2
    assert count_macs(model) == steps * per_step
    assert model.training  # measured in eval mode, caller's mode restored


def test_real_time_factor_restores_threads():
    class Slow(nn.Module):
        def forward(self, wavs: Tensor) -> Tensor:
            time.sleep(0.01)
            return wavs

    before = torch.get_num_threads()
    rtf = real_time_factor(Slow(), seconds=0.5, threads=1, repeats=3)
    assert torch.get_num_threads() == before
    assert rtf >= 0.01 / 0.5
    with pytest.raises(ValueError, match="threads and repeats must be >= 1"):
        real_time_factor(Slow(), threads=0)


def test_peak_memory_of_a_known_allocation():
    # 16 M float64 ones = 122 MiB, all pages touched.
    peak = peak_memory_mb(functools.partial(np.ones, 16_000_000))
    assert 110 < peak < 160
    with pytest.raises(RuntimeError, match="ValueError"):
        peak_memory_mb(np.ones, -1)


def test_peak_memory_fails_fast_when_the_child_dies():
    # A child that exits without reporting (as one killed for memory does) is an error within seconds,
    # not after the 600 s timeout.
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="exit code 3"):
        peak_memory_mb(functools.partial(os._exit, 3))
    assert time.perf_counter() - start < 60
