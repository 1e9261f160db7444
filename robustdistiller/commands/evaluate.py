"""``robustdistiller evaluate``: robustness of one or more models under noise and reverberation."""

from __future__ import annotations

import argparse

from robustdistiller.errors import UsageError

EPILOG = """examples:
  robustdistiller evaluate --model runs/demo/robust/states-300.ckpt --model runs/demo/baseline/states-300.ckpt \\
      --task builtin --quick --out runs/eval
  robustdistiller evaluate --model rd.ckpt --teacher microsoft/wavlm-base-plus --task fsdd:../shared/data/fsdd \\
      --noise ../shared/data/noise --noise builtin --rir simulated --voicebank ../shared/data/voicebank_demand \\
      --out runs/eval-fsdd

tasks:  builtin | heldout | librispeech:PATH | fsdd:PATH | manifest:PATH[:LABEL_COLUMN[:SPLIT_COLUMN]] | ctc:PATH[:TRANSCRIPT_COLUMN[:SPLIT_COLUMN]]
noises: builtin | PATH or folder:PATH (each sub-folder or file is a type) | musan:PATH | urbansound:PATH
rirs:   simulated | PATH (a folder of real RIRs, grouped by their measured RT60)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from robustdistiller.models.precision import PRECISIONS

    parser = subparsers.add_parser(
        "evaluate",
        help="probe accuracy, representation distortion, enhancement and speed under noise and reverberation",
        description="Evaluate student checkpoints and teachers under a reproducible set of noise and "
        "reverberation conditions; writes results.json, CSV tables, plots, report.md and report.html.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="PATH",
        help="student checkpoint or teacher (HF folder, hub id, fairseq .pt); repeat for more",
    )
    parser.add_argument("--name", action="append", metavar="NAME", help="display name per --model (same order)")
    parser.add_argument(
        "--teacher", help="teacher the students are compared with (default: the one recorded in the first student)"
    )
    parser.add_argument("--task", action="append", metavar="SPEC", help="task pack (repeatable; default: builtin)")
    parser.add_argument(
        "--noise", action="append", metavar="SOURCE", help="noise source (repeatable; default: builtin)"
    )
    parser.add_argument("--noise-type", action="append", metavar="TYPE", help="keep only these noise types")
    parser.add_argument("--snr", type=float, action="append", metavar="DB", help="SNRs (default: -5 0 5 10 20)")
    parser.add_argument("--rir", action="append", metavar="SOURCE", help="RIR source (repeatable; default: simulated)")
    parser.add_argument("--rt60", type=float, action="append", metavar="S", help="RT60 bins (default: 0.3 0.6 0.9 1.2)")
    parser.add_argument(
        "--train-on",
        choices=("clean", "corrupted"),
        default="clean",
        help="features the probes are trained on (default: clean)",
    )
    parser.add_argument("--voicebank", metavar="DIR", help="folder with clean/ and noisy/ pairs for enhancement heads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small subsets and few conditions (a smoke test)")
    parser.add_argument("--no-efficiency", action="store_true", help="skip MACs / real-time factor / memory")
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="fp32",
        help="the models' forward: fp32 (default), bf16, or auto (bf16 where the CPU has bf16 units and every "
        "layer stays within cosine 0.99 of fp32; logged per model)",
    )
    parser.add_argument(
        "--cache",
        choices=("prune", "keep", "delete", "off"),
        default="prune",
        help="the hidden-state cache OUT/cache once the report is written: prune (default) drops the features "
        "this run did not use, keep leaves everything, delete empties it; off neither reads nor writes one",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustdistiller.config import from_dict
    from robustdistiller.evaluate.conditions import ConditionConfig
    from robustdistiller.evaluate.runner import EvaluateOptions, evaluate, quick_conditions, quick_options
    from robustdistiller.evaluate.tasks import tasks_from_spec

    if args.name and len(args.name) != len(args.model):
        raise UsageError(f"{len(args.name)} --name values for {len(args.model)} --model values")
    overrides: dict[str, object] = {"seed": args.seed}
    for key, value in (
        ("noises", args.noise),
        ("noise_types", args.noise_type),
        ("snrs", args.snr),
        ("rirs", args.rir),
        ("rt60s", args.rt60),
    ):
        if value:
            overrides[key] = value
    if args.rt60:  # noise + reverberation uses the middle RT60 bin given
        overrides["mixed_rt60s"] = [sorted(args.rt60)[len(args.rt60) // 2]]
    conditions = quick_conditions(**overrides) if args.quick else from_dict(ConditionConfig, overrides)
    option_overrides = {
        "efficiency": not args.no_efficiency,
        "voicebank": args.voicebank,
        "precision": args.precision,
        "cache": args.cache,
    }
    options = quick_options(**option_overrides) if args.quick else from_dict(EvaluateOptions, option_overrides)
    tasks = [
        pack for spec in (args.task or ["builtin"]) for pack in tasks_from_spec(spec, work_dir=args.out, seed=args.seed)
    ]
    results = evaluate(
        args.model,
        teacher=args.teacher,
        tasks=tasks,
        conditions=conditions,
        out_dir=args.out,
        seed=args.seed,
        train_on=args.train_on,
        quick=args.quick,
        names=args.name,
        options=options,
    )
    print(f"evaluated {len(results.models)} model(s) under {len(results.conditions)} conditions")
    print(f"report: {args.out}/report.md (and report.html); results: {args.out}/results.json")
    return 0
