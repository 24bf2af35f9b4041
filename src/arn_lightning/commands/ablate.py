"""``arn-lightning ablate --rows t3|t4|all [--seeds N] [--size demo|tiny] [--root DIR] [--association S]
[--out DIR] [--accelerator A]``: the paper's Tables 3 and 4 on the synthetic Action Genome (docs/ablation.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arn_lightning.experiments.ablation import DEFAULT_ASSOCIATION, ROW_CHOICES, SIZES, AblationError, run_ablation


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="arn-lightning ablate",
        description="Train and test every row of the paper's ablation Tables 3 (t3: CE, focal, CLIP, PAP, HA) and "
        "4 (t4: add, mlp, conditional fusion) on a synthetic Action Genome with association structure, one run "
        "folder per (row, seed); resumable: finished runs are skipped, an interrupted one resumes from its "
        "last.ckpt. Writes ablation.json and ablation.md (docs/ablation.md).",
    )
    parser.add_argument(
        "--rows",
        required=True,
        help=f"the table(s) to run: {', '.join(ROW_CHOICES)}, or comma-separated row names (e.g. t3_row5_full)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per row, 0..N-1 (default 3)")
    parser.add_argument(
        "--size",
        choices=tuple(SIZES),
        default="demo",
        help="demo: the data and training of `make demo` (default); tiny: a seconds-long run for tests",
    )
    parser.add_argument("--root", type=Path, default=None, help="an existing AG-format root (default: generate one)")
    parser.add_argument(
        "--association",
        type=float,
        default=DEFAULT_ASSOCIATION,
        help=f"association strength of the generated root, in [0, 1] (default {DEFAULT_ASSOCIATION}; "
        "ignored with --root)",
    )
    parser.add_argument("--out", type=Path, default=Path("ablation_output"), help="output folder")
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator of the fits (default cpu)")
    return parser


def main(argv: list[str]) -> int:
    """Run the study; exit 1 for an unwritable --out or a root that is not AG format, 2 for a bad setting or an
    --out holding results made with other settings."""
    args = build_parser().parse_args(argv)
    try:
        run_ablation(
            args.rows,
            args.seeds,
            args.size,
            args.out,
            root=args.root,
            association=args.association,
            accelerator=args.accelerator,
        )
    except AblationError as exc:
        print(f"arn-lightning ablate: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
