"""The main job end to end on the embedded synthetic Action Genome (``make demo``).

1. generate the synthetic AG dataset (real AG file format) unless it is already there;
2. score the untrained model on the test split (the floor);
3. ``fit`` through the LightningCLI with the demo config;
4. ``test`` the best checkpoint through the CLI from the run's saved ``config.yaml`` (writes the prediction file),
   and the last one (``last/``): the best epoch is chosen on the test split (as on Action Genome, which has no
   validation split), so both are reported;
5. re-score the prediction file offline with ``arn-lightning evaluate`` and check it agrees with the metric;
6. draw a few test frames with their predicted scene graphs; print the R@K / mR@K tables (both mR definitions) and
   the learning check (on the best checkpoint).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from arn_lightning.atomic import atomic_path, atomic_write_json
from arn_lightning.configs import packaged_config, resolve_config
from arn_lightning.vocab import CONSTRAINTS

#: The learning check of the demo: SGDet no-constraint R@20 on the synthetic test split.
CHECK_KEY = "no/R@20"
TRAINED_MIN = 0.5
UNTRAINED_MAX = 0.1
#: The packaged config of the demo (``arn-lightning configs show synthetic_demo``).
DEMO_CONFIG = "synthetic_demo"
#: The K of the printed tables (and of the README's demo table).
TABLE_KS = (10, 20, 50, 100)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m arn_lightning.experiments.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (created)")
    parser.add_argument(
        "--config",
        type=resolve_config,
        default=DEMO_CONFIG,
        help=f"LightningCLI config: a file, or a packaged config's name (default {DEMO_CONFIG})",
    )
    parser.add_argument("--videos", type=int, default=240, help="synthetic videos (train + test)")
    parser.add_argument("--frames", type=int, default=8, help="annotated frames per synthetic video")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset")
    parser.add_argument("--no-check", action="store_true", help="exit 0 even if the learning check fails")
    return parser.parse_args(argv)


def run_cli(args: list[str]):
    from arn_lightning.training.lightning_cli import build_cli

    argv, sys.argv = sys.argv, sys.argv[:1]  # the demo's own flags are not LightningCLI arguments
    try:
        return build_cli(args)
    finally:
        sys.argv = argv


def test_args(config: Path, root: Path, out: Path, ckpt: Path | None, extra: list[str]) -> list[str]:
    """The LightningCLI arguments of a ``test`` of ``ckpt`` (None: the untrained model) writing into ``out``."""
    args = [
        "test",
        "--config",
        str(config),
        f"--data.root={root}",
        f"--model.predictions_dir={out}",
        f"--trainer.default_root_dir={out}",
        "--trainer.logger=false",
        *extra,
    ]
    if ckpt is not None:
        args.append(f"--ckpt_path={ckpt}")
    return args


def score_checkpoint(config: Path, root: Path, out: Path, ckpt: Path | None, extra: list[str]) -> dict[str, float]:
    """Run ``test`` through the CLI; returns the metric values (``no/R@20``, ...) and leaves the prediction file."""
    cli = run_cli(test_args(config, root, out, ckpt, extra))
    return dict(cli.model.last_metrics)


def _render_frames(root: Path, predictions: Path, out: Path, count: int = 4) -> list[Path]:
    """Draw the first ``count`` predicted test frames with their top triplets."""
    from PIL import Image

    from arn_lightning.data.ag import parse_frame_key
    from arn_lightning.drawing.annotate import annotate_frame
    from arn_lightning.metrics.predictions import read_predictions
    from arn_lightning.scene_graph import FrameGraph, rank_triplets

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, pred in enumerate(read_predictions(predictions)):
        if i == count:
            break
        image = Image.open(root / "frames" / pred["frame"]).convert("RGB")
        number = parse_frame_key(pred["frame"], str(predictions))[1]
        graph = FrameGraph(i, number, math.nan, pred, rank_triplets(pred, top_k=6, threshold=0.05))
        path = out / (pred["frame"].replace("/", "_"))
        with atomic_path(path) as tmp:
            annotate_frame(image, graph).save(tmp, format="PNG")
        paths.append(path)
    return paths


def _print_table(title: str, metrics: dict[str, float]) -> None:
    """R@K and both mR@K definitions (``mR``: aggregated over the split, ``mRpf``: per frame; docs/metrics.md)."""
    ks = TABLE_KS
    head = "".join(f"{'R@' + str(k):>8}" for k in ks) + "".join(f"{'mR@' + str(k):>8}" for k in ks)
    head += "".join(f"{'mRpf@' + str(k):>9}" for k in ks)
    print(f"\n{title}\n{'':<6}{head}")
    for constraint in CONSTRAINTS:
        cells = [metrics.get(f"{constraint}/R@{k}", float("nan")) for k in ks]
        cells += [metrics.get(f"{constraint}/mR@{k}", float("nan")) for k in ks]
        line = f"{constraint:<6}" + "".join(f"{100 * v:8.1f}" for v in cells)
        line += "".join(f"{100 * metrics.get(f'{constraint}/mR_per_frame@{k}', float('nan')):9.1f}" for k in ks)
        print(line)


#: The packaged copy of the README's demo table (``make demo``'s numbers, in %, with the machine they come from).
REFERENCE_FILE = "demo_reference.json"
#: The checkpoints of the table: the best one (README rows ``trained``) and the last one (``trained, last epoch``).
REFERENCE_ROWS = ("best", "last")


def read_reference() -> dict[str, Any]:
    """The README's demo table as shipped in the package (:data:`REFERENCE_FILE`): ``machine``, ``torch``, ``date``
    and ``rows`` (``best`` / ``last`` -> ``"<constraint>/<R@K | mR@K>"`` -> value in %)."""
    return json.loads(resources.files(__package__).joinpath(REFERENCE_FILE).read_text(encoding="utf-8"))


def reference_differences(metrics: dict[str, float], stated: dict[str, float]) -> list[tuple[str, float, float]]:
    """The cells of ``stated`` (name -> %, as printed to 0.1) that ``metrics`` (fractions) do not reproduce to the
    printed 0.1, as ``(name, stated %, measured %)``, in ``stated``'s order."""
    differences = []
    for name, value in stated.items():
        measured = 100 * metrics.get(name, math.nan)
        if f"{measured:.1f}" != f"{value:.1f}":
            differences.append((name, value, measured))
    return differences


