"""``arn-lightning benchmark suite``: every speed figure of the project in one process, with goals (docs/benchmarks.md).

Writes ``suite.json`` (machine, settings, figures, raw measurements) and ``suite.md`` (a Markdown table: figure,
value, unit, goal, met?, notes) into ``--out`` and prints the table. Every model / training speed is measured
together with ARN's own *detector path* (backbone + encoder + entity decoder + heads of the same instance,
:mod:`arn_lightning.benchmarks.detector`), interleaved in the same loop, and shown as an absolute value and as the
ratio ``ARN / detector path``: the ratio is what the temporal encoder, the predicate decoder, PAP, HA and the
triplet classifiers cost, and it is far less sensitive to other processes on the machine than either value.

``--quick`` runs the demo architecture (ResNet-18 to stride 16, D 128, 2 / 2 / 2 layers, Q 10, T 2) at 96x128 with
few repetitions (a test runs it); the full suite runs the paper architecture at the AG frame size after the
600 / 1000 resize (563x1000).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from arn_lightning.atomic import atomic_write_json, atomic_write_text
from arn_lightning.benchmarks import data as data_bench
from arn_lightning.benchmarks import infer as infer_bench
from arn_lightning.benchmarks import metrics as metrics_bench
from arn_lightning.benchmarks import scale as scale_bench
from arn_lightning.benchmarks import streaming as stream_bench
from arn_lightning.benchmarks import train as train_bench
from arn_lightning.benchmarks.detector import detector_forward
from arn_lightning.benchmarks.model import all_triplet_categories
from arn_lightning.build import build_model
from arn_lightning.data.synth import generate
from arn_lightning.data.transforms import resized_hw
from arn_lightning.models.arn import ARN
from arn_lightning.models.config import ARNConfig

if TYPE_CHECKING:
    from arn_lightning.training.lit_module import ARNLitModule

PROG = "arn-lightning benchmark suite"
#: Annotated frames of Action Genome after the standard SGDet filtering (``AGReport.summary`` in data/ag.py shows
#: 166785 train frames; 54,371 test frames), used for the projected epoch and test-pass times.
AG_TRAIN_FRAMES = scale_bench.AG_TRAIN_FRAMES
AG_TEST_FRAMES = scale_bench.AG_TEST_FRAMES
#: Issue 25: ``evaluate`` of a full-size prediction file within this many CPU seconds and this peak memory.
GOAL_EVALUATE_FULL_S = 60.0
GOAL_EVALUATE_MB = 1000.0
#: The fraction of AG that the suite's scale row measures.
SCALE_FRACTION = 0.1
#: Goals of issue 11.
GOAL_EVALUATOR_FPS = 10_000.0
GOAL_DATA_FPS_PER_CORE = 150.0
GOAL_INFER_FIRST_GRAPH_S = 4.0
#: Videos side by side in the causal-evaluation figures (the paper configs' eval_batch_size).
EVAL_LANES = 8
GOAL_GPU_BF16_B32_RATIO = 0.8
GOAL_GPU_LATENCY_MS = 5.0
GOAL_GPU_TRAIN_RATIO = 0.7
GOAL_GPU_TEST_PASS_MIN = 2.0
NO_CUDA = "n/a (no CUDA)"
#: A compiled measurement starts only before this many seconds of the suite have passed (the GPU run must fit in
#: 8 minutes; a compile takes a minute or more), later ones are skipped with this reason.
COMPILE_START_DEADLINE_S = 300.0


@dataclass(frozen=True)
class Settings:
    """Sizes and repetitions of one suite mode."""

    name: str  #: "quick" or "full"
    arch: dict[str, Any]  #: ARNConfig keyword arguments (without num_frames)
    clip_len: int  #: frames per clip T
    height: int  #: model input height, pixels
    width: int  #: model input width, pixels
    batches: tuple[int, ...]  #: clips per forward pass
    warmup: int  #: untimed forwards per measurement
    repeats: dict[int, int]  #: timed forwards per batch size
    train_preset: str
    train_batch: int  #: clips per training step
    train_steps: int
    train_warmup: int
    data_videos: int
    data_batches: int
    metric_frames: int
    infer_size: tuple[int, int]  #: (width, height) of the synthetic video, pixels
    infer_frames: int  #: frames of the end-to-end video
    stream_frames: int  #: frames of the streaming-latency video (the first two are warm-up)
    description: str
    compile_reason: str | None = None  #: why torch.compile is skipped (None: it runs)
    extra: dict[str, Any] = field(default_factory=dict)


def settings_for(quick: bool, device: torch.device) -> Settings:
    """The sizes of ``--quick`` or of the full suite on ``device``."""
    if quick:
        return _quick_settings()
    return _full_settings(device)


def _quick_settings() -> Settings:
    """``--quick``: the demo architecture at 96x128, one step or clip of each kind, no compilation."""
    demo = train_bench.PRESETS["demo"]
    return Settings(
        name="quick",
        arch=dict(demo["arch"]),
        clip_len=demo["clip_len"],
        height=96,
        width=128,
        batches=(1, 32),
        warmup=1,
        repeats={1: 5, 32: 1},
        train_preset="demo",
        train_batch=2,
        train_steps=1,
        train_warmup=1,
        data_videos=12,
        data_batches=20,
        metric_frames=1_000,
        infer_size=(128, 96),
        infer_frames=4,
        stream_frames=5,
        description="--quick: demo architecture (ResNet-18 stride 16, D 128, 2/2/2 layers, Q 10, T 2) at 96x128",
        compile_reason="skipped: --quick (compiling costs minutes)",
    )


def _full_settings(device: torch.device) -> Settings:
    """The full suite: the paper's architecture at the size of a resized AG frame; more repeats on CUDA."""
    paper = train_bench.PRESETS["paper"]
    cuda = device.type == "cuda"
    return Settings(
        name="full",
        arch=dict(paper["arch"]),
        clip_len=paper["clip_len"],
        height=563,
        width=1000,
        batches=(1, 32),
        warmup=3 if cuda else 1,
        repeats={1: 100, 32: 10} if cuda else {1: 5, 32: 1},
        train_preset="paper",
        train_batch=paper["batch_size"],
        train_steps=6 if cuda else 2,
        train_warmup=2 if cuda else 1,
        data_videos=12,
        data_batches=20,
        metric_frames=10_000,
        infer_size=(480, 270),
        infer_frames=30,
        stream_frames=8,
        description="paper architecture (ResNet-50, D 256, 6/3/3 layers, Q 100, T 3) at 563x1000 "
        "(a 480x270 AG frame after the 600/1000 resize)",
    )


