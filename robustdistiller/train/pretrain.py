"""HuBERT-style pre-training of a small teacher: ``robustdistiller pretrain``.

:class:`PretrainTrainer` is the shared training loop (:class:`Trainer`) driving the
:class:`MaskedPrediction` objective over a :class:`HubertPretrainModel`, so data, bad-file skips,
corruption (the robust variant), DDP, SIGINT/SIGTERM, non-finite skips, TensorBoard /
``log.jsonl`` / progress bar, checkpoints and exact resume are the loop's.

With ``init.source`` the model starts from an earlier teacher folder (continual pre-training).
Before the first step the k-means is fitted on the training audio (MFCC frames, or a layer of the
model at ``targets.source``) and saved as ``train.out_dir/clusters.npz``; a resumed run reuses it.
When the last step is done the encoder is written as a Hugging Face ``HubertModel`` (or, for the
WavLM family, ``WavLMModel``) folder at ``train.out_dir/teacher`` with the cluster model and a
model card (``README.md``) beside it.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import torch

from robustdistiller.atomic import atomic_write
from robustdistiller.checkpoints.teachers import load_pretrained, save_teacher
from robustdistiller.config import config_changes, to_dict
from robustdistiller.errors import CheckpointFormatError
from robustdistiller.models.conv import conv_output_lengths, format_conv_layers, parse_conv_layers
from robustdistiller.models.pretraining import HubertPretrainModel
from robustdistiller.train.clusters import CLUSTERS_FILE, ClusterModel, FrameLabeller, fit_clusters
from robustdistiller.train.distributed import barrier, init_distributed, shutdown
from robustdistiller.train.masked_prediction import MaskedPrediction, TrainingClock
from robustdistiller.train.objective import RunSetup
from robustdistiller.train.pretrain_recipe import PretrainRecipe
from robustdistiller.train.targets import load_frozen_teacher, set_teacher_precision
from robustdistiller.train.trainer import DistillResult, Trainer

log = logging.getLogger(__name__)

# family -> (its name in prose, the transformers class of the exported folder)
FAMILY_NAMES = {"hubert": ("HuBERT", "HubertModel"), "wavlm": ("WavLM", "WavLMModel")}

TEACHER_DIR = "teacher"
CARD_FILE = "README.md"
# bench/teacher_probe.py writes its table between these markers of the card
PROBES_START, PROBES_END = "<!-- probes -->", "<!-- /probes -->"


class PretrainTrainer(Trainer):
    """The training loop over the :class:`MaskedPrediction` objective of ``recipe`` (keyword
    arguments: :class:`Trainer`'s). ``command`` is shown in the model card."""

    recipe: PretrainRecipe
    objective: MaskedPrediction

    def __init__(self, recipe: PretrainRecipe, *, command: str = "", **kwargs: Any) -> None:
        self.command = command
        clock = TrainingClock()  # started before the data and k-means set-up: the card reports all of it
        super().__init__(recipe, lambda setup: pretraining_objective(recipe, setup, clock), **kwargs)

    # ------------------------------------------------------------------ result
    def export_teacher(self) -> Path:
        """Write ``out_dir/teacher``: HF folder + ``clusters.npz`` + model card (replaces an older one)."""
        out = self.out_dir / TEACHER_DIR
        if out.exists():
            shutil.rmtree(out)
        model = self.objective.model
        clusters = self.objective.labeller.clusters
        assert clusters is not None
        clock = self.objective.clock
        card = model_card(
            self.recipe,
            model,
            clusters,
            step=self.step,
            seconds=clock.elapsed_seconds,
            threads=clock.threads,
            command=self.command,
            files=len(self.stream.dataset.manifest),
            audio_hours=self.stream.dataset.manifest.total_seconds / 3600,
            data_root=str(self.stream.dataset.manifest.root),
        )

        def add_files(folder: Path) -> None:
            clusters.save(folder / CLUSTERS_FILE)
            atomic_write(folder / CARD_FILE, lambda fh: fh.write(card.encode()))

        dtype = torch.float16 if self.recipe.export.dtype == "float16" else torch.float32
        save_teacher(model.encoder, out, mask_emb=model.mask_emb, dtype=dtype, add_files=add_files)
        log.info("teacher written to %s", out)
        return out


def pretraining_objective(recipe: PretrainRecipe, setup: RunSetup, clock: TrainingClock) -> MaskedPrediction:
    """The :class:`MaskedPrediction` objective of ``recipe``: the earlier model whose layer is
    clustered (iteration 2; iteration 1 clusters MFCC and needs none), the cluster model
    (:func:`cluster_model`) and the model to pre-train, on the device."""
    targets, obj = recipe.targets, recipe.objective
    teacher = None
    if targets.kind == "layer":
        teacher = load_frozen_teacher(targets.source, setup.device)
        set_teacher_precision(teacher, recipe.train.teacher_precision, setup.device)
    labeller = FrameLabeller(None, teacher, targets.layer)
    labeller.clusters = cluster_model(recipe, labeller, setup)
    model = HubertPretrainModel(
        recipe.model,
        labeller.clusters.num_clusters,
        final_dim=obj.final_dim,
        logit_temp=obj.logit_temp,
        dropout=obj.dropout,
    )
    if recipe.init.source:
        start_from(model, recipe)
    params = sum(p.numel() for p in model.encoder.parameters())
    description = (
        f"pre-training a {params / 1e6:.2f} M-parameter {FAMILY_NAMES[recipe.model.family][0]} on {labeller.feature} "
        f"k-means targets ({labeller.clusters.num_clusters} clusters)"
    )
    return MaskedPrediction(
        model.to(setup.device),
        labeller,
        mask_prob=obj.mask_prob,
        mask_length=obj.mask_length,
        unmasked_weight=obj.unmasked_weight,
        seed=obj.seed,
        mixing=obj.mixing,
        clock=clock,
        description=description,
    )


def start_from(model: HubertPretrainModel, recipe: PretrainRecipe) -> None:
    """Copy the encoder and mask embedding of the teacher folder ``init.source`` into ``model``
    (whose projection and cluster embeddings stay fresh). Runs before any checkpoint is loaded, so a
    resumed run ends up with its checkpoint's weights.

    Raises:
        ValueError: the folder's architecture differs from ``model`` in the recipe (the fields are named).
    """
    source = recipe.init.source
    earlier, mask_emb = load_pretrained(source)
    differ = [
        f"{key}: {theirs!r} there, {ours!r} here"
        for key, (theirs, ours) in config_changes(to_dict(earlier.config), to_dict(recipe.model)).items()
    ]
    if differ:
        raise ValueError(
            f"init.source={source} has another architecture than the recipe's model section ({'; '.join(differ)}): "
            "set those model.* keys to the folder's values (its config.json) or drop init.source"
        )
    model.encoder.load_state_dict(earlier.state_dict())
    if mask_emb is not None:
        with torch.no_grad():
            model.mask_emb.copy_(mask_emb)
    log.info("continuing pre-training from %s", source)


def cluster_model(recipe: PretrainRecipe, labeller: FrameLabeller, setup: RunSetup) -> ClusterModel:
    """``out_dir/clusters.npz`` if present (a resumed or repeated run), else fitted on rank 0 on
    frames sampled from the training audio.

    Raises:
        ValueError: the file holds another feature or cluster count than the recipe asks for.
    """
    path = setup.out_dir / CLUSTERS_FILE
    targets = recipe.targets
    if setup.ctx.is_main and not path.is_file():
        conv = parse_conv_layers(recipe.model.conv_layers)
        frames = labeller.sample_frames(
            setup.manifest,
            lambda lengths: conv_output_lengths(lengths, conv),
            max_frames=targets.max_frames,
            seed=targets.seed,
            report=setup.bad_files,
        )
        fit_clusters(
            frames,
            targets.num_clusters,
            feature=labeller.feature,
            seed=targets.seed,
            batch_size=targets.kmeans_batch_size,
            max_iter=targets.kmeans_max_iter,
        ).save(path)
    barrier(setup.ctx)
    clusters = ClusterModel.load(path)
    if clusters.feature != labeller.feature or clusters.num_clusters != targets.num_clusters:
        raise CheckpointFormatError(
            f"{path} holds {clusters.num_clusters} {clusters.feature} clusters but the recipe asks for "
            f"{targets.num_clusters} {labeller.feature} clusters: use a new train.out_dir or delete {path}"
        )
    return clusters


def model_card(
    recipe: PretrainRecipe,
    model: HubertPretrainModel,
    clusters: ClusterModel,
    *,
    step: int,
    seconds: float,
    threads: int,
    command: str,
    files: int,
    audio_hours: float,
    data_root: str,
) -> str:
    """The model card (Markdown) of a pre-trained teacher: what it is and how to rebuild it."""
    cfg = recipe.model
    params = sum(p.numel() for p in model.encoder.parameters())
    targets = recipe.targets
    robust = recipe.corruption.p_clean < 1.0
    name, hf_class = FAMILY_NAMES[cfg.family]
    mixing = recipe.objective.mixing
    mixed = (
        f"; utterance mixing (WavLM): {mixing.prob:g} of the utterances hear a segment of another "
        f"(under {mixing.max_share:g} of their length, energy ratio {mixing.ratio_db[0]:g} to {mixing.ratio_db[1]:g} dB)"
        if mixing.prob
        else ""
    )
    start = (
        f"| starts from | `{recipe.init.source}` (continual pre-training: its encoder and mask embedding) |\n"
        if recipe.init.source
        else ""
    )
    feature = (
        "39-dim MFCC (13 + deltas + delta-deltas) frames"
        if targets.kind == "mfcc"
        else f"hidden state {targets.layer} of `{targets.source}`"
    )
    return f"""# {recipe.export.name}

A miniature {name} pre-trained with `robustdistiller pretrain` (masked prediction of k-means
cluster labels){" on corrupted input with targets from the clean audio (Robust HuBERT-style)" if robust else ""}.
Use it as `teacher.source` in any recipe, with `load_teacher`, or with
`transformers.{hf_class}.from_pretrained(path, dtype=torch.float32)`.

## Architecture
| | |
|---|---|
| family | {name} (`{hf_class}` layout{", gated relative position bias" if cfg.family == "wavlm" else ""}) |
| CNN | `{format_conv_layers(parse_conv_layers(cfg.conv_layers))}` |
| encoder | {cfg.num_layers} layers, width {cfg.embed_dim}, {cfg.attention_heads} heads, FFN {cfg.ffn_dim}, pos-conv {cfg.conv_pos}/{cfg.conv_pos_groups} |
| parameters | {params} ({params / 1e6:.2f} M) |
| weights on disk | {recipe.export.dtype} (`load_teacher` upcasts to float32) |

## Training
| | |
|---|---|
{start}| targets | {clusters.num_clusters} k-means clusters (scikit-learn MiniBatchKMeans, seed {targets.seed}) of {feature}; `{CLUSTERS_FILE}` holds them |
| objective | span masking p={recipe.objective.mask_prob}, length {recipe.objective.mask_length}; cosine logits / {recipe.objective.logit_temp}; cross-entropy on masked frames (unmasked weight {recipe.objective.unmasked_weight}){mixed} |
| data | {files} files, {audio_hours:.2f} h{" (held-out speakers excluded)" if recipe.data.exclude_held_out else ""}, from `{data_root}` |
| steps | {step} of batch {recipe.data.batch_size} crops of at most {recipe.data.max_length / 16000:.1f} s{"" if step >= recipe.optim.total_steps else f" (stopped early: the schedule was for {recipe.optim.total_steps})"} |
| seed | train {recipe.train.seed}, data {recipe.data.seed}, mask {recipe.objective.seed} |
| wall time | {seconds / 60:.1f} min on {platform.machine()} CPU, {threads} torch thread(s){_load_note()} |

{f"Training audio: {recipe.export.data_credit}" if recipe.export.data_credit else ""}

Command:

```
{command or f"robustdistiller pretrain --config <recipe> train.out_dir={recipe.train.out_dir}"}
```

## Probes
{PROBES_START}
Not measured yet: `python bench/teacher_probe.py --teacher <this folder> --card <this file>` fills this in.
{PROBES_END}
"""


def _load_note() -> str:
    """Says so when other jobs shared the cores (load average above the core count): the wall time
    is then longer than on an idle machine."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    return f"; load average {load:.1f} on {cores} cores when written: shared with other jobs" if load > cores else ""


def pretrain(
    recipe: PretrainRecipe, *, resume: bool = False, command: str = "", export_only: bool = False
) -> DistillResult:
    """Pre-train as ``recipe`` says (resuming from ``train.out_dir`` if asked); when the last step
    is reached, write the teacher folder ``train.out_dir/teacher``.

    ``export_only``: write the teacher folder from the newest checkpoint (e.g. of a run stopped
    early; its card gives the step) and train nothing."""
    ctx = init_distributed(recipe.train.device)
    try:
        trainer = PretrainTrainer(recipe, resume=resume or export_only, ctx=ctx, command=command)
        if export_only:
            if ctx.is_main:
                trainer.export_teacher()
            return DistillResult(trainer.last_checkpoint, trainer.step, bad_files=trainer.bad_files)
        result = trainer.fit()
        done = result.interrupted is None and trainer.step >= recipe.optim.total_steps
        if done and ctx.is_main:
            trainer.export_teacher()
        return result
    finally:
        shutdown(ctx)


__all__ = ["PretrainTrainer", "cluster_model", "model_card", "pretrain", "pretraining_objective", "start_from"]
