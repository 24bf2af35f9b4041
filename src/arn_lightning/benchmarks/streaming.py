"""``arn-lightning benchmark streaming``: per-frame latency of streaming inference against ``infer --causal``.

On the same synthetic video, frame by frame and in the same run, three ways to predict a frame from itself and
the frames before it are timed:

- **streaming**: :meth:`StreamingPredictor.push <arn_lightning.inference.streaming.StreamingPredictor.push>` with a
  window of ``T`` frames (one backbone + encoder + decoder pass; the temporal encoder reads the cache);
- **causal**: ``SceneGraphPredictor.stream(..., causal=True)``'s work for that frame, the whole ``T``-frame clip
  through the model (what ``infer --causal`` does);
- **one frame**: the model on a clip of that frame alone (window 1), the cost a frame cannot go below.

Each covers preparing the frame (resize, normalise), the model, the postprocess and the triplet ranking, not
decoding. The three are interleaved frame by frame (streaming, causal, one frame, next frame ...), so that a change
of load on a shared machine hits all three alike; latencies are reported as p50 / p95 over the frames after a
warm-up, with the ratios of the medians. The goal: streaming <= 1.2 x one frame, i.e. about ``T`` times faster than
causal. The model is random (weights do not change the time), the paper's architecture by default.

``--lanes B`` also times evaluation per frame, model only, on batches of ``B`` frames (``B`` videos side by side),
interleaved step by step: **causal** evaluation (``data.eval_scheme: causal``: ``ARN.stream_frames`` with each
video's cache of ``T - 1`` maps), **one frame** (a batch of ``B`` one-frame clips) and **tiled** evaluation (``B``
clips of ``T`` frames, each frame scored once: per frame, a ``T``-th of the forward). The goal: causal <= 1.2 x one
frame.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arn_lightning.atomic import atomic_write_json
from arn_lightning.benchmarks.infer import build_predictor, write_video
from arn_lightning.benchmarks.model import CONFIGS
from arn_lightning.data.transforms import resized_hw
from arn_lightning.inference.api import SceneGraphPredictor
from arn_lightning.inference.clips import ClipScheduler
from arn_lightning.inference.streaming import StreamingPredictor
from arn_lightning.models.arn import ARN
from arn_lightning.models.cache import FeatureCache
from arn_lightning.scene_graph import rank_triplets
from arn_lightning.video.files import VideoFrame, open_frames

#: Goal of the streaming cost per frame, as a multiple of one frame's forward.
GOAL_STREAM_OVER_ONE_FRAME = 1.2
#: Frames predicted before timing starts (allocator and thread-pool warm-up).
WARMUP_FRAMES = 2


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def measure_streaming(predictor: SceneGraphPredictor, video: Path, fps: float) -> dict[str, Any]:
    """Per-frame latencies (ms) of streaming, causal and one-frame prediction on every sampled frame of ``video``.

    Args:
        predictor: the model (its ``clip_length`` is the window ``T``).
        video: the input; every frame sampled at ``fps`` is predicted three ways.
        fps: sampling rate.

    Returns:
        ``{"window", "frames", "<way>_ms": [per frame], "<way>_p50_ms", "<way>_p95_ms", "<way>_fps",
        "stream_over_one_frame", "causal_over_stream"}`` for the ways ``stream``, ``causal`` and ``one_frame``
        (the frames after :data:`WARMUP_FRAMES`).
    """
    window = predictor.clip_length
    streaming = StreamingPredictor(predictor, window=window)
    one_frame = SceneGraphPredictor(predictor._module, device=predictor.device, precision="auto", window=1)
    one_frame.autocast_dtype = predictor.autocast_dtype
    causal = ClipScheduler(window, causal=True)
    times: dict[str, list[float]] = {"stream": [], "causal": [], "one_frame": []}
    for i, frame in enumerate(open_frames(video, fps)):
        seconds = _time_three_ways(frame, streaming, causal, predictor, one_frame)
        if i >= WARMUP_FRAMES:
            for name, s in zip(("stream", "causal", "one_frame"), seconds, strict=True):
                times[name].append(s * 1000.0)
    if not times["stream"]:
        raise ValueError(f"Expected more than {WARMUP_FRAMES} frames in {video} to time but got too few")
    return _summary(window, times)


def _time_three_ways(
    frame: VideoFrame,
    streaming: StreamingPredictor,
    causal: ClipScheduler,
    predictor: SceneGraphPredictor,
    one_frame: SceneGraphPredictor,
) -> tuple[float, float, float]:
    """Seconds to predict ``frame`` by streaming, by a causal clip and as a one-frame clip, in that order."""
    device = predictor.device
    start = _clock(device)
    streaming.push(frame)
    stream_s = _clock(device) - start

    start = _clock(device)
    [job] = causal.push(predictor.prepare(frame))
    [(_, prediction)] = predictor.predict_clips([job])
    rank_triplets(prediction)
    causal_s = _clock(device) - start

    start = _clock(device)
    [(_, prediction)] = one_frame.predict_clips([ClipScheduler(1, causal=True).push(one_frame.prepare(frame))[0]])
    rank_triplets(prediction)
    one_s = _clock(device) - start
    return stream_s, causal_s, one_s


def _summary(window: int, times: dict[str, list[float]]) -> dict[str, Any]:
    """:func:`measure_streaming`'s result from the per-frame milliseconds of each way."""
    result: dict[str, Any] = {"window": window, "frames": len(times["stream"])}
    for name, values in times.items():
        result[f"{name}_ms"] = values
        result[f"{name}_p50_ms"] = statistics.median(values)
        result[f"{name}_p95_ms"] = float(np.quantile(values, 0.95))  # linear between order statistics
        result[f"{name}_fps"] = 1000.0 / statistics.mean(values)
    result["stream_over_one_frame"] = result["stream_p50_ms"] / result["one_frame_p50_ms"]
    result["causal_over_stream"] = result["causal_p50_ms"] / result["stream_p50_ms"]
    return result


