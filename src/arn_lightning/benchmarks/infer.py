"""``arn-lightning benchmark infer``: inference speed on a 480x270 video, model only and end to end (frames/s).

For each model size (``tiny``: the small configuration of ``benchmark model``; ``paper``: ResNet-50, D=256,
6 encoder / 3 decoder layers, 100 queries; random weights, all (predicate, object) triplet classes) it measures

- **model**: frames per second of collate + forward + postprocess on frames already decoded and resized, in
  non-overlapping clips of ``T`` frames, ``--batch-size`` clips per forward pass;
- **end to end**: frames per second of ``arn-lightning infer`` without the model loading: decoding the mp4 (PyAV),
  resizing, the model, ranking triplets, drawing and encoding the annotated video, the JSON lines and the timeline.

The input is a synthetic ``--width`` x ``--height`` mp4 (default 480x270, every frame sampled) and the model sees
it at that size (the transform's shorter / longer side are set to the video's). ``--device cuda --precision bf16``
measures the GPU; CUDA work is synchronised before every clock reading.

``--startup CKPT`` measures start-up instead: seconds from launching ``arn-lightning infer --checkpoint CKPT`` on the
synthetic video (a fresh interpreter each time) to its first frame graph, the whole command, and its CPU time, median
of ``--repeats`` runs, with the load average (start-up is mostly imports: on a shared machine it scales with load).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from arn_lightning.atomic import atomic_write_json
from arn_lightning.benchmarks.model import CONFIGS, all_triplet_categories
from arn_lightning.inference.api import SceneGraphPredictor, resolve_device
from arn_lightning.inference.clips import batched, schedule_clips
from arn_lightning.inference.output import write_inference
from arn_lightning.video.files import VideoWriter, open_frames

#: Frame rate of the synthetic input video (every frame is sampled).
VIDEO_FPS = 10.0
#: Run by :func:`measure_startup` in a fresh interpreter: ``arn-lightning infer`` (arguments from ``sys.argv``) that
#: prints the wall-clock time of its first frame graph to stderr (``--stream`` too). Importing the APIs first adds
#: nothing: the command imports them anyway before its first frame.
STARTUP_PROBE = """
import sys, time
from arn_lightning.inference import api, streaming
def stamp():
    if not getattr(stamp, "done", False):
        stamp.done = True
        print(f"FIRST_GRAPH_AT {time.time()!r}", file=sys.stderr, flush=True)
stream = api.SceneGraphPredictor.stream
def first_stamped(self, *args, **kwargs):
    for item in stream(self, *args, **kwargs):
        stamp()
        yield item
api.SceneGraphPredictor.stream = first_stamped
push = streaming.StreamingPredictor.push
def stamped_push(self, *args, **kwargs):
    graph = push(self, *args, **kwargs)
    stamp()
    return graph
