"""The s3prl upstream adapter honours the expert contract (reference-formats.md D)."""

from __future__ import annotations

import pytest
import torch

from robustdistiller.checkpoints.s3prl import save_s3prl_checkpoint
from robustdistiller.export import hubconf
from robustdistiller.export.upstream import RobustDistillerUpstream, robust_distiller_local


@pytest.fixture
def upstream(tmp_path, student) -> RobustDistillerUpstream:
    path = save_s3prl_checkpoint(tmp_path / "states-1.ckpt", student)
    # s3prl passes every option by keyword, including ones this entry has no use for
    return hubconf.robust_distiller_local(ckpt=str(path), model_config=None, refresh=False, extra_option=1)


def test_forward_contract_on_unequal_lengths(upstream, student):
    gen = torch.Generator().manual_seed(0)
    wavs = [torch.randn(n, generator=gen) for n in (16000, 12345, 8000)]
    with torch.no_grad():
        out = upstream(wavs)

    hidden = out["hidden_states"]
    assert len(hidden) == 6  # projected + 2 layers + 3 heads
    assert {tuple(h.shape) for h in hidden} == {(3, 49, 64)}
    assert out["pad_mask"].dtype == torch.bool
    assert out["pad_mask"].sum(1).tolist() == [49, 38, 24]  # floor((len-k)/s)+1 per block
    assert torch.equal(out["last_hidden_state"], hidden[-1])
    assert torch.equal(out["paper"], hidden[2])  # last transformer layer
    assert upstream.get_downsample_rates("hidden_states") == 320
    assert upstream.get_downsample_rates("paper") == 320

    # each utterance alone gives the same valid frames as in the padded batch
    with torch.no_grad():
        single = upstream([wavs[1]])
    for batched, alone in zip(hidden, single["hidden_states"], strict=True):
        torch.testing.assert_close(batched[1, :38], alone[0], rtol=1e-5, atol=1e-5)

    with torch.no_grad():
        reference = student.extract(
            torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), torch.tensor([16000, 12345, 8000])
        )
    for ours, ref in zip(hidden, reference, strict=True):
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_adapter_is_a_module_that_moves_and_trains(upstream):
    assert isinstance(upstream, torch.nn.Module)
    assert sum(p.numel() for p in upstream.parameters()) == upstream.model.parameter_counts().total
    out = upstream([torch.randn(4000, requires_grad=False)])
    out["paper"].sum().backward()  # s3prl's -f (fine-tune upstream) needs gradients to flow
    assert upstream.model.encoder.layers[0].fc1.weight.grad is not None


def test_bad_inputs(upstream, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        robust_distiller_local(tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="at least one"):
        upstream([])
    with pytest.raises(ValueError, match="1-D"):
        upstream([torch.randn(2, 16000)])
    with pytest.raises(ValueError, match="at least 400 samples"):
        upstream([torch.randn(100)])  # shorter than one frame (400 samples)


def test_adapter_serves_hugging_face_directories_too(tmp_path, student):
    from robustdistiller.export.hf import export_hf

    upstream = robust_distiller_local(export_hf(student, tmp_path / "hf"))
    with torch.no_grad():
        out = upstream([torch.randn(16000), torch.randn(8000)])
    assert len(out["hidden_states"]) == 3 and "paper" not in out  # input of layer 1 + 2 layers
    assert torch.equal(out["last_hidden_state"], out["hidden_states"][-1])
    assert out["pad_mask"].sum(1).tolist() == [49, 24]
    assert upstream.get_downsample_rates("hidden_states") == 320
