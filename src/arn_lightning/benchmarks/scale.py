"""``arn-lightning benchmark scale``: time and peak memory of the data tools at fractions of Action Genome's size.

For each fraction (default 0.1, 0.33 and 1) it generates, in a temporary folder, AG-format annotations with that
fraction of AG's frames (:data:`AG_TEST_FRAMES` test, :data:`AG_TRAIN_FRAMES` train; videos of
:data:`FRAMES_PER_VIDEO` frames, about 2.3 visible objects a frame) and then runs, each step in its own process:

=================  =================================================================================================
step               what runs
=================  =================================================================================================
``generate``       the annotation pickles written (not a tool; shown for scale)
``load (cold)``    :func:`arn_lightning.data.ag.load_annotations` with an empty cache: parse, filter, write the cache
``load (cached)``  the same again: read from the cache
``stats``          ``arn-lightning stats --json`` (cache warm)
``write``          a paper-shaped prediction file of the test split (100 pairs, 200 box rows a frame) written the way
                   ``test`` writes it (:class:`~arn_lightning.metrics.prediction_files.SortedPredictionSpool`,
                   frames added in a shuffled order), predictions generated on the fly
``evaluate``       ``arn-lightning evaluate --json`` of that file
``compare``        the web app's compare-tab loading (:func:`arn_lightning.app.logic.load_comparison`)
=================  =================================================================================================

Each step's wall time, CPU time and peak resident memory come from ``os.wait4`` of its process (the
``resource.getrusage`` children figures of that one child). Growth linear in time and flat in memory is the goal.

Example:
    arn-lightning benchmark scale --fractions 0.1 0.33 --out benchmark_scale
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from arn_lightning import vocab
from arn_lightning.atomic import atomic_write_json, atomic_write_text
from arn_lightning.data import ag

PROG = "arn-lightning benchmark scale"
#: Action Genome's kept frames (SGDet filtering), the size the fractions refer to.
AG_TEST_FRAMES = 54_371
AG_TRAIN_FRAMES = 166_785
FRAMES_PER_VIDEO = 24
FRAME_SIZE = (480, 270)
#: The paper model's output shape: pair queries and box rows a frame.
PAIRS, ROWS = 100, 200
STEPS = ("generate", "load (cold)", "load (cached)", "stats", "write", "evaluate", "compare")
DEFAULT_FRACTIONS = (0.1, 0.33, 1.0)


# ------------------------------------------------------------------------------------------------- generation
def _entries(rng: np.random.Generator, key: str, split: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The two pickle entries of one frame: a person box and 1..6 objects (about 1 in 8 invisible)."""
    width, height = FRAME_SIZE
    x1, y1 = rng.uniform(0, width * 0.5), rng.uniform(0, height * 0.3)
    person = np.array([[x1, y1, x1 + rng.uniform(60, width * 0.5), y1 + rng.uniform(80, height * 0.7)]], np.float32)
    person_entry = {
        "bbox": person,
        "bbox_score": np.ones(1, np.float32),
        "bbox_size": FRAME_SIZE,
        "bbox_mode": "xyxy",
        "keypoints": np.zeros((1, 17, 3), np.float32),
        "keypoints_logits": np.zeros((1, 17), np.float32),
    }
    objects = []
    for _ in range(int(rng.integers(1, 7))):
        name = vocab.OBJECT_CLASSES[int(rng.integers(1, vocab.NUM_OBJECT_CLASSES))]  # any class but the person
        w, h = rng.uniform(12, 160), rng.uniform(12, 120)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        labels = {
            kind: [str(p) for p in rng.choice(vocab.TYPE_PREDICATES[kind], count, replace=False)]
            for kind, count in (("attention", 1), ("spatial", int(rng.integers(1, 3))), ("contacting", 1))
        }
        objects.append(
            {
                "class": name,
                "bbox": (round(x, 2), round(y, 2), round(w, 2), round(h, 2)),
                **{f"{kind}_relationship": labels[kind] for kind in vocab.PREDICATE_TYPES},
                "visible": bool(rng.random() > 0.125),
                "metadata": {"tag": key, "set": split},
            }
        )
    return person_entry, objects