streaming.StreamingPredictor.push = stamped_push
from arn_lightning.cli import main
sys.exit(main(sys.argv[1:]))
"""


def build_predictor(size: str, width: int, height: int, device: str, precision: str) -> SceneGraphPredictor:
    """A predictor around a randomly initialised ``ARNLitModule`` of configuration ``size``."""
    from arn_lightning.training.lit_module import ARNLitModule

    module = ARNLitModule(
        arch=replace(CONFIGS[size], backbone_weights=None),
        triplet_categories=all_triplet_categories(),
        data_settings={"resize_shorter": min(width, height), "resize_longer": max(width, height)},
        init_text_classifiers=False,
    )
    return SceneGraphPredictor(module, device=device, precision=precision)


def write_video(path: Path, frames: int, width: int, height: int) -> Path:
    """A synthetic mp4: a coloured square moving over a gradient, ``frames`` frames at :data:`VIDEO_FPS`."""
    gradient = np.linspace(40, 200, width, dtype=np.uint8)[None, :, None].repeat(height, 0).repeat(3, 2)
    side = max(8, height // 4)
    with VideoWriter(path, VIDEO_FPS) as writer:
        for i in range(frames):
            pixels = gradient.copy()
            x = (i * 7) % max(1, width - side)
            pixels[height // 3 : height // 3 + side, x : x + side] = (220, 60, 60)
            writer.write(Image.fromarray(pixels))
    return path


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _repeat(run: Callable[[], int], device: torch.device, repeats: int) -> float:
    """Median frames per second of ``run`` (which returns the frames it processed) over ``repeats`` runs."""
    rates = []
    for _ in range(repeats):
        start = _clock(device)
        count = run()
        rates.append(count / (_clock(device) - start))
    return statistics.median(rates)


def measure(predictor: SceneGraphPredictor, video: Path, batch_size: int, repeats: int) -> dict[str, float]:
    """``{"model_fps", "end_to_end_fps"}`` of ``predictor`` on ``video`` (one warm-up pass first)."""
    source = open_frames(video, VIDEO_FPS)
    prepared = [predictor.prepare(frame) for frame in source]
    jobs = list(schedule_clips(prepared, predictor.clip_length))

    def model_only() -> int:
        return sum(len(predictor.predict_clips(group)) for group in batched(jobs, batch_size))

    def end_to_end() -> int:
        with tempfile.TemporaryDirectory(prefix="arn_bench_infer_") as folder:
            return len(write_inference(predictor, source, Path(folder), batch_size=batch_size))

    model_only()
    return {
        "model_fps": _repeat(model_only, predictor.device, repeats),
        "end_to_end_fps": _repeat(end_to_end, predictor.device, repeats),
    }


def measure_startup(
    checkpoint: Path, video: Path, repeats: int = 3, fps: float = VIDEO_FPS, stream: bool = False
) -> dict[str, Any]:
    """Start-up of ``arn-lightning infer --checkpoint checkpoint --input video`` (with ``--stream`` if asked) in
    fresh interpreters.

    Returns:
        ``first_graph_s`` (launch to the first frame graph), ``total_s`` (the whole command, outputs written) and
        ``cpu_s`` (its user + system time), each the median of ``repeats`` runs; ``runs`` (every run's values) and
        ``load_average`` (1-minute load before and after).

    Raises:
        RuntimeError: the command failed (its stderr is in the message).
    """
    runs = []
    load_before = os.getloadavg()[0]
    for i in range(repeats):
        with tempfile.TemporaryDirectory(prefix="arn_bench_startup_") as folder:
            command = ["infer", "--checkpoint", str(checkpoint), "--input", str(video), "--out", f"{folder}/out"]
            if stream:
                command.append("--stream")
            cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.time()
            result = subprocess.run(
                [sys.executable, "-c", STARTUP_PROBE, *command, "--fps", str(fps), "--quiet"],
                capture_output=True,
                text=True,
                check=False,
            )
            total = time.time() - start
            cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        stamps = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("FIRST_GRAPH_AT ")]
        if result.returncode != 0 or not stamps:
            raise RuntimeError(f"Expected `arn-lightning infer` to succeed but run {i} failed:\n{result.stderr}")
        cpu = cpu_after.ru_utime - cpu_before.ru_utime + cpu_after.ru_stime - cpu_before.ru_stime
        runs.append({"first_graph_s": float(stamps[0]) - start, "total_s": total, "cpu_s": cpu})
    medians = {key: statistics.median(run[key] for run in runs) for key in ("first_graph_s", "total_s", "cpu_s")}
    return {**medians, "runs": runs, "load_average": [load_before, os.getloadavg()[0]]}


def _startup_main(args: argparse.Namespace) -> int:
    """``--startup CKPT``: print (and write ``--out``) the start-up of ``arn-lightning infer``."""
    with tempfile.TemporaryDirectory(prefix="arn_bench_video_") as folder:
        video = write_video(Path(folder) / "bench.mp4", args.frames, args.width, args.height)
        startup = measure_startup(args.startup, video, args.repeats, stream=args.stream)
    command = "arn-lightning infer --stream" if args.stream else "arn-lightning infer"
    print(
        f"{command} start-up (median of {args.repeats}, {args.width}x{args.height}, {args.frames} frames, "
        f"load average {startup['load_average'][0]:.2f} -> {startup['load_average'][1]:.2f}): first frame graph "
        f"{startup['first_graph_s']:.2f} s, whole command {startup['total_s']:.2f} s, CPU {startup['cpu_s']:.2f} s"
    )
    if args.out is not None:
        payload = {"checkpoint": str(args.startup), "stream": args.stream, "startup": startup}
        atomic_write_json(args.out, payload, indent=2, sort_keys=False)
    return 0


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="arn-lightning benchmark infer", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(CONFIGS), default=["tiny", "paper"])
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=270)
    parser.add_argument("--frames", type=int, default=12, help="frames of the synthetic video")
    parser.add_argument("--batch-size", type=int, default=1, help="clips per forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (median reported)")
    parser.add_argument("--stream", action="store_true", help="with --startup: the start-up of `infer --stream`")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument(
        "--startup",
        type=Path,
        default=None,
        metavar="CKPT",
        help="measure instead the start-up of `arn-lightning infer` with this checkpoint (launch to first frame graph)",
    )
    return parser.parse_args(list(argv))


def _environment(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return {
        "device": name,
        "torch": torch.__version__,
        "precision": args.precision,
        "input": f"{args.width}x{args.height}",
        "frames": args.frames,
        "batch_size": args.batch_size,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print a table (and write ``--out``); returns 0."""
    args = _parse(argv or [])
    if args.startup is not None:
        return _startup_main(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolve_device(args.device)
    environment = _environment(args, device)
    print("inference speed, frames/s (" + ", ".join(f"{k} {v}" for k, v in environment.items()) + ")")
    print(f"{'model':<8}{'T':>3}{'model only':>13}{'end to end':>13}")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="arn_bench_video_") as folder:
        video = write_video(Path(folder) / "bench.mp4", args.frames, args.width, args.height)
        for size in args.sizes:
            predictor = build_predictor(size, args.width, args.height, args.device, args.precision)
            rates = measure(predictor, video, args.batch_size, args.repeats)
            results.append({"model": size, "clip_length": predictor.clip_length, **rates})
            print(f"{size:<8}{predictor.clip_length:>3}{rates['model_fps']:>13.2f}{rates['end_to_end_fps']:>13.2f}")
    if args.out is not None:
        atomic_write_json(args.out, {"environment": environment, "results": results}, indent=2, sort_keys=False)
    return 0
