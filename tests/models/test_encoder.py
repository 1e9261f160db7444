"""One encoder: the three config dialects translate to one EncoderSpec, the three models share one
module layout and one output type, and a teacher's output gives DPHuBERT's targets directly."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from fixtures_tiny import TINY_CONV, perturb, tiny_student_config

from robustdistiller.models.encoder import Encoder, EncoderOutput
from robustdistiller.models.pruning import PrunableConfig, PrunableModel
from robustdistiller.models.spec import (
    EncoderSpec,
    spec_from_distiller,
    spec_from_prunable,
    spec_from_teacher,
)
from robustdistiller.models.student import DistillerModel
from robustdistiller.models.teacher import Teacher, TeacherConfig, TeacherModel

# fields that only say how DPHuBERT lays the same architecture out, or how it is trained
_LAYOUT = {
    "cnn_scale",
    "always_project",
    "kept_heads",
    "feature_layer_norm",
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "projection_dropout",
    "extractor_dropout",
    "feature_grad_mult",
}


def _teacher_config(family: str = "hubert", **overrides: object) -> TeacherConfig:
    base: dict[str, object] = {
        "family": family,
        "conv_layers": TINY_CONV,
        "embed_dim": 64,
        "num_layers": 2,
        "attention_heads": 4,
        "ffn_dim": 128,
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "num_buckets": 16,
        "max_distance": 40,
    }
    base.update(overrides)
    return TeacherConfig(**base)  # type: ignore[arg-type]


def _architecture(spec: EncoderSpec) -> dict[str, object]:
    return {k: v for k, v in dataclasses.asdict(spec).items() if k not in _LAYOUT}


def test_the_three_dialects_translate_to_one_spec() -> None:
    teacher = _teacher_config()
    prunable = PrunableConfig.from_teacher(teacher)
    student = tiny_student_config(encoder_layers=2)
    assert _architecture(spec_from_teacher(teacher)) == _architecture(spec_from_prunable(prunable))
    assert _architecture(spec_from_distiller(student)) == _architecture(
        spec_from_teacher(_teacher_config(max_distance=800, num_buckets=320))
    )
    spec = spec_from_prunable(prunable)
    assert spec.kept_heads == [[0, 1, 2, 3]] * 2 and spec.cnn_scale and spec.always_project
    assert spec.dropout == 0.1 and spec_from_teacher(teacher).dropout == 0.0


def test_the_three_models_share_one_layout(wave_batch) -> None:
    """Same parameter names and shapes for the shared encoder: the student only adds its heads, the
    prunable model DPHuBERT's dummy_weight; every model returns an EncoderOutput."""
    teacher = TeacherModel(_teacher_config(feature_layer_norm=False))
    student = DistillerModel(tiny_student_config(encoder_layers=2))
    prunable = PrunableModel(PrunableConfig.from_teacher(teacher.config))

    def shapes(model: torch.nn.Module, skip: tuple[str, ...]) -> list[tuple[str, tuple[int, ...]]]:
        return [(k, tuple(v.shape)) for k, v in model.state_dict().items() if not k.startswith(skip)]

    assert shapes(teacher, ()) == shapes(student, ("output_layer.",)) == shapes(prunable, ("dummy_weight",))
    assert next(iter(prunable.state_dict())) == "dummy_weight"  # DPHuBERT's order
    assert list(student.state_dict())[-1].startswith("output_layer.")
    for model in (teacher, student, prunable):
        assert isinstance(model, Encoder)
        out = model.eval()(*wave_batch)
        assert isinstance(out, EncoderOutput) and len(out.hidden_states) == 3
        assert out.projected.shape == out.hidden_states[0].shape == (2, 24, 64)
        assert out.cnn_features.shape == (2, 24, 32)


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_teacher_output_is_dphubert_targets_of_its_prunable_copy(family: str, wave_batch) -> None:
    """A pruning run needs the teacher's states in DPHuBERT's order (index 0 = projected features):
    ``projected_states`` of the frozen teacher gives them bit for bit, no second, prunable copy."""
    torch.manual_seed(0)
    model = TeacherModel(_teacher_config(family))
    perturb(model, 1)
    teacher = Teacher(model, "random")
    copy = PrunableModel.from_teacher(
        teacher, PrunableConfig.from_teacher(model.config, dropout=0.0, attention_dropout=0.0, projection_dropout=0.0)
    ).eval()
    with torch.no_grad():
        ours = teacher(*wave_batch)
        theirs = copy(*wave_batch)
    for a, b in zip(ours.projected_states(), theirs.projected_states(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(ours.hidden_states[0], theirs.hidden_states[0])  # one meaning of index 0
    valid = ours.frame_mask
    assert not torch.equal(ours.hidden_states[0][valid], ours.projected[valid])
    assert (ours.projected[~valid] == 0).all()


def test_extract_orders_name_index_zero(wave_batch) -> None:
    """Student (s3prl) and pruned model (DPHuBERT) lists start at ``projected``; the teacher's at
    the input of layer 1, as Hugging Face's."""
    torch.manual_seed(0)
    student = DistillerModel(tiny_student_config(encoder_layers=2)).eval()
    with torch.no_grad():
        out = student(*wave_batch)
        states = student.extract(*wave_batch)
    assert torch.equal(states[0], out.projected) and torch.equal(states[1], out.hiddens[0])
    assert out.hiddens == out.layer_outputs == out.hidden_states[1:]
    assert len(states) == 1 + 2 + 3  # projected, 2 layers, 3 heads


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"family": "bert"}, "family must be one of"),
        ({"layer_ffn_dims": [128]}, "same, non-zero number of layers"),
        ({"kept_heads": [[0, 1], [0]]}, "kept_heads"),
        ({"layer_heads": [4, -1]}, "sizes >= 0"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"layer_heads": [4, 1000]}, "heads=1000 is over the limit"),
        ({"conv_layers": [(100_000, 10, 5)]}, "channels 100000 is over the limit"),
    ],
)
def test_spec_validate_names_the_field(change: dict, message: str) -> None:
    spec = spec_from_teacher(_teacher_config())
    spec.validate()
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(spec, **change).validate()
