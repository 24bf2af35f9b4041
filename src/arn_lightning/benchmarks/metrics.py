"""``arn-lightning benchmark metrics``: scoring speed and memory of :class:`SceneGraphRecall` on SGDet-like frames.

Frames are synthetic but shaped like a one-stage model's SGDet output: ``P`` pair queries with a subject and an
object box each (``R = 2P`` rows), about half of them near a ground-truth (person, object) pair with a mostly right
object label, predicate scores from noisy logits boosted on the true labels (so that some exceed the 0.9 "semi"
threshold); ground truth has about 5 objects with 1 attention, 1-2 spatial and 1-2 contacting labels each.
A pool of frames is generated once and cycled, so that memory measures the metric, not the data.

Example:
    >>> from arn_lightning.benchmarks.metrics import main
    >>> main(["--frames", "64", "--pairs", "10", "--pool", "8"])  # doctest: +ELLIPSIS
    metrics benchmark: 64 frames ...
    0
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any

import numpy as np
import torch

from arn_lightning import vocab
from arn_lightning.metrics.recall import SceneGraphRecall

FRAME_WIDTH, FRAME_HEIGHT = 480, 270  # typical Charades frame
MEAN_OBJECTS = 5
NEAR_GT_FRACTION = 0.5  # queries placed near a GT pair
RIGHT_LABEL_PROBABILITY = 0.7
BOX_JITTER = 0.08  # relative to the box size
LABEL_BOOST = 3.0  # logit added on the true predicates of a near-GT query


def _random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    """float32 ``[count, 4]`` xyxy boxes inside the frame, sides of 20..60 % of the frame."""
    size = rng.uniform(0.2, 0.6, (count, 2)) * (FRAME_WIDTH, FRAME_HEIGHT)
    corner = rng.uniform(0.0, 1.0, (count, 2)) * ((FRAME_WIDTH, FRAME_HEIGHT) - size)
    return np.concatenate([corner, corner + size], axis=1).astype(np.float32)


def _multi_hot(rng: np.random.Generator, count: int, size: int, low: int, high: int) -> np.ndarray:
    """int64 ``[count, size]`` with ``low..high`` distinct labels per row."""
    ranks = rng.random((count, size)).argsort(axis=1).argsort(axis=1)  # a random permutation per row
    return (ranks < rng.integers(low, high + 1, (count, 1))).astype(np.int64)


def random_target(rng: np.random.Generator, frame: str) -> dict[str, Any]:
    """A metric ground truth with about ``MEAN_OBJECTS`` objects."""
    num = int(np.clip(rng.poisson(MEAN_OBJECTS), 1, 3 * MEAN_OBJECTS))
    return {
        "frame": frame,
        "boxes": torch.from_numpy(_random_boxes(rng, num + 1)),
        "labels": torch.from_numpy(
            np.concatenate([[vocab.PERSON_LABEL], rng.integers(2, vocab.NUM_OBJECT_CLASSES + 1, num)])
        ),
        "attention": torch.from_numpy(_multi_hot(rng, num, 3, 1, 1)),
        "spatial": torch.from_numpy(_multi_hot(rng, num, 6, 1, 2)),
        "contacting": torch.from_numpy(_multi_hot(rng, num, 17, 1, 2)),
    }


def _jitter(rng: np.random.Generator, boxes: np.ndarray) -> np.ndarray:
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    return (boxes + rng.normal(0.0, BOX_JITTER, boxes.shape) * size).astype(np.float32)


def _predicate_scores(rng: np.random.Generator, truth: np.ndarray, near: np.ndarray, kind: str) -> torch.Tensor:
    logits = rng.normal(-2.0, 1.5, truth.shape) + LABEL_BOOST * (truth > 0) * near[:, None]
    if kind == "attention":
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return torch.from_numpy((exp / exp.sum(axis=1, keepdims=True)).astype(np.float32))
    return torch.from_numpy((1.0 / (1.0 + np.exp(-logits))).astype(np.float32))


def random_prediction(rng: np.random.Generator, target: dict[str, Any], num_pairs: int) -> dict[str, Any]:
    """A one-stage SGDet-like prediction for ``target``: ``num_pairs`` queries, rows ``2i`` / ``2i+1``."""
    gt_boxes, gt_labels = target["boxes"].numpy(), target["labels"].numpy()
    near = rng.random(num_pairs) < NEAR_GT_FRACTION
    which = rng.integers(1, len(gt_labels), num_pairs)  # the GT object a query is about
    sub = np.where(near[:, None], _jitter(rng, np.repeat(gt_boxes[:1], num_pairs, 0)), _random_boxes(rng, num_pairs))
    obj = np.where(near[:, None], _jitter(rng, gt_boxes[which]), _random_boxes(rng, num_pairs))
    right = near & (rng.random(num_pairs) < RIGHT_LABEL_PROBABILITY)
    obj_labels = np.where(right, gt_labels[which], rng.integers(2, vocab.NUM_OBJECT_CLASSES + 1, num_pairs))
    pred = {
        "frame": target["frame"],
        "boxes": torch.from_numpy(np.stack([sub, obj], axis=1).reshape(-1, 4)),
        "labels": torch.from_numpy(np.stack([np.full(num_pairs, vocab.PERSON_LABEL), obj_labels], 1).ravel()),
        "scores": torch.from_numpy(rng.uniform(0.05, 1.0, 2 * num_pairs).astype(np.float32)),
        "pairs": torch.arange(2 * num_pairs).reshape(num_pairs, 2),
    }
    for kind in vocab.PREDICATE_TYPES:
        pred[kind] = _predicate_scores(rng, target[kind].numpy()[which - 1], near, kind)
    return pred


def random_frames(count: int, num_pairs: int, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``count`` (prediction, target) frames as two lists, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    targets = [random_target(rng, f"bench{i // 100:05d}.mp4/{i % 100:06d}.png") for i in range(count)]
    return [random_prediction(rng, target, num_pairs) for target in targets], targets


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def run(frames: int, pairs: int, batch: int, pool: int, checkpoint: int, validate: bool) -> dict[str, float]:
    """Score ``frames`` frames in batches (cycling a pool), timing the metric only; returns the figures."""
    preds, targets = random_frames(pool, pairs)
    metric = SceneGraphRecall(validate_args=validate)
    wall, cpu, done, rss_at_checkpoint = 0.0, 0.0, 0, float("nan")
    while done < frames:
        size = min(batch, frames - done)
        index = [(done + i) % pool for i in range(size)]
        batch_preds, batch_targets = [preds[i] for i in index], [targets[i] for i in index]
        start, start_cpu = time.perf_counter(), time.process_time()
        metric.update(batch_preds, batch_targets)
        wall, cpu = wall + time.perf_counter() - start, cpu + time.process_time() - start_cpu
        done += size
        if done >= checkpoint and rss_at_checkpoint != rss_at_checkpoint:  # first time past the checkpoint
            rss_at_checkpoint = _peak_rss_mib()
    start, start_cpu = time.perf_counter(), time.process_time()
    results = metric.compute()
    wall, cpu = wall + time.perf_counter() - start, cpu + time.process_time() - start_cpu
    return {
        "frames": float(frames),
        "seconds": wall,
        "cpu_seconds": cpu,
        "frames_per_second": frames / wall,
        "frames_per_cpu_second": frames / cpu,
        "peak_rss_checkpoint_mib": rss_at_checkpoint,
        "peak_rss_end_mib": _peak_rss_mib(),
        "with_R@20": results["with/R@20"].item(),
        "semi_R@20": results["semi/R@20"].item(),
        "no_R@20": results["no/R@20"].item(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures (one core: ``torch.set_num_threads(1)``)."""
    parser = argparse.ArgumentParser(
        prog="arn-lightning benchmark metrics",
        description="Scoring speed (frames per CPU second, one thread) and peak memory of SceneGraphRecall on "
        "synthetic SGDet-like frames, the three constraints together.",
    )
    parser.add_argument("--frames", type=int, default=10_000, help="frames to score")
    parser.add_argument("--pairs", type=int, default=100, help="predicted pairs per frame")
    parser.add_argument("--batch", type=int, default=64, help="frames per update() call")
    parser.add_argument("--pool", type=int, default=256, help="distinct generated frames, cycled")
    parser.add_argument("--checkpoint", type=int, default=2_000, help="report the peak RSS after this many frames")
    parser.add_argument("--no-validate", action="store_true", help="skip the value checks (validate_args=False)")
    args = parser.parse_args(argv)
    if min(args.frames, args.pairs, args.batch, args.pool) < 1:
        parser.error("Expected positive --frames, --pairs, --batch and --pool")
    torch.set_num_threads(1)
    figures = run(
        args.frames, args.pairs, args.batch, args.pool, min(args.checkpoint, args.frames), not args.no_validate
    )
    print(f"metrics benchmark: {args.frames} frames x {args.pairs} pairs, with/semi/no together, 1 thread")
    print(
        f"  {figures['frames_per_cpu_second']:.0f} frames per CPU second ({figures['cpu_seconds']:.2f} s CPU), "
        f"{figures['frames_per_second']:.0f} frames/s wall ({figures['seconds']:.2f} s)"
    )
    print(
        f"  peak RSS {figures['peak_rss_checkpoint_mib']:.1f} MiB after {min(args.checkpoint, args.frames)} "
        f"frames, {figures['peak_rss_end_mib']:.1f} MiB after {args.frames}"
    )
    print(f"  R@20 with {figures['with_R@20']:.4f}  semi {figures['semi_R@20']:.4f}  no {figures['no_R@20']:.4f}")
    return 0
