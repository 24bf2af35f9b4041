"""``arn-lightning benchmark train``: training throughput (clips/s, frames/s) of full optimisation steps.

A step is what ``fit`` runs: data loading + collate, forward, Hungarian matching, every loss term on every decoder
layer, backward, gradient clipping and the AdamW update, through a real ``lightning.Trainer`` on frames of the
synthetic Action Genome rendered at the real AG frame size (480x270) and resized by the data module's settings.
Warm-up steps are excluded from the timing.

Presets:
    ``paper``: ResNet-50, D 256, 6 / 3 / 3 layers, Q 100, T 3, resize 600 / 1000, batch 8 clips (docs/model.md).
    ``demo``: the synthetic demo configuration (``configs/synthetic_demo.yaml`` sizes: ResNet-18 to stride 16, D 128,
    2 / 2 / 2 layers, Q 10, T 2, resize 96 / 128, batch 8 clips).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from arn_lightning.atomic import atomic_write_json

if TYPE_CHECKING:
    from arn_lightning.data.datamodule import AGDataModule

#: Real Action Genome frames are 480x270 (Charades 480p).
AG_FRAME_SIZE = (480, 270)

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "arch": dict(
            backbone="resnet50",
            hidden_dim=256,
            nheads=8,
            ffn_dim=2048,
            enc_layers=6,
            entity_layers=3,
            predicate_layers=3,
            num_queries=100,
            clip_embed_dim=512,
        ),
        "clip_model": "ViT-B-32",
        "clip_len": 3,
        "resize": (600, 1000),
        "batch_size": 8,
    },
    "demo": {
        "arch": dict(
            backbone="resnet18",
            backbone_stride=16,
            backbone_norm="batch",
            hidden_dim=128,
            nheads=4,
            ffn_dim=512,
            dropout=0.0,
            enc_layers=2,
            entity_layers=2,
            predicate_layers=2,
            num_queries=10,
            clip_embed_dim=16,
            freeze_backbone_layers=0,
            distill=False,
            triplet_prior=0.01,
        ),
        "clip_model": "arn-tiny-clip",
        "clip_len": 2,
        "resize": (96, 128),
        "batch_size": 8,
    },
}


class StepTimer(L.Callback):
    """Wall time of every training step (batch fetch included), synchronised on CUDA."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last: float | None = None

    def _now(self, pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = self._now(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        now = self._now(pl_module)
        self.times.append(now - self._last)
        self._last = now


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="arn-lightning benchmark train", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per step (default: the preset's)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--precision", default="32-true", help="32-true | bf16-mixed | 16-mixed")
    parser.add_argument(
        "--distill",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="include the frozen CLIP image tower and the distillation loss (default: the preset's)",
    )
    parser.add_argument(
        "--detector-path",
        action="store_true",
        help="time the detector path alone (backbone, encoder, entity decoder, DETR losses; benchmarks/detector.py)",
    )
    parser.add_argument(
        "--loss-frames",
        choices=("all", "key"),
        default="all",
        help="frames of a clip that get a loss (model.loss.frames; default %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=0, help="data loader workers")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    return parser.parse_args(argv)


def _module(args: argparse.Namespace, preset: dict[str, Any], triplets: dict[str, Any]):
    from arn_lightning.criterion import LossConfig
    from arn_lightning.models.config import ARNConfig
    from arn_lightning.text.config import ClipConfig
    from arn_lightning.training.lit_module import ARNLitModule

    arch = dict(preset["arch"], num_frames=preset["clip_len"])
    if args.distill is not None:
        arch["distill"] = args.distill
    module_class = ARNLitModule
    if getattr(args, "detector_path", False):  # the detector path alone, DETR losses (benchmarks/detector.py)
        from arn_lightning.benchmarks.detector import DetectorPathLitModule

        module_class = DetectorPathLitModule
    return module_class(
        arch=ARNConfig(**arch),
        loss=LossConfig(frames=getattr(args, "loss_frames", "all")),
        clip=ClipConfig(clip_model=preset["clip_model"], clip_pretrained=None),
        triplet_categories=triplets,
        init_text_classifiers=False,
    )


def _peak_memory_gib(device: str) -> float:
    """Peak memory so far, GiB: the CUDA allocator's peak on a GPU; on the CPU the process's peak resident size (the
    model, the data and the Python process included: compare runs of different batch sizes for the per-clip cost)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time ``args.steps`` training steps after ``args.warmup``; returns the figures."""
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    batch_size = args.batch_size or preset["batch_size"]
    steps = args.warmup + args.steps
    with tempfile.TemporaryDirectory(prefix="arn_bench_train_") as tmp:
        resize = getattr(args, "resize", None) or preset["resize"]
        data = _synthetic_data(Path(tmp), args, preset, batch_size, steps, resize)
        module = _module(args, preset, data.triplet_categories)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        timer = StepTimer()
        _trainer(args, steps, timer, tmp).fit(module, datamodule=data)
    return _figures(args, preset, batch_size, resize, module, timer.times[args.warmup :])


def _synthetic_data(
    tmp: Path, args: argparse.Namespace, preset: dict[str, Any], batch_size: int, steps: int, resize: tuple[int, int]
) -> AGDataModule:
    """An :class:`~arn_lightning.data.datamodule.AGDataModule` on a synthetic AG generated under ``tmp`` with
    enough videos for ``steps`` batches of ``batch_size`` clips at the real AG frame size."""
    from arn_lightning.data.datamodule import AGDataModule
    from arn_lightning.data.synth import generate

    videos = max(4, (batch_size * steps) // 6 + 2)
    generate(tmp / "ag", videos=videos, frames=8, size=AG_FRAME_SIZE, seed=0, test_fraction=0.2)
    shorter, longer = resize
    return AGDataModule(
        str(tmp / "ag"),
        clip_len=preset["clip_len"],
        resize_shorter=shorter,
        resize_longer=longer,
        batch_size=batch_size,
        num_workers=args.workers,
    )


def _trainer(args: argparse.Namespace, steps: int, timer: StepTimer, root: str) -> L.Trainer:
    """The benchmark's ``lightning.Trainer``: ``steps`` steps, no validation, logging or checkpoints, ``timer``."""
    return L.Trainer(
        accelerator=args.device,
        devices=1,
        precision=args.precision,
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=0.1,
        callbacks=[timer],
        default_root_dir=root,
    )


def _figures(
    args: argparse.Namespace,
    preset: dict[str, Any],
    batch_size: int,
    resize: tuple[int, int],
    module: L.LightningModule,
    timed: list[float],
) -> dict[str, Any]:
    """The result of :func:`run` from the timed step durations ``timed`` (seconds)."""
    shorter, longer = resize
    step_s = statistics.median(timed)
    frames = batch_size * preset["clip_len"]
    return {
        "preset": args.preset,
        "device": str(args.device),
        "precision": args.precision,
        "batch_clips": batch_size,
        "frames_per_clip": preset["clip_len"],
        "resize": [shorter, longer],
        "detector_path": bool(getattr(args, "detector_path", False)),
        "frame_size": list(AG_FRAME_SIZE),
        "distill": bool(module.arch_config.distill),
        "steps_timed": len(timed),
        "step_s_median": step_s,
        "clips_per_s": batch_size / step_s,
        "frames_per_s": frames / step_s,
        "loss_frames": getattr(args, "loss_frames", "all"),
        "peak_memory_gib": _peak_memory_gib(args.device),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if args.device == "cuda" else "peak RSS of the process",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" and torch.cuda.is_available() else None,
    }


def main(argv: list[str]) -> int:
    """Print (and optionally save) the training throughput."""
    args = _parse(argv)
    if args.steps < 1 or args.warmup < 0:
        raise SystemExit(f"Expected --steps >= 1 and --warmup >= 0 but got {args.steps}, {args.warmup}")
    result = run(args)
    print(
        f"train [{result['preset']}] {result['device']} {result['precision']}: batch {result['batch_clips']} clips x "
        f"{result['frames_per_clip']} frames, step {result['step_s_median']:.3f} s (median of "
        f"{result['steps_timed']}) -> {result['clips_per_s']:.2f} clips/s, {result['frames_per_s']:.2f} frames/s; "
        f"loss on {result['loss_frames']} frames; peak memory {result['peak_memory_gib']:.2f} GiB "
        f"({result['peak_memory_kind']})"
    )
    if args.out is not None:
        atomic_write_json(args.out, result, indent=2, sort_keys=False)
    return 0
