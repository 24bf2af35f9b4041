"""The ``arn-lightning`` command: LightningCLI subcommands next to the project's own tools.

``fit | validate | test | predict`` go to LightningCLI (see :mod:`arn_lightning.lightning_cli`); every other
subcommand is a small tool module under :mod:`arn_lightning.commands` exposing ``main(argv) -> int``. Tool modules
are imported lazily so that ``arn-lightning stats`` does not pay for importing Lightning.
"""

from __future__ import annotations

import importlib
import sys
from typing import Dict, List, Optional

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

#: subcommand -> (module, one-line help)
TOOLS: Dict[str, tuple] = {
    "synth": ("arn_lightning.commands.synth", "generate the synthetic Action Genome dataset (real AG format)"),
    "stats": ("arn_lightning.commands.stats", "videos, frames, objects and predicates of an AG-format root"),
    "dump-frames": ("arn_lightning.commands.dump_frames", "decode annotated frames from Charades mp4 files"),
    "evaluate": ("arn_lightning.commands.evaluate", "score a prediction file (R@K / mR@K) against an AG root"),
    "infer": ("arn_lightning.commands.infer", "scene graphs for any video or frame folder"),
    "benchmark": ("arn_lightning.commands.benchmark", "speed benchmarks: data | model | metrics | train | infer"),
}


def _usage() -> str:
    lines = ["usage: arn-lightning <command> [options]", "", "Lightning commands (see --help of each):"]
    lines += [f"  {name:<12} LightningCLI {name}" for name in LIGHTNING_SUBCOMMANDS]
    lines += ["", "Tools:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in TOOLS.items()]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
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
        from arn_lightning.lightning_cli import run_lightning_cli

        return run_lightning_cli([command, *rest])
    if command not in TOOLS:
        print(f"arn-lightning: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(TOOLS[command][0])
    return int(module.main(rest) or 0)
