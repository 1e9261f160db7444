"""Models: shared wav2vec2-family blocks, the DistilHuBERT student, teachers, student-from-teacher init.

The enhancement head and pruning live in sibling modules of this package.
"""

from .attention import SelfAttention, WavLMSelfAttention
from .conv import (
    ConvFeatureExtractor,
    conv_output_lengths,
    format_conv_layers,
    lengths_to_mask,
    parse_conv_layers,
    receptive_field,
)
from .convert import fairseq_to_ours, hf_to_ours, ours_to_hf
from .encoder import Encoder, EncoderOutput
from .init import InitReport, init_student_from_teacher
from .positional import ConvPositionalEmbedding, WeightNormConv1d
from .spec import EncoderSpec
from .student import (
    DistillerConfig,
    DistillerModel,
    DistillerOutput,
    ParameterCounts,
    SplitLinear,
)
from .teacher import (
    Teacher,
    TeacherConfig,
    TeacherModel,
    TeacherOutput,
    UnsupportedTeacherError,
)
from .transformer import EncoderLayer, TransformerEncoder

__all__ = [
    "ConvFeatureExtractor",
    "ConvPositionalEmbedding",
    "DistillerConfig",
    "DistillerModel",
    "DistillerOutput",
    "Encoder",
    "EncoderLayer",
    "EncoderOutput",
    "EncoderSpec",
    "InitReport",
    "ParameterCounts",
    "SelfAttention",
    "SplitLinear",
    "Teacher",
    "TeacherConfig",
    "TeacherModel",
    "TeacherOutput",
    "TransformerEncoder",
    "UnsupportedTeacherError",
    "WavLMSelfAttention",
    "WeightNormConv1d",
    "conv_output_lengths",
    "fairseq_to_ours",
    "format_conv_layers",
    "hf_to_ours",
    "init_student_from_teacher",
    "lengths_to_mask",
    "ours_to_hf",
    "parse_conv_layers",
    "receptive_field",
]
