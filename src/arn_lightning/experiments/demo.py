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
import math
import sys
import time
from pathlib import Path

from arn_lightning.atomic import atomic_path, atomic_write_json
from arn_lightning.vocab import CONSTRAINTS

#: The learning check of the demo: SGDet no-constraint R@20 on the synthetic test split.
CHECK_KEY = "no/R@20"
TRAINED_MIN = 0.5
UNTRAINED_MAX = 0.1
#: The K of the printed tables (and of the README's demo table).
TABLE_KS = (10, 20, 50, 100)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m arn_lightning.experiments.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (created)")
    parser.add_argument("--config", type=Path, default=Path("configs/synthetic_demo.yaml"), help="LightningCLI config")
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


#: The first cell of the README demo table's rows for the best and the last checkpoint.
README_ROWS = {"best": "trained", "last": "trained, last epoch"}


def readme_differences(metrics: dict[str, float], readme: Path, row: str = README_ROWS["best"]) -> list[str] | None:
    """The cells of the README's demo table (rows ``| <row> | <constraint> | R@10 ... mR@100 |``, in %) that this
    run's ``metrics`` do not reproduce to the printed 0.1; None when ``readme`` has no such table.

    Keeps the README's figures honest: every ``make demo`` says whether it reproduces them (the best checkpoint's
    rows ``trained``, the last checkpoint's rows ``trained, last epoch``).
    """
    if not readme.is_file():
        return None
    names = [f"R@{k}" for k in TABLE_KS] + [f"mR@{k}" for k in TABLE_KS]
    rows = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 + len(names) and cells[0] == row and cells[1] in CONSTRAINTS:
            rows[cells[1]] = cells[2:]
    if not rows:
        return None
    differences = []
    for constraint, stated in rows.items():
        for name, text in zip(names, stated):
            measured = 100 * metrics.get(f"{constraint}/{name}", math.nan)
            if f"{measured:.1f}" != text:
                differences.append(f"{constraint}/{name}: README {text}, this run {measured:.1f}")
    return differences


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns 0 when the learning check passes (or ``--no-check``)."""
    args = _parse(argv)
    start = time.time()
    out: Path = args.out.resolve()
    root = out / "data"
    from arn_lightning.data.synth import generate

    if not (root / "annotations" / "object_bbox_and_relationship.pkl").exists():
        print(f"[demo] generating the synthetic Action Genome into {root}")
        generate(root, videos=args.videos, frames=args.frames, seed=args.seed)

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
    predictions = out / "predictions_test.jsonl"

    from arn_lightning.commands.evaluate import evaluate

    offline = evaluate(str(root), str(predictions), split="test", task="sgdet")
    frames = _render_frames(root, predictions, out / "frames")
    _print_table("untrained model (synthetic test split, SGDet)", untrained)
    _print_table("trained model, best checkpoint (synthetic test split, SGDet)", trained)
    _print_table("trained model, last checkpoint (synthetic test split, SGDet)", trained_last)
    agree = abs(offline["no"]["R@20"] - trained[CHECK_KEY]) < 1e-6
    wall = time.time() - start
    readme = Path(__file__).resolve().parents[3] / "README.md"
    differences = readme_differences(trained, readme)
    last_differences = readme_differences(trained_last, readme, README_ROWS["last"])
    if differences is not None:
        found = differences + (last_differences or [])
        print(f"[demo] README Results: {'reproduced' if not found else 'NOT reproduced: ' + '; '.join(found)}")
    summary = {
        "untrained_" + CHECK_KEY: untrained[CHECK_KEY],
        "trained_" + CHECK_KEY: trained[CHECK_KEY],
        "last_" + CHECK_KEY: trained_last[CHECK_KEY],
        "offline_evaluate_agrees": agree,
        "readme_reproduced": None if differences is None else not (differences or last_differences),
        "wall_time_s": round(wall, 1),
        "checkpoint": str(best),
        "last_checkpoint": str(last),
        "predictions": str(predictions),
        "frames": [str(p) for p in frames],
        "metrics": trained,
        "last_metrics": trained_last,
    }
    atomic_write_json(out / "summary.json", summary, indent=2, sort_keys=False)
    passed = trained[CHECK_KEY] >= TRAINED_MIN and untrained[CHECK_KEY] <= UNTRAINED_MAX and agree
    print(
        f"\n[demo] SGDet no-constraint R@20: untrained {untrained[CHECK_KEY]:.3f} (must be <= {UNTRAINED_MAX}), "
        f"trained {trained[CHECK_KEY]:.3f} (must be >= {TRAINED_MIN}); offline evaluate agrees: {agree}"
    )
    print(
        f"[demo] {'PASS' if passed else 'FAIL'} in {wall / 60:.1f} min; outputs in {out}: checkpoint {best}, "
        f"predictions {predictions}, frames {out / 'frames'}, summary {out / 'summary.json'}"
    )
    return 0 if passed or args.no_check else 1


if __name__ == "__main__":
    sys.exit(main())
