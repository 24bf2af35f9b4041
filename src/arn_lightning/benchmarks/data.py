"""``arn-lightning benchmark data``: frames/s of the training input pipeline (decode + transform + collate).

Generates a synthetic AG with 480x270 PNG frames (Charades' usual size) in a temporary folder, then iterates the
training DataLoader of :class:`AGDataModule` for each resize setting and reports frames per second per worker
(one torch thread per worker, so the figure is per CPU core), with the time split into decoding, resizing / flipping
and padding. The loader's batches are ``uint8``: normalising them is the training module's step on the device
(``ARNLitModule.on_after_batch_transfer``), outside this figure; its CPU cost is reported apart (``normalize_ms``,
what training on a CPU pays in the main process). Wall-clock figures drop when other processes share the cores; the
CPU-time figure (frames per CPU second of the main process and its loader workers together) does not, and is the one
to size a machine with (docs/ARCHITECTURE.md, "Input pipeline throughput").
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from arn_lightning.data.collate import normalize_batch
from arn_lightning.data.datamodule import AGDataModule
from arn_lightning.data.frames import frame_path, read_frame
from arn_lightning.data.synth import generate

#: (shorter, longer) resize settings measured by default: the DETR-style default and the demo's small frames.
DEFAULT_RESIZES: tuple[tuple[int, int], ...] = ((600, 1000), (96, 160))
DEFAULT_SIZE = (480, 270)
TARGET_FPS_PER_CORE = 150.0


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's argument parser."""
    parser = argparse.ArgumentParser(prog="arn-lightning benchmark data", description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12, help="synthetic videos to generate (default 12)")
    parser.add_argument("--frames", type=int, default=8, help="frames per video (default 8)")
    parser.add_argument("--clip-len", type=int, default=3, help="frames per clip (default 3)")
    parser.add_argument("--batch-size", type=int, default=2, help="clips per batch (default 2)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per setting (default 20)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0: the main process)")
    parser.add_argument(
        "--resize",
        action="append",
        default=None,
        metavar="SHORTER/LONGER",
        help="resize setting, repeatable (default: 600/1000 and 96/160)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _parse_resizes(values: list[str]) -> list[tuple[int, int]]:
    """``["600/1000"]`` -> ``[(600, 1000)]``."""
    resizes = []
    for value in values:
        parts = value.split("/")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise SystemExit(f"arn-lightning benchmark data: Expected --resize SHORTER/LONGER but got {value!r}")
        resizes.append((int(parts[0]), int(parts[1])))
    return resizes


def _cpu_seconds(loader_iter: Any) -> float | None:
    """CPU seconds used so far by this process and the loader's worker processes (None where a worker's usage
    cannot be read: no ``/proc``)."""
    total = time.process_time()
    workers = getattr(loader_iter, "_workers", [])  # the worker processes of a multi-process loader iterator
    try:
        for worker in workers:
            with open(f"/proc/{worker.pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, ValueError, IndexError):
        return None
    return total


def _stage_times(dm: AGDataModule, clips: int) -> dict[str, float]:
    """CPU milliseconds per frame of decoding, transforming and collating (main process, the training loader's
    collate: ``uint8`` batches), on ``clips`` clips; and of normalising the batch (``normalize_batch``, which
    ``ARNLitModule`` runs on the training device: on a GPU it costs the loader's CPUs nothing)."""
    dataset = dm.datasets["train"]
    decode = transform = collate = normalize = 0.0
    frames = 0
    collator = dm.train_dataloader().collate_fn
    for clip in dataset.clips[:clips]:
        start = time.process_time()
        images = [read_frame(frame_path(dataset.frames_dir, dataset.frames[i].key)) for i in clip.frames]
        mid = time.process_time()
        boxes = [torch.from_numpy(dataset.frames[i].boxes_xyxy) for i in clip.frames]
        images, _, _ = dataset.transform(images, boxes)
        end = time.process_time()
        batch = collator([[{"image": image, "target": {}} for image in images]])
        collated = time.process_time()
        normalize_batch(batch)
        normalize += time.process_time() - collated
        decode, transform, collate = decode + mid - start, transform + end - mid, collate + collated - end
        frames += len(clip.frames)
    return {
        "decode_ms": 1e3 * decode / frames,
        "transform_ms": 1e3 * transform / frames,
        "collate_ms": 1e3 * collate / frames,
        "normalize_ms": 1e3 * normalize / frames,
    }


def measure(root: Path, shorter: int, longer: int, args: argparse.Namespace) -> dict[str, Any]:
    """Frames/s of the training DataLoader for one resize setting."""
    dm = AGDataModule(
        str(root),
        clip_len=args.clip_len,
        resize_shorter=shorter,
        resize_longer=longer,
        batch_size=args.batch_size,
        num_workers=args.workers,
        flip_prob=0.5,
    )
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    first = next(loader)  # warm-up (and worker start-up)
    frames, start, cpu_start = 0, time.perf_counter(), _cpu_seconds(loader)
    for _ in range(args.batches):
        batch = next(loader, None)
        if batch is None:
            break
        frames += len(batch["targets"])
    seconds = time.perf_counter() - start
    cpu_end = _cpu_seconds(loader)
    fps = frames / seconds
    # Workers run up to two batches ahead, at both ends of the window, so their extra work roughly cancels out.
    cpu_fps = frames / (cpu_end - cpu_start) if cpu_start is not None and cpu_end is not None else None
    return {
        "resize": f"{shorter}/{longer}",
        "output_hw": list(first["targets"][0]["size"].tolist()),
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": fps,
        "frames_per_s_per_worker": fps / max(1, args.workers),
        "cpu_frames_per_s_per_core": cpu_fps,
        **_stage_times(dm, clips=8),
    }


def measure_eval(
    root: Path, shorter: int, longer: int, corruption: str | None, severity: int = 3, passes: int = 3
) -> dict[str, Any]:
    """CPU seconds of ``passes`` passes over the test DataLoader (main process, batch 2, clips of 3), with
    ``corruption`` at ``severity`` applied to every frame (:mod:`arn_lightning.data.corruptions`) or none: the
    robustness benchmark's input cost."""
    dm = AGDataModule(
        str(root),
        clip_len=3,
        resize_shorter=shorter,
        resize_longer=longer,
        eval_batch_size=2,
        corruption=corruption,
        corruption_severity=severity,
    )
    dm.setup("test")
    next(iter(dm.test_dataloader()))  # warm-up: the first batch builds the corruption's transform
    frames, start = 0, time.process_time()
    for _ in range(passes):
        for batch in dm.test_dataloader():
            frames += len(batch["targets"])
    return {"corruption": corruption, "severity": severity, "frames": frames, "cpu_s": time.process_time() - start}


def main(argv: list[str]) -> int:
    """Run the benchmark and print a table (or JSON)."""
    args = build_parser().parse_args(argv)
    resizes = _parse_resizes(args.resize) if args.resize else list(DEFAULT_RESIZES)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="arn-bench-data-") as tmp:
        root = Path(tmp) / "ag"
        generate(root, videos=args.videos, frames=args.frames, size=DEFAULT_SIZE, seed=0)
        rows = [measure(root, shorter, longer, args) for shorter, longer in resizes]
    if args.json:
        print(
            json.dumps(
                {
                    "frame_size": list(DEFAULT_SIZE),
                    "workers": args.workers,
                    "clip_len": args.clip_len,
                    "batch_size": args.batch_size,
                    "results": rows,
                },
                indent=2,
            )
        )
        return 0
    _print_table(rows, args)
    return 0


def _print_table(rows: list[dict], args: argparse.Namespace) -> None:
    """Print :func:`main`'s table: one row per resize, judged against :data:`TARGET_FPS_PER_CORE`."""
    print(
        f"Training input pipeline on {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]} PNGs (decode + transform + uint8 collate), "
        f"clip_len {args.clip_len}, batch {args.batch_size}, workers {args.workers}, 1 torch thread per worker"
    )
    print(
        f"{'resize':>10} {'output':>10} {'frames/s/worker':>16} {'CPU frames/s/core':>18} {'decode ms':>10} "
        f"{'resize+flip ms':>15} {'collate ms':>11} {'normalise ms':>13}  target {TARGET_FPS_PER_CORE:g}/core"
    )
    for r in rows:
        per_core = r["cpu_frames_per_s_per_core"]
        judged = per_core if per_core is not None else r["frames_per_s_per_worker"]
        ok = "met" if judged >= TARGET_FPS_PER_CORE else "NOT met"
        cpu = f"{per_core:>18.1f}" if per_core is not None else f"{'n/a':>18}"
        print(
            f"{r['resize']:>10} {r['output_hw'][0]:>4}x{r['output_hw'][1]:<5} {r['frames_per_s_per_worker']:>16.1f} "
            f"{cpu} {r['decode_ms']:>10.2f} {r['transform_ms']:>15.2f} {r['collate_ms']:>11.2f} "
            f"{r['normalize_ms']:>13.2f}  {ok}"
        )