def generate_annotations(root: Path, fraction: float, seed: int = 0) -> dict[str, int]:
    """Write AG-format annotations with ``fraction`` of AG's test and train frames under ``root``.

    Returns:
        ``{"test": frames, "train": frames}`` written (before filtering).
    """
    rng = np.random.default_rng(seed)
    person: dict[str, Any] = {}
    objects: dict[str, Any] = {}
    counts = {"test": round(fraction * AG_TEST_FRAMES), "train": round(fraction * AG_TRAIN_FRAMES)}
    for split, frames in counts.items():
        for index in range(frames):
            key = f"{split[:2].upper()}{index // FRAMES_PER_VIDEO:05d}.mp4/{index % FRAMES_PER_VIDEO + 1:06d}.png"
            person[key], objects[key] = _entries(rng, key, split)
    annotations = root / ag.ANNOTATION_DIR
    annotations.mkdir(parents=True, exist_ok=True)
    for name, data in ((ag.PERSON_FILE, person), (ag.OBJECT_FILE, objects)):
        with (annotations / name).open("wb") as handle:
            pickle.dump(data, handle, protocol=pickle.HIGHEST_PROTOCOL)
    (annotations / ag.OBJECT_CLASSES_FILE).write_text("".join(n + "\n" for n in vocab.OBJECT_CLASSES))
    (annotations / ag.RELATIONSHIP_CLASSES_FILE).write_text("".join(n + "\n" for n in vocab.PREDICATES))
    return counts


def _prediction(rng: np.random.Generator, frame: ag.FrameAnnotation) -> dict[str, Any]:
    """A paper-shaped prediction of ``frame``: ``ROWS`` boxes (the ground truth's first, jittered) and ``PAIRS``
    pairs (person with each ground-truth object first)."""
    width, height = FRAME_SIZE
    corner = rng.uniform(0, 1, (ROWS, 2)) * (width * 0.7, height * 0.7)
    boxes = np.concatenate([corner, corner + rng.uniform(10, 140, (ROWS, 2))], axis=1).astype(np.float32)
    labels = rng.integers(1, vocab.NUM_OBJECT_CLASSES + 1, ROWS)
    gt = len(frame.labels)
    boxes[:gt] = np.sort(frame.boxes_xyxy.reshape(gt, 2, 2) + rng.normal(0, 2, (gt, 2, 2)), axis=1).reshape(gt, 4)
    labels[:gt] = frame.labels
    pairs = np.arange(2 * PAIRS).reshape(PAIRS, 2)
    pairs[: gt - 1] = np.stack([np.zeros(gt - 1, np.int64), np.arange(1, gt)], axis=1)
    scores = {kind: rng.random((PAIRS, size), dtype=np.float32) for kind, size in vocab.TYPE_SIZES.items()}
    return {
        "frame": frame.key,
        "boxes": boxes,
        "labels": labels,
        "scores": rng.random(ROWS, dtype=np.float32),
        "pairs": pairs,
        **scores,
    }


# ------------------------------------------------------------------------------------------------------ steps
def run_step(step: str, root: Path, predictions: Path) -> None:
    """Run one step in this process (the child side of :func:`measure`)."""
    if step == "load":
        ag.load_annotations(root, "sgdet")
    elif step == "stats":
        from arn_lightning.data.stats import dataset_stats

        json.dumps(dataset_stats(ag.load_annotations(root, "sgdet")))  # what `arn-lightning stats --json` does
    elif step == "write":
        from arn_lightning.metrics.prediction_files import SortedPredictionSpool

        frames = ag.load_annotations(root, "sgdet").frames("test")
        rng = np.random.default_rng(1)
        spool = SortedPredictionSpool()
        for index in rng.permutation(len(frames)).tolist():  # batches arrive out of key order under DDP
            spool.add(_prediction(rng, frames[index]))
        spool.write(predictions)
    elif step == "evaluate":
        from arn_lightning.metrics.scoring import evaluate

        evaluate(str(root), str(predictions))
    elif step == "compare":
        from arn_lightning.app.logic import load_comparison

        load_comparison(root, predictions)
    else:
        raise ValueError(f"Expected a step in load, stats, write, evaluate, compare but got {step!r}")


