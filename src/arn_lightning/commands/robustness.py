"""``arn-lightning robustness --config <run>/config.yaml --ckpt_path CKPT [--corruptions all|NAME,...]
[--severities 1-5] [--out DIR] [--num_workers N]``: the checkpoint's recall under image and video corruptions
(docs/robustness.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arn_lightning.data.corruptions import CORRUPTIONS
from arn_lightning.experiments.robustness import RobustnessError, parse_corruptions, parse_severities, run_robustness


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` that reports a :class:`RobustnessError` as a usage error (exit 2)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except RobustnessError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return convert


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="arn-lightning robustness",
        description="Test a checkpoint on the test split with every frame corrupted (ImageNet-C family, sun glare, "
        "rain; dropped, frozen or low-bit-rate frames), one corruption x severity at a time, through the same path as "
        "`test`; resumable. Writes <run>/robustness/: the prediction and metrics files of each, robustness.md / .csv "
        "/ .json (R@K and both mR@K per constraint, relative drop, mean), robustness.png and examples/.",
    )
    parser.add_argument("--config", type=Path, required=True, help="the run's config.yaml")
    parser.add_argument("--ckpt_path", type=Path, required=True, help="the checkpoint to test")
    parser.add_argument(
        "--corruptions",
        type=_argument_type(parse_corruptions),
        default="all",
        help=f"'all' (default) or comma-separated names: {', '.join(CORRUPTIONS)}",
    )
    parser.add_argument(
        "--severities",
        type=_argument_type(parse_severities),
        default="1-5",
        help="severities in 1..5: a range and / or a list, e.g. 1-5 (default) or 1,3,5",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default <config's folder>/robustness)")
    parser.add_argument("--num_workers", type=int, default=None, help="DataLoader workers (default: the config's)")
    return parser


def main(argv: list[str]) -> int:
    """Run the benchmark; exit 2 for a bad setting, a missing input or an --out holding other results."""
    args = build_parser().parse_args(argv)
    if args.num_workers is not None and args.num_workers < 0:
        build_parser().error(f"--num_workers: Expected a number >= 0 but got {args.num_workers}")
    try:
        run_robustness(args.config, args.ckpt_path, args.corruptions, args.severities, args.out, args.num_workers)
    except RobustnessError as exc:
        print(f"arn-lightning robustness: error: {exc}", file=sys.stderr)
        return 2
    return 0
