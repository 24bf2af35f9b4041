"""``arn-lightning benchmark model``: parameter count and CPU forward time of the ARN model (random weights).

Prints the trainable parameters of the model alone (the CLIP towers are not part of it), broken down by module,
next to the paper's 54.06 M, and the median forward time of one clip (``torch.no_grad``, eval mode) at the
full input size and at a small one.

The triplet classifiers need triplet categories; the benchmark uses every (predicate, object) combination of each
type (3, 6 and 17 predicates x 35 non-person objects = 910 classes), an upper bound on what the training split
contains, so that the count errs on the large side.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from arn_lightning.build import build_model
from arn_lightning.models.arn import ARN
from arn_lightning.models.config import ARNConfig
from arn_lightning.vocab import NUM_OBJECT_CLASSES, PERSON_LABEL, PREDICATE_TYPES, TYPE_OFFSETS, TYPE_SIZES

#: Parameter count reported by the paper (Table 2) for ResNet-50, D=256, 6 encoder / 3 decoder layers.
PAPER_PARAMS_M = 54.06
#: Accepted relative deviation from the paper's count.
PARAM_TOLERANCE = 0.15
CONFIGS: dict[str, ARNConfig] = {
    "paper": ARNConfig(),
    "tiny": ARNConfig(
        backbone="resnet18",
        hidden_dim=32,
        nheads=2,
        ffn_dim=64,
        enc_layers=1,
        entity_layers=2,
        predicate_layers=2,
        num_queries=4,
        clip_embed_dim=32,
    ),
}
#: Modules whose children get their own row in the breakdown.
EXPANDED = ("entity", "predicate", "classifiers")


def all_triplet_categories() -> dict[str, list[list[int]]]:
    """Every (predicate, object) combination of each predicate type, the person excluded as object."""
    objects = [o for o in range(1, NUM_OBJECT_CLASSES + 1) if o != PERSON_LABEL]
    return {
        kind: [[p, o] for p in range(TYPE_OFFSETS[kind], TYPE_OFFSETS[kind] + TYPE_SIZES[kind]) for o in objects]
        for kind in PREDICATE_TYPES
    }


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_table(model: nn.Module) -> list[tuple[str, int]]:
    """``(module name, trainable parameters)`` rows, with the children of :data:`EXPANDED` split out."""
    rows: list[tuple[str, int]] = []
    for name, child in model.named_children():
        if name in EXPANDED:
            rows += [(f"{name}.{sub}", _trainable(grandchild)) for sub, grandchild in child.named_children()]
            own = sum(p.numel() for p in child.parameters(recurse=False) if p.requires_grad)
            rows += [(f"{name} (own)", own)] if own else []
        else:
            rows.append((name, _trainable(child)))
    own = sum(p.numel() for p in model.parameters(recurse=False) if p.requires_grad)
    return rows + ([("(own)", own)] if own else [])


def time_forward(model: ARN, height: int, width: int, runs: int, warmup: int) -> float:
    """Median seconds of one forward of a clip ``[1, T, 3, height, width]`` (eval mode, ``torch.no_grad``)."""
    frames = model.config.num_frames
    pixel_values = torch.randn(1, frames, 3, height, width)
    pixel_mask = torch.ones(1, frames, height, width, dtype=torch.bool)
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(pixel_values, pixel_mask)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="arn-lightning benchmark model", description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="paper")
    parser.add_argument("--height", type=int, default=600, help="full input height (the data resize's short side)")
    parser.add_argument("--width", type=int, default=1000, help="full input width (the data resize's long side cap)")
    parser.add_argument("--small-height", type=int, default=224)
    parser.add_argument("--small-width", type=int, default=384)
    parser.add_argument("--runs", type=int, default=3, help="timed forwards per size (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args(list(argv))


def _print_parameters(model: ARN, config_name: str) -> None:
    rows = parameter_table(model)
    total = sum(n for _, n in rows)
    print(f"ARN ({config_name}) trainable parameters, CLIP towers excluded")
    print(f"{'module':<34}{'params':>14}{'share':>9}")
    for name, count in rows:
        print(f"{name:<34}{count:>14,}{count / total:>9.1%}")
    print(f"{'total':<34}{total:>14,}  = {total / 1e6:.2f} M")
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    print(
        f"frozen backbone parameters: {frozen:,}; triplet classes: "
        + ", ".join(f"{k} {model.vocabulary.num_classes(k)}" for k in PREDICATE_TYPES)
    )
    if config_name == "paper":
        deviation = total / 1e6 / PAPER_PARAMS_M - 1
        verdict = "within" if abs(deviation) <= PARAM_TOLERANCE else "OUTSIDE"
        print(f"paper: {PAPER_PARAMS_M:.2f} M -> deviation {deviation:+.1%} ({verdict} +-{PARAM_TOLERANCE:.0%})")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns 0."""
    args = _parse(argv or [])
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = replace(CONFIGS[args.config], backbone_weights=None)
    model = build_model(config, all_triplet_categories()).model
    _print_parameters(model, args.config)
    print(
        f"CPU forward of one clip (T={config.num_frames}), median of {args.runs} after {args.warmup} warm-up, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    for height, width in ((args.height, args.width), (args.small_height, args.small_width)):
        seconds = time_forward(model, height, width, args.runs, args.warmup)
        print(f"  {height}x{width}: {seconds * 1000:.0f} ms/clip = {config.num_frames / seconds:.2f} frames/s")
    return 0
