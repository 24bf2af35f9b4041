"""The ``arn-lightning`` command: LightningCLI subcommands next to the project's own tools.

``fit | validate | test | predict`` go to LightningCLI (see :mod:`arn_lightning.training.lightning_cli`); every other
subcommand is a small tool module under :mod:`arn_lightning.commands` exposing ``main(argv) -> int``. Tool modules
are imported lazily so that ``arn-lightning stats`` does not pay for importing Lightning.
"""

from __future__ import annotations

import importlib
import sys

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

#: subcommand -> (module, one-line help)
TOOLS: dict[str, tuple] = {
    "synth": ("arn_lightning.commands.synth", "generate the synthetic Action Genome dataset (real AG format)"),
    "stats": ("arn_lightning.commands.stats", "videos, frames, objects and predicates of an AG-format root"),
    "dump-frames": ("arn_lightning.commands.dump_frames", "decode annotated frames from Charades mp4 files"),
    "evaluate": ("arn_lightning.commands.evaluate", "score a prediction file (R@K / mR@K) against an AG root"),
    "infer": ("arn_lightning.commands.infer", "scene graphs of a video or folder; --stream: live sources"),
    "benchmark": ("arn_lightning.commands.benchmark", "speed: data, model, metrics, train, infer, streaming, suite"),
    "ablate": ("arn_lightning.commands.ablate", "the paper's ablation Tables 3 and 4 on the synthetic AG (resumable)"),
    "serve": ("arn_lightning.commands.serve", "a local web app: run a video, open an infer output, compare with GT"),
    "weights": ("arn_lightning.commands.weights", "pretrained weight files by name: list, fetch, verify, path"),
    "export": (
        "arn_lightning.commands.export",
        "a checkpoint as ONNX (the streaming step) or as a shareable safetensors model folder",
    ),
    "configs": ("arn_lightning.commands.configs", "the packaged configs (--config NAME): list, show, copy"),
    "demo": ("arn_lightning.experiments.demo", "the main job end to end on a synthetic AG (what `make demo` runs)"),
    "robustness": ("arn_lightning.commands.robustness", "a checkpoint's recall under image and video corruptions"),
}


#: The options most runs set, shown by ``arn-lightning fit|validate|test|predict --help`` (printed without importing
#: Lightning, in well under a second); ``--help-all`` prints LightningCLI's complete list (about 1,300 lines).
COMMON_OPTIONS = (
    (
        "--config PATH",
        "a YAML config, repeatable, later ones win: a file (a run's own <run>/config.yaml, your copy) or a "
        "packaged config by name: ag_sgdet, synthetic_demo, trainer/gpu_bf16, ... (`arn-lightning configs list`)",
    ),
    (
        "--ckpt_path PATH",
        "fit: resume exactly from <run>/checkpoints/last.ckpt; validate / test / predict: the "
        "checkpoint to evaluate (its own model is used)",
    ),
    ("--data.root DIR", "the Action Genome root (annotations/, frames/)"),
    ("--data.task NAME", "sgdet | sgcls | predcls"),
    ("--data.batch_size N", "training clips per batch and device"),
    ("--data.clip_len T", "frames per clip"),
    ("--data.eval_scheme NAME", "tiled | causal | keyframe: where an evaluated frame sits in its window"),
    ("--data.on_bad_frame MODE", "error | skip: what an unreadable frame does (docs/runs.md)"),
    ("--trainer.max_epochs N", "epochs to train"),
    ("--trainer.accelerator NAME", "cpu | gpu | auto"),
    ("--trainer.devices N", "devices (add --config trainer/ddp for several GPUs)"),
    ("--trainer.precision P", "32-true | bf16-mixed | 16-mixed"),
    ("--trainer.logger CLASS", "CSVLogger (default) | WandbLogger | TensorBoardLogger | false"),
    ("--trainer.default_root_dir DIR", "where runs go when the logger does not say"),
    ("--model.arch.backbone NAME", "resnet18 | resnet34 | resnet50"),
    ("--model.optim.lr LR", "learning rate of the transformer and heads"),
    ("--model.predictions_dir DIR", "test / predict: where the prediction file and metrics_test.json go"),
    ("--model.evaluation.triplet_nms T", "test: also score after OED's triplet NMS at IoU threshold T"),
    ("--seed_everything N", "the run's seed"),
    ("--print_config", "print the complete config of this command line and exit (it reruns the experiment)"),
)
#: The option groups of the complete list.
OPTION_GROUPS = (
    "--model.arch.*",
    "--model.loss.*",
    "--model.clip.*",
    "--model.prompts.*",
    "--model.optim.*",
    "--model.evaluation.*",
    "--model.post.*",
    "--data.*",
    "--trainer.*",
    "--checkpoint.*",
    "--last_checkpoint.*",
    "--report.*",
)
LIGHTNING_PURPOSE = {
    "fit": "train ARN (and validate each epoch)",
    "validate": "score a checkpoint on the validation split",
    "test": "score a checkpoint on the test split and write its prediction file and metrics_test.json",
    "predict": "write the prediction file of a split",
}


def lightning_help(command: str) -> str:
    """The short ``--help`` of a LightningCLI subcommand (:data:`COMMON_OPTIONS`)."""
    width = max(len(option) for option, _ in COMMON_OPTIONS) + 2
    lines = [
        f"usage: arn-lightning {command} [--config CONFIG.yaml ...] [--section.key=value ...] [--ckpt_path CKPT]",
        "",
        f"{command}: {LIGHTNING_PURPOSE[command]} (LightningCLI). Settings come from YAML configs and "
        "--key=value overrides, later ones winning.",
        "",
        "Most used options:",
    ]
    lines += [f"  {option:<{width}}{text}" for option, text in COMMON_OPTIONS]
    lines += [
        "",
        "Every option, in groups: " + ", ".join(OPTION_GROUPS) + ".",
        f"`arn-lightning {command} --help-all` lists them all (about 1,300 lines, a few seconds); the README's "
        "'Using it' and docs/runs.md show whole runs.",
    ]
    return "\n".join(lines)


def _usage() -> str:
    lines = [
        "usage: arn-lightning <command> [options]",
        "",
        "Lightning commands (--help: the usual options, --help-all: every option):",
    ]
    lines += [f"  {name:<12} {LIGHTNING_PURPOSE[name]}" for name in LIGHTNING_SUBCOMMANDS]
    lines += ["", "Tools:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in TOOLS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a LightningCLI subcommand or a tool; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from arn_lightning import __version__

        print(__version__)
        return 0
    command, rest = args[0], args[1:]
    if command in LIGHTNING_SUBCOMMANDS:
        if rest in (["-h"], ["--help"]):
            print(lightning_help(command))
            return 0
        from arn_lightning.training.lightning_cli import run_lightning_cli

        return run_lightning_cli([command, *["--help" if a == "--help-all" else a for a in rest]])
    if command not in TOOLS:
        print(f"arn-lightning: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(TOOLS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":  # `python -m arn_lightning.cli ...` behaves as `arn-lightning ...`
    sys.exit(main())