def describe_reference(measured: dict[str, dict[str, float]], reference: dict[str, Any], machine: str) -> list[str]:
    """What comparing this run with the README's table means, in a few lines printed once: the README's machine,
    this run's ``machine``, how many cells differ and the largest difference; the learning check stays the verdict.

    Args:
        measured: ``best`` / ``last`` -> this run's test metrics (fractions).
        reference: :func:`read_reference`.
        machine: this run's CPU, cores and torch, in words.
    """
    found = {row: reference_differences(measured[row], reference["rows"][row]) for row in REFERENCE_ROWS}
    cells = sum(len(reference["rows"][row]) for row in REFERENCE_ROWS)
    head = (
        f"[demo] README table: measured on {reference['machine']}, torch {reference['torch']}, {reference['date']}; "
        f"this run: {machine}."
    )
    if not any(found.values()):
        return [f"{head} This run reproduces all {cells} cells."]
    every = [(row, *cell) for row in REFERENCE_ROWS for cell in found[row]]
    row, name, stated, value = max(every, key=lambda d: (abs(d[3] - d[2]), -REFERENCE_ROWS.index(d[0])))
    same = found["best"] == found["last"] and measured["best"] == measured["last"]
    best_of = f"{len(found['best'])} of the best checkpoint's {len(reference['rows']['best'])} cells differ"
    counts = (
        f"{best_of} (the last checkpoint is the best one: the same cells)"
        if same
        else f"{best_of}, {len(found['last'])} of the last checkpoint's"
    )
    return [
        f"{head} {counts}; the largest: {row} {name} {stated:.1f} there, {value:.1f} here "
        f"({value - stated:+.1f} points).",
        "[demo] Another CPU or torch build trains to other numbers (README, Results); the learning check below is "
        "the verdict, not this table.",
    ]


