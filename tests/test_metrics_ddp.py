"""Two processes (gloo on CPU) with the frames split between them give bit for bit the single-process numbers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from arn_lightning.benchmarks.metrics import random_frames
from arn_lightning.metrics.recall import SceneGraphRecall

FRAMES, PAIRS, SEED, WORLD_SIZE = 41, 30, 11, 2


def _rank_main(rank: int, store: str, out: str) -> None:
    """One process: interleaved frames (rank, rank + 2, ...) in uneven update batches, then compute (synced)."""
    os.environ["WANDB_MODE"] = "disabled"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    try:
        preds, targets = random_frames(FRAMES, PAIRS, seed=SEED)
        preds, targets = preds[rank::WORLD_SIZE], targets[rank::WORLD_SIZE]
        metric = SceneGraphRecall(iou_convention="legacy")
        step = 3 + 4 * rank
        for start in range(0, len(preds), step):
            metric.update(preds[start : start + step], targets[start : start + step])
        results = metric.compute()
        if rank == 0:
            torch.save({key: value.clone() for key, value in results.items()}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_equals_one_process(tmp_path: Path) -> None:
    out = tmp_path / "ddp_results.pt"
    mp.spawn(_rank_main, args=(str(tmp_path / "store"), str(out)), nprocs=WORLD_SIZE, join=True)
    distributed = torch.load(out)
    preds, targets = random_frames(FRAMES, PAIRS, seed=SEED)
    metric = SceneGraphRecall(iou_convention="legacy")
    metric.update(preds, targets)
    single = metric.compute()
    assert list(distributed) == list(single)
    assert all(torch.equal(distributed[key], single[key]) for key in single)  # bitwise
    assert 0.0 < single["with/R@20"].item() < 1.0 and single["no/mR_per_frame@50"].item() > 0.0