def measure_causal_evaluation(
    model: ARN, lanes: int, height: int, width: int, steps: int = 6, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Per-frame milliseconds of causal, one-frame and tiled evaluation of ``lanes`` videos side by side.

    Args:
        model: the model, in eval mode on ``device`` (its ``num_frames`` is the window ``T``).
        lanes: videos side by side (``data.eval_batch_size``).
        height, width: the frames' size (already resized, as the model sees them).
        steps: timed steps of each way after :data:`WARMUP_FRAMES` warm-up steps, interleaved.
        device: where the model runs.

    Returns:
        ``{"lanes", "window", "steps", "<way>_ms": [per frame, per step], "<way>_p50_ms"}`` for the ways ``causal``,
        ``one_frame`` and ``tiled``, and ``"causal_over_one_frame"``, ``"causal_over_tiled"`` (ratios of medians).
    """
    device = torch.device(device)
    window = model.config.num_frames
    images = [torch.randn(3, height, width, device=device) for _ in range(lanes)]
    clip = torch.stack(images)[:, None]  # [B, 1, 3, H, W]
    masks = torch.ones(lanes, 1, height, width, dtype=torch.bool, device=device)
    caches = [FeatureCache(window) for _ in range(lanes)]  # what causal evaluation keeps per video
    times: dict[str, list[float]] = {"causal": [], "one_frame": [], "tiled": []}
    with torch.no_grad():
        for step in range(WARMUP_FRAMES + steps):
            start = _clock(device)
            _, maps = model.stream_frames(images, [list(cache.cache) for cache in caches], window)
            causal = (_clock(device) - start) / lanes
            for cache, new in zip(caches, maps):
                cache.remember(new, reset=cache.starts)
            start = _clock(device)
            model(clip, masks)
            one = (_clock(device) - start) / lanes
            start = _clock(device)
            model(clip.expand(-1, window, -1, -1, -1), masks.expand(-1, window, -1, -1))
            tiled = (_clock(device) - start) / (lanes * window)
            if step >= WARMUP_FRAMES:
                for name, seconds in zip(("causal", "one_frame", "tiled"), (causal, one, tiled), strict=True):
                    times[name].append(seconds * 1000.0)
    result: dict[str, Any] = {"lanes": lanes, "window": window, "steps": steps}
    for name, values in times.items():
        result[f"{name}_ms"] = values
        result[f"{name}_p50_ms"] = statistics.median(values)
    result["causal_over_one_frame"] = result["causal_p50_ms"] / result["one_frame_p50_ms"]
    result["causal_over_tiled"] = result["causal_p50_ms"] / result["tiled_p50_ms"]
    return result


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="arn-lightning benchmark streaming", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(CONFIGS), default="paper", help="model configuration")
    parser.add_argument("--width", type=int, default=480, help="video width (the model sees it at this size)")
    parser.add_argument("--height", type=int, default=270)
    parser.add_argument("--frames", type=int, default=12, help="frames of the synthetic video (2 are warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--lanes",
        type=int,
        default=0,
        help="also time evaluation per frame on batches of this many "
        "videos: causal (streaming step) against one frame and tiled (0: skip)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(list(argv))
    if args.lanes < 0:
        parser.error(f"--lanes: expected 0 or more videos side by side but got {args.lanes}")
    if args.frames <= WARMUP_FRAMES:
        parser.error(f"--frames: expected more than {WARMUP_FRAMES} frames (the warm-up) but got {args.frames}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table (and write ``--out``); returns 0."""
    args = _parse(argv or [])
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    predictor = build_predictor(args.size, args.width, args.height, args.device, args.precision)
    with tempfile.TemporaryDirectory(prefix="arn_bench_stream_") as folder:
        video = write_video(Path(folder) / "stream.mp4", args.frames, args.width, args.height)
        result = measure_streaming(predictor, video, fps=1000.0)
    print(
        f"per-frame latency, {args.size} model, window T={result['window']}, {args.width}x{args.height}, "
        f"{result['frames']} frames after {WARMUP_FRAMES} warm-up, {args.device}, {torch.get_num_threads()} threads"
    )
    print(f"{'':<12}{'p50 ms':>10}{'p95 ms':>10}{'frames/s':>10}")
    for name in ("stream", "causal", "one_frame"):
        print(
            f"{name:<12}{result[f'{name}_p50_ms']:>10.1f}{result[f'{name}_p95_ms']:>10.1f}{result[f'{name}_fps']:>10.2f}"
        )
    print(
        f"streaming / one frame {result['stream_over_one_frame']:.2f} (goal <= {GOAL_STREAM_OVER_ONE_FRAME}); "
        f"causal / streaming {result['causal_over_stream']:.2f} (T = {result['window']})"
    )
    if args.lanes:
        model = predictor.model.eval()
        transform = predictor.transform
        size = resized_hw(args.height, args.width, transform.shorter, transform.longer)
        result["evaluation"] = evaluation = measure_causal_evaluation(model, args.lanes, *size, device=predictor.device)
        print(
            f"evaluation per frame (model only), {args.lanes} videos side by side, median of {evaluation['steps']} "
            f"steps: causal {evaluation['causal_p50_ms']:.1f} ms, one frame {evaluation['one_frame_p50_ms']:.1f} ms, "
            f"tiled {evaluation['tiled_p50_ms']:.1f} ms; causal / one frame {evaluation['causal_over_one_frame']:.2f} "
            f"(goal <= {GOAL_STREAM_OVER_ONE_FRAME}), causal / tiled {evaluation['causal_over_tiled']:.2f}"
        )
    if args.out is not None:
        atomic_write_json(args.out, {"settings": vars(args) | {"out": str(args.out)}, **result}, indent=2)
    return 0
