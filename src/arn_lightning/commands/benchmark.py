"""``arn-lightning benchmark <name> [options]``: dispatches to :mod:`arn_lightning.benchmarks.<name>`."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("data", "model", "metrics", "train", "infer", "streaming", "scale", "suite")


def main(argv: list[str]) -> int:
    """Run one benchmark; ``argv[0]`` names it, the rest are its own options."""
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        print(f"usage: arn-lightning benchmark {{{'|'.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(f"arn_lightning.benchmarks.{argv[0]}")
    return int(module.main(argv[1:]) or 0)
