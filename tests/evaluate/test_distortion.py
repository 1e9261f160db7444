import pytest
import torch

from robustdistiller.evaluate.distortion import DistortionMeter, layer_distortion


def hidden(seed: int, layers: int = 3, shape: tuple[int, int, int] = (2, 6, 4)) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(layers)]


def test_identical_inputs_give_zero_l1_and_unit_cosine():
    a = hidden(0)
    rows = layer_distortion(a, [h.clone() for h in a], torch.tensor([6, 3]), model="student", condition="clean")
    assert [(r["index_a"], r["index_b"]) for r in rows] == [(0, 0), (1, 1), (2, 2)]
    for r in rows:
        assert r["l1"] == 0.0
        assert r["cosine"] == pytest.approx(1.0, abs=1e-12)
        assert r["frames"] == 9
        assert r["model"] == "student" and r["condition"] == "clean"


def test_padding_is_ignored():
    a, b = hidden(0), hidden(1)
    lengths = torch.tensor([6, 3])
    reference = layer_distortion(a, b, lengths)
    # Garbage in the padded frames of one list must not change anything.
    junk = [h.clone() for h in b]
    for h in junk:
        h[1, 3:] = 1e6
    assert layer_distortion(a, junk, lengths) == reference
    # And the numbers equal those of the unpadded utterances concatenated.
    for i, row in enumerate(reference):
        x = torch.cat([a[i][0], a[i][1, :3]]).double()
        y = torch.cat([b[i][0], b[i][1, :3]]).double()
        assert row["l1"] == pytest.approx(float((x - y).abs().mean()))
        assert row["cosine"] == pytest.approx(float(torch.nn.functional.cosine_similarity(x, y, dim=-1).mean()))


def test_known_values_and_batch_accumulation():
    x = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # [1, 2, 2]
    y = torch.tensor([[[0.0, 1.0], [2.0, 2.0]]])
    (row,) = layer_distortion([x], [y])
    assert row["l1"] == pytest.approx(1.0)  # |1| + |1| + |1| + |1| over 4 elements
    assert row["cosine"] == pytest.approx(0.5)  # orthogonal frame (0) and parallel frame (1)
    # Accumulating the two frames as separate batches gives the same answer.
    meter = DistortionMeter()
    meter.update([x[:, :1]], [y[:, :1]])
    meter.update([x[:, 1:]], [y[:, 1:]])
    assert meter.rows() == [row]


def test_explicit_pairs_for_prediction_heads():
    student = hidden(0, layers=5)  # e.g. features, 2 layers, 2 heads
    teacher = hidden(1, layers=4)
    teacher[2] = student[3].clone()
    rows = layer_distortion(student, teacher, pairs=[(3, 2), (4, 3)])
    assert [(r["index_a"], r["index_b"]) for r in rows] == [(3, 2), (4, 3)]
    assert rows[0]["l1"] == 0.0 and rows[1]["l1"] > 0.5


def test_bad_input_raises():
    a = hidden(0)
    with pytest.raises(ValueError, match="explicit pairs"):
        layer_distortion(a, a[:2])
    with pytest.raises(ValueError, match="out of range"):
        layer_distortion(a, a, pairs=[(0, 7)])
    with pytest.raises(ValueError, match="shapes"):
        layer_distortion(a, [h[:, :5] for h in a])
    with pytest.raises(ValueError, match="do not fit"):
        layer_distortion(a, a, torch.tensor([7, 2]))
    with pytest.raises(ValueError, match="no valid frames"):
        layer_distortion(a, a, torch.tensor([0, 0]))