def compare_with_reference(args: argparse.Namespace, measured: dict[str, dict[str, float]]) -> bool | None:
    """Print :func:`describe_reference` for this run (skipped, with a line saying why, when the run is not the
    README's: another config, dataset size or seed); returns whether every cell was reproduced (None: skipped)."""
    defaults = vars(_parse([])) | {"config": packaged_config(DEMO_CONFIG)}
    changed = [f"--{k}" for k in ("config", "videos", "frames", "seed") if getattr(args, k) != defaults[k]]
    if changed:
        print(f"[demo] README table: not compared (this run's {', '.join(changed)}: not the README demo's)")
        return None
    import torch

    from arn_lightning.benchmarks.suite import machine

    here = machine(torch.device("cpu"))
    reference = read_reference()
    for line in describe_reference(
        measured, reference, f"{here['cpu']}, {here['cpu_cores_usable']} usable cores, torch {here['torch']}"
    ):
        print(line)
    return not any(reference_differences(measured[row], reference["rows"][row]) for row in REFERENCE_ROWS)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns 0 when the learning check passes (or ``--no-check``)."""
    args = _parse(argv)
    start = time.time()
    out: Path = args.out.resolve()
    root = out / "data"
    _ensure_root(root, args)
    untrained, trained, trained_last, best, last = _train_and_score(args, root, out)
    predictions = out / "predictions_test.jsonl"

    from arn_lightning.metrics.scoring import evaluate

    offline = evaluate(str(root), str(predictions), split="test", task="sgdet")
    frames = _render_frames(root, predictions, out / "frames")
    _print_table("untrained model (synthetic test split, SGDet)", untrained)
    _print_table("trained model, best checkpoint (synthetic test split, SGDet)", trained)
    _print_table("trained model, last checkpoint (synthetic test split, SGDet)", trained_last)
    agree = abs(offline["no"]["R@20"] - trained[CHECK_KEY]) < 1e-6
    wall = time.time() - start
    reproduced = compare_with_reference(args, {"best": trained, "last": trained_last})
    summary = {
        "untrained_" + CHECK_KEY: untrained[CHECK_KEY],
        "trained_" + CHECK_KEY: trained[CHECK_KEY],
        "last_" + CHECK_KEY: trained_last[CHECK_KEY],
        "offline_evaluate_agrees": agree,
        "readme_reproduced": reproduced,
        "wall_time_s": round(wall, 1),
        "checkpoint": str(best),
        "last_checkpoint": str(last),
        "predictions": str(predictions),
        "frames": [str(p) for p in frames],
        "metrics": trained,
        "last_metrics": trained_last,
    }
    atomic_write_json(out / "summary.json", summary, indent=2, sort_keys=False)
    return _verdict(summary, wall, out, args.no_check)


def _ensure_root(root: Path, args: argparse.Namespace) -> None:
    """Generate the synthetic Action Genome at ``root`` unless its annotations are there."""
    from arn_lightning.data.synth import generate

    if not (root / "annotations" / "object_bbox_and_relationship.pkl").exists():
        print(f"[demo] generating the synthetic Action Genome into {root}")
        generate(root, videos=args.videos, frames=args.frames, seed=args.seed)


def _train_and_score(args: argparse.Namespace, root: Path, out: Path) -> tuple[dict, dict, dict, Path, Path]:
    """Score the untrained model, fit (LightningCLI) and score the best and the last checkpoints on the test split:
    ``(untrained, best metrics, last metrics, best checkpoint, last checkpoint)``."""
    print("[demo] scoring the untrained model")
    untrained = score_checkpoint(args.config, root, out / "untrained", None, [])
    print("[demo] training (LightningCLI fit)")
    fit = run_cli(
        [
            "fit",
            "--config",
            str(args.config),
            f"--data.root={root}",
            f"--trainer.default_root_dir={out}/train",
            f"--trainer.logger.init_args.save_dir={out}/train",
        ]
    )
    best = Path(fit.trainer.checkpoint_callback.best_model_path)
    last = next(
        Path(c.best_model_path)
        for c in fit.trainer.checkpoint_callbacks
        if getattr(c, "monitor", None) is None and getattr(c, "best_model_path", "")
    )
    saved_config = Path(fit.trainer.log_dir) / "config.yaml"
    print(f"[demo] testing {best.name} (LightningCLI test from {saved_config})")
    trained = score_checkpoint(saved_config, root, out, best, [])
    print(f"[demo] testing {last.name}, the last epoch (the best one is chosen on the test split)")
    trained_last = score_checkpoint(saved_config, root, out / "last", last, [])
    return untrained, trained, trained_last, best, last


def _verdict(summary: dict[str, Any], wall: float, out: Path, no_check: bool) -> int:
    """Print the learning check of ``summary`` (``summary.json``'s content; ``wall`` in seconds) and return the exit
    code: 0 when it passes or with ``no_check``."""
    untrained, trained = summary["untrained_" + CHECK_KEY], summary["trained_" + CHECK_KEY]
    agree = summary["offline_evaluate_agrees"]
    passed = trained >= TRAINED_MIN and untrained <= UNTRAINED_MAX and agree
    print(
        f"\n[demo] SGDet no-constraint R@20: untrained {untrained:.3f} (must be <= {UNTRAINED_MAX}), "
        f"trained {trained:.3f} (must be >= {TRAINED_MIN}); offline evaluate agrees: {agree}"
    )
    print(
        f"[demo] {'PASS' if passed else 'FAIL'} in {wall / 60:.1f} min; outputs in {out}: checkpoint "
        f"{summary['checkpoint']}, predictions {summary['predictions']}, frames {out / 'frames'}, summary "
        f"{out / 'summary.json'}"
    )
    return 0 if passed or no_check else 1


if __name__ == "__main__":
    sys.exit(main())