#: Runs its arguments as one child and prints that child's figures: the child is forked from this small process, as
#: Linux counts the memory of the process a child is forked from in the child's peak (``ru_maxrss``).
_LAUNCHER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"code": code, "seconds": wall, "cpu": usage.ru_utime + usage.ru_stime, "maxrss": usage.ru_maxrss}))
"""


def measure(args: Sequence[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``args`` as a child process; its wall seconds, CPU seconds and peak resident memory (MB), from
    ``resource.getrusage(RUSAGE_CHILDREN)`` of a small launcher process whose only child it is.

    Raises:
        RuntimeError: the child failed (its stderr's end in the message).
    """
    with tempfile.TemporaryFile() as errors:
        done = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, *args], env=env or None, stdout=subprocess.PIPE, stderr=errors
        )
        figures = json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else {"code": -1}
        if figures["code"]:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"Expected {' '.join(args)} to succeed but it exited {figures['code']}: {tail}")
    per_mb = 2**20 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"seconds": figures["seconds"], "cpu_seconds": figures["cpu"], "peak_mb": figures["maxrss"] / per_mb}


def run_fraction(fraction: float, folder: Path) -> dict[str, Any]:
    """Every step at ``fraction`` of AG's size in ``folder`` (left behind for the caller to remove)."""
    root, predictions = folder / "ag", folder / "predictions_test.jsonl"
    env = {**os.environ, ag.CACHE_ENV: str(folder / "cache"), "OMP_NUM_THREADS": "1"}
    python = [sys.executable, "-m", "arn_lightning.benchmarks.scale"]
    steps: dict[str, dict[str, float]] = {}
    steps["generate"] = measure([*python, "--generate", str(fraction), "--root", str(root)], env)
    for name, step in (("load (cold)", "load"), ("load (cached)", "load"), *((s, s) for s in STEPS[3:])):
        steps[name] = measure([*python, "--step", step, "--root", str(root), "--predictions", str(predictions)], env)
    test_frames = len(ag.load_annotations(root, "sgdet").frames("test"))
    return {
        "fraction": fraction,
        "test_frames": test_frames,
        "prediction_file_mb": predictions.stat().st_size / 1e6,
        "steps": steps,
    }


# ----------------------------------------------------------------------------------------------------- report
def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table: per fraction and step, seconds (CPU seconds) and peak memory."""
    head = "| fraction of AG | test frames | prediction file | " + " | ".join(f"`{s}`" for s in STEPS) + " |"
    lines = [head, "|" + "---|" * (3 + len(STEPS))]
    for row in report["rows"]:
        cells = [
            f"{row['steps'][s]['seconds']:.1f} s ({row['steps'][s]['cpu_seconds']:.1f} CPU s), "
            f"{row['steps'][s]['peak_mb']:,.0f} MB"
            for s in STEPS
        ]
        lines.append(
            f"| {row['fraction']:g} | {row['test_frames']:,} | {row['prediction_file_mb']:,.0f} MB | "
            + " | ".join(cells)
            + " |"
        )
    machine = report["machine"]
    lines += [
        "",
        f"{machine['cpus']} CPU cores, {machine['platform']}, {report['date']}; wall (CPU) time and peak "
        "resident memory of each step's process.",
    ]
    return "\n".join(lines) + "\n"


def run(fractions: Sequence[float], keep: Path | None = None) -> dict[str, Any]:
    """Measure every fraction; the report (``rows``, ``machine``, ``date``)."""
    import platform

    rows = []
    for fraction in fractions:
        if keep is not None:
            rows.append(run_fraction(fraction, keep / f"fraction_{fraction:g}"))
            continue
        with tempfile.TemporaryDirectory(prefix="arn_scale_") as tmp:
            rows.append(run_fraction(fraction, Path(tmp)))
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": list(os.getloadavg())}
    return {"rows": rows, "machine": machine, "date": dt.date.today().isoformat()}


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=list(DEFAULT_FRACTIONS), help="of AG's size")
    parser.add_argument("--out", type=Path, default=None, help="folder for scale.json / scale.md")
    parser.add_argument("--keep", type=Path, default=None, help="keep the generated files in this folder")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)  # the child side: one step
    parser.add_argument("--generate", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--predictions", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv))
    if any(not 0 < f <= 1 for f in args.fractions):
        parser.error(f"Expected fractions in (0, 1] but got {args.fractions}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with the hidden ``--step`` / ``--generate``, one step); prints the table."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.generate is not None:
        generate_annotations(args.root, args.generate)
        return 0
    if args.step is not None:
        run_step(args.step, args.root, args.predictions)
        return 0
    report = run(args.fractions, args.keep)
    text = markdown(report)
    if args.out is not None:
        atomic_write_json(args.out / "scale.json", report, indent=1, sort_keys=False)
        atomic_write_text(args.out / "scale.md", text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
