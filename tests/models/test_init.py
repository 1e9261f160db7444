import pytest
import torch

from robustdistiller.checkpoints.teachers import load_teacher
from robustdistiller.models import DistillerModel, init_student_from_teacher


def test_copies_cnn_projection_posconv_and_first_layers(hf_dir, tiny_student):
    teacher = load_teacher(hf_dir("wavlm"))
    student = DistillerModel(
        tiny_student(encoder_layers=1, init_teacher_conv_layers=True, init_teacher_encoder_layers=True)
    )
    before = {k: v.clone() for k, v in student.state_dict().items()}
    report = init_student_from_teacher(student, teacher)
    s, t = student.state_dict(), teacher.model.state_dict()
    assert report.copied and set(report.copied).isdisjoint(report.not_initialised)
    for key in report.copied:
        assert torch.equal(s[key], t[key]), key
    assert "encoder.pos_conv.0.weight_v" in report.copied
    assert "encoder.layers.0.fc2.weight" in report.copied
    assert "post_extract_proj.weight" in report.copied
    # not copied: teacher layer 1, feature LayerNorm, encoder LayerNorm, WavLM relative position / gates
    for key in (
        "encoder.layers.1.fc1.weight",
        "layer_norm.weight",
        "encoder.layer_norm.weight",
        "encoder.layers.0.self_attn.relative_attention_bias.weight",
        "encoder.layers.0.self_attn.grep_a",
    ):
        assert key in report.skipped
    for key in ("encoder.layer_norm.weight", "output_layer.0.weight", "output_layer.2.weight"):
        assert key in report.not_initialised and torch.equal(s[key], before[key])


def test_flags_limit_what_is_copied(hf_dir, tiny_student):
    teacher = load_teacher(hf_dir("hubert"))
    student = DistillerModel(tiny_student(init_teacher_conv_layers=True, init_teacher_encoder_layers=False))
    report = init_student_from_teacher(student, teacher)
    assert all(k.startswith(("feature_extractor.", "post_extract_proj.")) for k in report.copied)
    report = init_student_from_teacher(student, teacher, encoder_layers=True)
    assert "encoder.layers.1.self_attn.q_proj.weight" in report.copied


def test_shape_mismatch_names_key_and_shapes(hf_dir, tiny_student):
    teacher = load_teacher(hf_dir("hubert"))
    student = DistillerModel(tiny_student(encoder_ffn_embed_dim=96))
    with pytest.raises(ValueError, match=r"encoder\.layers\.0\.fc1\.weight.*\(96, 64\).*\(128, 64\)"):
        init_student_from_teacher(student, teacher, conv_layers=True, encoder_layers=True)
    deeper = DistillerModel(tiny_student(encoder_layers=3, n_tasks=1, pred_layer_id=[2]))
    with pytest.raises(ValueError, match="3 layers"):
        init_student_from_teacher(deeper, teacher, encoder_layers=True)