# ----------------------------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, Any]:
    """CPU model and cores, GPU name and memory (CUDA), torch / CUDA / Python versions, date, load average."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "load_average_start": list(os.getloadavg()),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return info


# ----------------------------------------------------------------------------------------------- figures
class Figures:
    """The rows of the suite's table, in order."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        name: str,
        value: float | None,
        unit: str,
        goal: str | None = None,
        met: bool | None = None,
        note: str = "",
    ) -> None:
        """One row; ``value`` None only with a ``note`` saying why (n/a, skipped, failed)."""
        if value is None and not note:
            raise ValueError(f"Expected a note saying why figure {name!r} has no value")
        self.rows.append({"figure": name, "value": value, "unit": unit, "goal": goal, "met": met, "note": note})


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def time_pair(
    arn: Callable[..., Any],
    detector: Callable[..., Any],
    inputs: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    precision: str,
    warmup: int,
    repeats: int,
) -> tuple[list[float], list[float]]:
    """Seconds of each timed call of ``arn`` and of ``detector``, interleaved with alternating order
    (``torch.no_grad``, autocast for bf16), after ``warmup`` untimed calls of each."""
    arn_s, det_s = [], []
    with torch.no_grad(), _autocast(device, precision):
        for _ in range(warmup):
            arn(*inputs)
            detector(*inputs)
        for i in range(repeats):
            pairs = ((arn, arn_s), (detector, det_s))
            for fn, times in pairs if i % 2 == 0 else pairs[::-1]:  # alternate who goes first
                start = _clock(device)
                fn(*inputs)
                times.append(_clock(device) - start)
    return arn_s, det_s


def benchmark_model(settings: Settings, device: torch.device) -> ARN:
    """A randomly initialised SGDet ARN of the mode's architecture, all triplet classes, eval mode, on ``device``."""
    config = ARNConfig(**dict(settings.arch, num_frames=settings.clip_len), backbone_weights=None)
    return build_model(config, all_triplet_categories()).model.to(device).eval()


def model_figures(
    figures: Figures,
    settings: Settings,
    device: torch.device,
    raw: dict[str, Any],
    compiled: bool,
    deadline: float = float("inf"),
) -> None:
    """Frames/s at each batch size, fp32 / bf16, eager or compiled; latency at batch 1; each vs the detector path.

    ``deadline``: ``time.perf_counter()`` value after which no compiled measurement starts.
    """
    model = benchmark_model(settings, device)
    t = settings.clip_len
    default_precision = "bf16" if device.type == "cuda" else "fp32"
    raw.setdefault("model", {})
    for precision in ("fp32", "bf16"):
        for batch in settings.batches:
            label = f"{precision}, batch {batch}{', compiled' if compiled else ''}"
            name = f"ARN frames/s, {label}"
            reason = _skip_reason(settings, compiled, precision, default_precision, deadline)
            if reason is not None:
                figures.add(name, None, "frames/s", note=reason)
                continue
            inputs = _random_clips(settings, batch, device)
            try:
                timed = _time_model(model, inputs, settings, device, precision, batch, compiled)
            except Exception as error:  # noqa: BLE001 - a failed compile is reported, the suite goes on
                if not compiled:
                    raise
                figures.add(name, None, "frames/s", note=f"compile failed: {type(error).__name__}: {error}"[:200])
                continue
            _add_model_rows(figures, raw, label, timed, batch, t, precision, compiled, device)
            if batch == 1 and not compiled:
                _add_latency_rows(figures, label, timed[0], t, precision == default_precision, device)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _random_clips(settings: Settings, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random clips of the mode's size: pixels ``[B, T, 3, H, W]`` and an all-True mask ``[B, T, H, W]``."""
    t, h, w = settings.clip_len, settings.height, settings.width
    return (
        torch.randn(batch, t, 3, h, w, device=device),
        torch.ones(batch, t, h, w, dtype=torch.bool, device=device),
    )


def _skip_reason(
    settings: Settings, compiled: bool, precision: str, default_precision: str, deadline: float
) -> str | None:
    """Why a compiled measurement at ``precision`` is skipped (None: it runs; eager ones always run)."""
    reason = settings.compile_reason if compiled else None
    if compiled and reason is None and precision != default_precision:
        reason = f"skipped: compiled at {default_precision} only (the device's inference precision)"
    if compiled and reason is None and time.perf_counter() > deadline:
        reason = f"skipped: the suite passed {COMPILE_START_DEADLINE_S:.0f} s (8-minute budget)"
    return reason


def _time_model(
    model: ARN,
    inputs: tuple[torch.Tensor, torch.Tensor],
    settings: Settings,
    device: torch.device,
    precision: str,
    batch: int,
    compiled: bool,
) -> tuple[list[float], list[float], float | None]:
    """Paired forward seconds of the ARN and its detector path on ``inputs``, and the seconds of compilation plus
    first call (None when eager). Raises what compilation raises."""
    arn: Callable[..., Any] = model
    det: Callable[..., Any] = partial(detector_forward, model)
    compile_s = None
    if compiled:
        torch._dynamo.reset()
        arn, det = torch.compile(model, dynamic=False), torch.compile(det, dynamic=False)
        start = time.perf_counter()
        time_pair(arn, det, inputs, device, precision, 1, 0)
        compile_s = time.perf_counter() - start
    repeats = settings.repeats[batch]
    arn_s, det_s = time_pair(arn, det, inputs, device, precision, settings.warmup, repeats)
    return arn_s, det_s, compile_s


def _add_model_rows(
    figures: Figures,
    raw: dict[str, Any],
    label: str,
    timed: tuple[list[float], list[float], float | None],
    batch: int,
    t: int,
    precision: str,
    compiled: bool,
    device: torch.device,
) -> None:
    """The frames/s row and the ARN / detector path ratio row of one measurement (``timed``: :func:`_time_model`)."""
    arn_s, det_s, compile_s = timed
    frames = batch * t
    arn_fps, det_fps = frames / statistics.median(arn_s), frames / statistics.median(det_s)
    ratio = statistics.median(d / a for a, d in zip(arn_s, det_s))  # = ARN fps / detector fps
    raw["model"][label] = {"arn_s": arn_s, "detector_s": det_s, "compile_s": compile_s}
    extra = f"; compile + first call {compile_s:.1f} s" if compile_s is not None else ""
    figures.add(f"ARN frames/s, {label}", arn_fps, "frames/s", note=f"detector path {det_fps:.2f} frames/s{extra}")
    goal = met = None
    if precision == "bf16" and batch == 32 and not compiled:
        goal = f">= {GOAL_GPU_BF16_B32_RATIO} (GPU)"
        met = ratio >= GOAL_GPU_BF16_B32_RATIO if device.type == "cuda" else None
    figures.add(f"ARN / detector path, {label}", ratio, "ratio", goal, met, "median of paired runs")


def _add_latency_rows(
    figures: Figures, label: str, arn_s: list[float], t: int, judged: bool, device: torch.device
) -> None:
    """Latency p50 / p95 (ms per frame) of the batch-1 clip forwards ``arn_s``; the p50 against the goal when
    ``judged`` (the device's inference precision)."""
    latency = [1e3 * s / t for s in arn_s]
    goal = met = None
    if judged:
        goal = f"<= {GOAL_GPU_LATENCY_MS:g} ms (GPU)"
        met = float(np.quantile(latency, 0.5)) <= GOAL_GPU_LATENCY_MS if device.type == "cuda" else None
    note = f"forward of one {t}-frame clip / {t}; {len(latency)} runs"
    figures.add(f"ARN latency p50, {label}", float(np.quantile(latency, 0.5)), "ms/frame", goal, met, note)
    figures.add(f"ARN latency p95, {label}", float(np.quantile(latency, 0.95)), "ms/frame", note=note)


def train_figures(figures: Figures, settings: Settings, device: torch.device, raw: dict[str, Any]) -> float:
    """A full ARN training step vs the detector path's (frames/s, ratio) and the peak GPU memory; returns the ARN
    step's frames/s."""
    precision = "bf16-mixed" if device.type == "cuda" else "32-true"
    results = {}
    peak: float | None = None
    for detector_path in (False, True):
        args = _train_args(settings, device, precision, detector_path)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        results[detector_path] = train_bench.run(args)
        if device.type == "cuda" and not detector_path:
            peak = torch.cuda.max_memory_allocated(device) / 2**30
    arn, det = results[False], results[True]
    raw["train"] = {"arn": arn, "detector_path": det}
    label = f"{precision}, {arn['batch_clips']} clips x {arn['frames_per_clip']} frames"
    figures.add(
        f"training step frames/s, {label}",
        arn["frames_per_s"],
        "frames/s",
        note=f"detector path {det['frames_per_s']:.2f} frames/s; median of {arn['steps_timed']} steps, "
        f"distill {arn['distill']}, resize {arn['resize'][0]}/{arn['resize'][1]}",
    )
    ratio = arn["frames_per_s"] / det["frames_per_s"]
    met = ratio >= GOAL_GPU_TRAIN_RATIO if device.type == "cuda" else None
    figures.add(f"training step ARN / detector path, {label}", ratio, "ratio", f">= {GOAL_GPU_TRAIN_RATIO} (GPU)", met)
    if peak is None:
        figures.add("peak GPU memory of a training step", None, "GiB", note=NO_CUDA)
    else:
        figures.add("peak GPU memory of a training step", peak, "GiB", note="torch.cuda.max_memory_allocated")
    return float(arn["frames_per_s"])


def _train_args(settings: Settings, device: torch.device, precision: str, detector_path: bool) -> argparse.Namespace:
    """The ``benchmark train`` arguments of the mode's training step (the full ARN or its detector path)."""
    return argparse.Namespace(
        preset=settings.train_preset,
        batch_size=settings.train_batch,
        steps=settings.train_steps,
        warmup=settings.train_warmup,
        device=device.type,
        precision=precision,
        distill=None,
        workers=0,
        threads=None,
        out=None,
        detector_path=detector_path,
        resize=None,
    )


def projection_figures(
    figures: Figures, settings: Settings, device: torch.device, train_fps: float, test_fps: float
) -> None:
    """Projected AG training epoch and test pass from the measured frames/s."""
    scope = "" if settings.name == "full" else " (at the --quick sizes, not the paper's)"
    figures.add(
        "projected AG training epoch",
        AG_TRAIN_FRAMES / train_fps / 60,
        "min",
        note=f"{AG_TRAIN_FRAMES:,} train frames / training step frames/s{scope}",
    )
    goal = f"< {GOAL_GPU_TEST_PASS_MIN:g} min (GPU)"
    minutes = AG_TEST_FRAMES / test_fps / 60
    met = minutes < GOAL_GPU_TEST_PASS_MIN if device.type == "cuda" else None
    figures.add(
        "projected AG test pass",
        minutes,
        "min",
        goal,
        met,
        note=f"{AG_TEST_FRAMES:,} test frames / ARN batch-32 eager frames/s (model only){scope}",
    )


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch CPU threads (one core), restoring the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def data_figures(figures: Figures, settings: Settings, raw: dict[str, Any]) -> None:
    """Training input pipeline frames/s per core at 600/1000 (``benchmark data``)."""
    args = argparse.Namespace(clip_len=3, batch_size=2, batches=settings.data_batches, workers=0)
    with tempfile.TemporaryDirectory(prefix="arn_suite_data_") as tmp, torch_threads(1):
        root = Path(tmp) / "ag"
        generate(root, videos=settings.data_videos, frames=8, size=data_bench.DEFAULT_SIZE, seed=0)
        row = data_bench.measure(root, 600, 1000, args)
    raw["data"] = row
    cpu_fps = row.get("cpu_frames_per_s_per_core")  # frames per CPU second: robust to other processes
    fps = cpu_fps if cpu_fps is not None else row["frames_per_s_per_worker"]
    basis = "per CPU second" if cpu_fps is not None else "wall clock"
    figures.add(
        "data pipeline frames/s per core, 600/1000",
        fps,
        "frames/s",
        f">= {GOAL_DATA_FPS_PER_CORE:g}",
        fps >= GOAL_DATA_FPS_PER_CORE,
        f"480x270 PNG -> {row['output_hw'][0]}x{row['output_hw'][1]}, uint8 batches (normalised on the device: "
        f"{row['normalize_ms']:.2f} ms a frame on a CPU), {row['frames']} frames, 1 thread, {basis}; "
        f"wall {row['frames_per_s_per_worker']:.1f}",
    )


def corruption_figures(figures: Figures, settings: Settings, raw: dict[str, Any]) -> None:
    """Evaluation input pipeline frames per CPU second with an image corruption (``arn-lightning robustness``) and
    its ratio to the clean pipeline, at 600/1000 on one core (docs/robustness.md)."""
    name = "evaluation pipeline frames/s per core, gaussian_noise s3"
    try:
        from arn_lightning.data.corruptions import require_albumentations

        require_albumentations()
    except ImportError:
        figures.add(name, None, "frames/s", note="n/a (albumentations not installed: the robustness extra)")
        return
    with tempfile.TemporaryDirectory(prefix="arn_suite_corrupt_") as tmp, torch_threads(1):
        root = Path(tmp) / "ag"
        generate(root, videos=settings.data_videos, frames=8, size=data_bench.DEFAULT_SIZE, seed=0)
        rows = [data_bench.measure_eval(root, 600, 1000, c) for c in (None, "gaussian_noise")]
    raw["corruption"] = rows
    clean, corrupted = (row["frames"] / row["cpu_s"] for row in rows)
    figures.add(
        name,
        corrupted,
        "frames/s",
        note=f"480x270 PNG, test loader, 1 thread, per CPU second; clean {clean:.1f} "
        f"({corrupted / clean:.2f}x); {rows[1]['frames']} frames",
    )


def metric_figures(figures: Figures, settings: Settings, raw: dict[str, Any]) -> None:
    """Evaluator frames per CPU second on one core, 100 pairs per frame, with / semi / no together."""
    with torch_threads(1):
        result = metrics_bench.run(settings.metric_frames, 100, 64, 256, settings.metric_frames, True)
    raw["metrics"] = result
    fps = result["frames_per_cpu_second"]
    figures.add(
        "evaluator frames/s (one core)",
        fps,
        "frames/s",
        f">= {GOAL_EVALUATOR_FPS:,.0f}",
        fps >= GOAL_EVALUATOR_FPS,
        f"{settings.metric_frames:,} frames x 100 pairs, per CPU second; wall {result['frames_per_second']:,.0f}",
    )


def scale_figures(figures: Figures, raw: dict[str, Any]) -> None:
    """``evaluate`` of a paper-shaped prediction file at 0.1 of AG's size (``benchmark scale``), CPU seconds against
    a tenth of the full-size goal, with peak memory and the other steps in the note."""
    row = scale_bench.run([SCALE_FRACTION])["rows"][0]
    raw["scale"] = row
    steps = row["steps"]
    cpu, peak = steps["evaluate"]["cpu_seconds"], steps["evaluate"]["peak_mb"]
    goal = GOAL_EVALUATE_FULL_S * SCALE_FRACTION
    others = ", ".join(f"{name} {steps[name]['cpu_seconds']:.1f} s" for name in ("load (cached)", "write", "compare"))
    figures.add(
        f"evaluate at {SCALE_FRACTION:g} of AG",
        cpu,
        "CPU s",
        f"<= {goal:g} and < {GOAL_EVALUATE_MB:,.0f} MB",
        cpu <= goal and peak < GOAL_EVALUATE_MB,
        f"{row['test_frames']:,} frames x {scale_bench.PAIRS} pairs, {row['prediction_file_mb']:,.0f} MB file, peak "
        f"{peak:,.0f} MB, wall {steps['evaluate']['seconds']:.1f} s; "
        f"CPU s of {others}",
    )


def infer_figures(figures: Figures, settings: Settings, device: torch.device, raw: dict[str, Any]) -> None:
    """``arn-lightning infer`` start-up, with and without ``--stream`` (``benchmark infer``'s ``measure_startup`` on a
    one-clip video and a checkpoint of the mode's model), end-to-end frames/s (its ``measure``) and the streaming
    latency against ``--causal`` and one frame (``benchmark streaming``'s ``measure_streaming``)."""
    from arn_lightning.inference.api import SceneGraphPredictor

    width, height = settings.infer_size
    module = _untrained_module(settings)
    with tempfile.TemporaryDirectory(prefix="arn_suite_infer_") as tmp:
        folder = Path(tmp)
        startup, stream_startup = _startup_figures(figures, settings, module, folder)
        video = infer_bench.write_video(folder / "video.mp4", settings.infer_frames, width, height)
        predictor = SceneGraphPredictor(module, device=str(device), precision="auto")
        rates = infer_bench.measure(predictor, video, batch_size=1, repeats=1 if settings.name == "quick" else 2)
        stream_video = infer_bench.write_video(folder / "stream.mp4", settings.stream_frames, width, height)
        streaming = stream_bench.measure_streaming(predictor, stream_video, fps=1000.0)
        size = resized_hw(height, width, settings.height, settings.width)
        evaluation = stream_bench.measure_causal_evaluation(predictor.model.eval(), EVAL_LANES, *size, device=device)
    raw["infer"] = {"startup": startup, "stream_startup": stream_startup, **rates}
    raw["streaming"] = streaming
    raw["causal_evaluation"] = evaluation
    _streaming_figures(figures, settings, streaming)
    _causal_evaluation_figures(figures, evaluation, size)
    figures.add(
        "infer end-to-end frames/s",
        rates["end_to_end_fps"],
        "frames/s",
        note=f"decode + model + draw + encode of a {settings.infer_frames}-frame {width}x{height} mp4 at "
        f"{settings.height}/{settings.width}; model only {rates['model_fps']:.2f} frames/s",
    )


def _untrained_module(settings: Settings) -> ARNLitModule:
    """A randomly initialised ``ARNLitModule`` of the mode's architecture and resize, all triplet classes."""
    from arn_lightning.training.lit_module import ARNLitModule

    config = ARNConfig(**dict(settings.arch, num_frames=settings.clip_len), backbone_weights=None)
    resize = {"resize_shorter": settings.height, "resize_longer": settings.width}
    return ARNLitModule(
        arch=config, triplet_categories=all_triplet_categories(), data_settings=resize, init_text_classifiers=False
    )


def _startup_figures(
    figures: Figures, settings: Settings, module: ARNLitModule, folder: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two time-to-first-graph rows (plain and ``--stream``) from a checkpoint of ``module`` and a one-clip mp4
    written in ``folder``; returns both ``measure_startup`` results."""
    from arn_lightning.training.checkpoints import save_untrained_checkpoint

    width, height = settings.infer_size
    checkpoint = save_untrained_checkpoint(module, folder / "model.ckpt")
    first = infer_bench.write_video(folder / "one_clip.mp4", settings.clip_len, width, height)
    repeats = 1 if settings.name == "quick" else 3
    startup = infer_bench.measure_startup(checkpoint, first, repeats=repeats)
    seconds = startup["first_graph_s"]
    figures.add(
        "infer time to first frame graph",
        seconds,
        "s",
        f"<= {GOAL_INFER_FIRST_GRAPH_S:g}",
        seconds <= GOAL_INFER_FIRST_GRAPH_S,
        f"launch of `arn-lightning infer` (fresh interpreter, its default device cpu) to its first frame graph, "
        f"{settings.clip_len}-frame {width}x{height} mp4, median of {repeats}; whole command "
        f"{startup['total_s']:.2f} s, CPU {startup['cpu_s']:.2f} s",
    )
    stream_startup = infer_bench.measure_startup(checkpoint, first, repeats=repeats, stream=True)
    seconds = stream_startup["first_graph_s"]
    figures.add(
        "infer --stream time to first frame graph",
        seconds,
        "s",
        f"<= {GOAL_INFER_FIRST_GRAPH_S:g}",
        seconds <= GOAL_INFER_FIRST_GRAPH_S,
        f"as above with --stream (StreamingPredictor, live sources); whole command {stream_startup['total_s']:.2f} "
        f"s, CPU {stream_startup['cpu_s']:.2f} s",
    )
    return startup, stream_startup


def _streaming_figures(figures: Figures, settings: Settings, streaming: dict[str, Any]) -> None:
    """The streaming rows: latency p50, streaming / one-frame forward (against its goal), ``--causal`` / streaming."""
    window, timed = streaming["window"], streaming["frames"]
    figures.add(
        "streaming latency p50",
        streaming["stream_p50_ms"],
        "ms/frame",
        note=f"StreamingPredictor.push, window T={window}, {timed} frames at {settings.height}/{settings.width}: p95 "
        f"{streaming['stream_p95_ms']:.1f} ms, {streaming['stream_fps']:.2f} frames/s; --causal p50 "
        f"{streaming['causal_p50_ms']:.1f} / p95 {streaming['causal_p95_ms']:.1f} ms",
    )
    ratio = streaming["stream_over_one_frame"]
    figures.add(
        "streaming / one-frame forward",
        ratio,
        "ratio",
        f"<= {stream_bench.GOAL_STREAM_OVER_ONE_FRAME:g}",
        ratio <= stream_bench.GOAL_STREAM_OVER_ONE_FRAME,
        f"p50 per frame, interleaved in one run; one frame alone {streaming['one_frame_p50_ms']:.1f} ms",
    )
    figures.add(
        "--causal / streaming",
        streaming["causal_over_stream"],
        "ratio",
        note=f"p50 per frame; the causal schedule runs T={window} frames per frame, so about T is the ideal",
    )


def _causal_evaluation_figures(figures: Figures, evaluation: dict[str, Any], size: tuple[int, int]) -> None:
    """Causal evaluation per frame (``data.eval_scheme: causal``) against one frame's forward (its goal) and
    against tiled evaluation, model only, interleaved in one run (``measure_causal_evaluation``)."""
    ratio = evaluation["causal_over_one_frame"]
    lanes, window, steps = evaluation["lanes"], evaluation["window"], evaluation["steps"]
    figures.add(
        "causal evaluation / one-frame forward",
        ratio,
        "ratio",
        f"<= {stream_bench.GOAL_STREAM_OVER_ONE_FRAME:g}",
        ratio <= stream_bench.GOAL_STREAM_OVER_ONE_FRAME,
        f"model only, {lanes} videos side by side at {size[1]}x{size[0]}, window T={window}, median of {steps} "
        f"interleaved steps: causal {evaluation['causal_p50_ms']:.1f} ms/frame, one frame "
        f"{evaluation['one_frame_p50_ms']:.1f} ms/frame",
    )
    figures.add(
        "causal / tiled evaluation",
        evaluation["causal_over_tiled"],
        "ratio",
        note=f"per frame, same run; tiled {evaluation['tiled_p50_ms']:.1f} ms/frame (a {window}-frame clip's forward "
        f"/ {window}: the temporal context of tiled windows is shared, a causal frame's is its own)",
    )


# ----------------------------------------------------------------------------------------------- output
def _format_value(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def _format_met(row: dict[str, Any], cuda: bool) -> str:
    if row["goal"] is None:
        return ""
    if row["met"] is None:
        return "n/a (GPU goal, no CUDA)" if not cuda else "n/a"
    return "yes" if row["met"] else "NO"


def markdown(report: dict[str, Any]) -> str:
    """The Markdown report: a machine line, the settings line and the table."""
    m = report["machine"]
    gpu = f", GPU {m['gpu']} ({m['gpu_memory_gib']} GiB)" if "gpu" in m else ", no GPU"
    lines = [
        f"# arn-lightning benchmark suite ({report['settings']['name']})",
        "",
        f"Machine: {m['cpu']}, {m['cpu_cores']} cores ({m['torch_threads']} torch threads){gpu}; torch {m['torch']}, "
        f"CUDA {m['cuda'] or 'none'}, Python {m['python']}; {m['date']}; load average "
        f"{m['load_average_start'][0]:.2f} at the start, {m['load_average_end'][0]:.2f} at the end; "
        f"{report['seconds']:.0f} s.",
        "",
        f"Settings: {report['settings']['description']}.",
        "",
        "| figure | value | unit | goal | met? | notes |",
        "|---|---:|---|---|---|---|",
    ]
    cuda = "gpu" in m
    for row in report["figures"]:
        lines.append(
            f"| {row['figure']} | {_format_value(row['value'])} | {row['unit']} | {row['goal'] or ''} | "
            f"{_format_met(row, cuda)} | {row['note'].replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu | cuda (default cpu)")
    parser.add_argument("--quick", action="store_true", help="small inputs, few repetitions (minutes on a CPU)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: benchmark_suite/<date-time>, a new folder)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads: expected a positive number of threads but got {args.threads}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch finds no CUDA device on this machine (use --device cpu)")
    return args


def run(device: torch.device, quick: bool) -> dict[str, Any]:
    """Measure every figure; returns the report (``machine``, ``settings``, ``figures``, ``raw``, ``seconds``)."""
    start = time.perf_counter()
    torch.manual_seed(0)
    settings = settings_for(quick, device)
    info = machine(device)
    figures, raw = Figures(), {}
    sections: dict[str, float] = {}
    raw["section_seconds"] = sections
    clock = time.perf_counter()
    model_figures(figures, settings, device, raw, compiled=False)
    sections["model"], clock = time.perf_counter() - clock, time.perf_counter()
    train_fps = train_figures(figures, settings, device, raw)
    sections["train"], clock = time.perf_counter() - clock, time.perf_counter()
    test_label = f"{'bf16' if device.type == 'cuda' else 'fp32'}, batch {max(settings.batches)}"
    test_fps = settings.clip_len * max(settings.batches) / statistics.median(raw["model"][test_label]["arn_s"])
    projection_figures(figures, settings, device, train_fps, test_fps)
    data_figures(figures, settings, raw)
    corruption_figures(figures, settings, raw)
    sections["data"], clock = time.perf_counter() - clock, time.perf_counter()
    metric_figures(figures, settings, raw)
    sections["metrics"], clock = time.perf_counter() - clock, time.perf_counter()
    scale_figures(figures, raw)
    sections["scale"], clock = time.perf_counter() - clock, time.perf_counter()
    infer_figures(figures, settings, device, raw)
    sections["infer"], clock = time.perf_counter() - clock, time.perf_counter()
    model_figures(figures, settings, device, raw, compiled=True, deadline=start + COMPILE_START_DEADLINE_S)
    sections["model_compiled"] = time.perf_counter() - clock
    info["load_average_end"] = list(os.getloadavg())
    settings_dict = {k: v for k, v in vars(settings).items()}
    return {
        "machine": info,
        "settings": settings_dict,
        "ag_frames": {"train": AG_TRAIN_FRAMES, "test": AG_TEST_FRAMES},
        "figures": figures.rows,
        "raw": raw,
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the suite, write ``suite.json`` / ``suite.md`` into ``--out`` and print the table; returns 0."""
    args = _parse(list(argv or []))
    out = args.out or Path("benchmark_suite") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(torch.device(args.device), args.quick)
    text = markdown(report)
    atomic_write_json(out / "suite.json", json.loads(json.dumps(report, default=str)), indent=1, sort_keys=False)
    atomic_write_text(out / "suite.md", text)
    print(text, end="")
    print(f"{PROG}: wrote {out / 'suite.json'} and {out / 'suite.md'}")
    return 0
