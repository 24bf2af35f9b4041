"""``arn-lightning infer``: scene graphs for any video or frame folder, with an annotated video and a timeline.

Example::

    arn-lightning infer --checkpoint last.ckpt --input my_video.mp4 --out my_graphs --fps 2 --top-k 10

writes ``my_graphs/scene_graphs.jsonl`` (one line per sampled frame), ``my_graphs/annotated.mp4`` and
``my_graphs/timeline.png`` (plus ``my_graphs/frames/*.png`` with ``--save-frames``), all or nothing. Exit codes:
0 done, 1 an unreadable input, checkpoint or output folder (the message names the file), 2 bad arguments.

Each line's ``frame`` key is ``<video file name>/<NNNNNN>.png`` with the frame's 1-based number in decode order and
``frame_index`` that number, exactly as ``arn-lightning dump-frames`` and the Action Genome toolkit number frames
(``docs/frames.md``), so the predictions of an AG video carry AG keys; for a folder the key is
``<folder name>/<file name>``.

Streaming (``--stream``, ``docs/streaming.md``)::

    arn-lightning infer --stream --checkpoint last.ckpt --input rtsp://camera.local/live --max-frames 1000 | jq .

follows a video file, an image folder, a camera (``/dev/video0``), a network stream (rtsp, http, ...) or standard
input (``-``: a container, or raw rgb24 frames with ``--raw-size WxH``) frame by frame
(:class:`~arn_lightning.inference.streaming.StreamingPredictor`: each frame from itself and the frames before it,
at the cost of one frame). Each frame's JSON line is written and flushed as soon as it is computed: to standard
output (no ``--out`` or ``--out -``), or with ``--out DIR`` into ``DIR/scene_graphs.jsonl`` next to the annotated
video and the timeline, which grow with the stream (``--write-at-end``: written when it ends). Ctrl-C (or SIGTERM)
stops cleanly after the frame being written, with every line so far intact and the video and timeline closed
(exit code 130). Problems of the source (a bad frame, a stall, a disconnect, a resolution change) are reported on
standard error with the frame number; ``--on-bad-frame skip`` goes on after a bad frame, ``error`` stops there
(exit 1); ``--reconnect N`` reopens a stalled or disconnected URL or camera.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

# the parser needs only these constants: torch, PyAV and the model are imported by `run`, so --help is instant
from arn_lightning.defaults import DEFAULT_FPS, DEFAULT_THRESHOLD, DEFAULT_TOP_K, PRECISIONS
from arn_lightning.redact import redact

if TYPE_CHECKING:
    from arn_lightning.inference.onnx_predictor import OnnxStreamingPredictor
    from arn_lightning.inference.output import LiveOutput
    from arn_lightning.inference.streaming import StreamingPredictor
    from arn_lightning.video.live import LiveSource, SourceEvent

#: Exit code of a streaming run stopped by Ctrl-C or SIGTERM (128 + SIGINT, the shell's convention).
EXIT_INTERRUPTED = 130
#: Default seconds without data before a live source counts as stalled.
DEFAULT_STREAM_TIMEOUT = 10.0

PROG = "arn-lightning infer"
DESCRIPTION = (
    "Scene graphs for any video or frame folder: one JSON line per sampled frame, an annotated video "
    "and a relation timeline, written all or nothing. Frame keys are <video>/<NNNNNN>.png with the 1-based "
    "frame number in decode order (as dump-frames and the Action Genome toolkit number them), or "
    "<folder>/<file name> for a folder."
)
EXIT_ERROR = 1


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number but got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer but got {text}")
    return value


def _raw_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        size = int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480 but got {text!r}") from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive width and height but got {text!r}")
    return size


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 but got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="Lightning checkpoint of an ARNLitModule, a model folder of `arn-lightning export --format safetensors` "
        "or hf://owner/name; with --stream also a model.onnx of `arn-lightning export`",
    )
    parser.add_argument(
        "--input",
        required=True,
        help="a video file (mp4, avi, mkv, ...) or a folder of images; with --stream also a camera (/dev/video0), "
        "a network URL (rtsp://, http://, ...) or - (standard input)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: <input name without suffix>_scene_graphs next to the input; with --stream, "
        "standard output for the JSON lines, or - to say so)",
    )
    _add_prediction_options(parser)
    _add_stream_options(parser)
    return parser


def _add_prediction_options(parser: argparse.ArgumentParser) -> None:
    """Sampling, model and output options, shared by a whole-video run and ``--stream``."""
    parser.add_argument(
        "--fps",
        type=_positive_float,
        default=DEFAULT_FPS,
        help="frames sampled per second of video (Action Genome annotates about 1-2 per second); "
        "for a folder, the rate of its images (default: %(default)s)",
    )
    parser.add_argument(
        "--top-k", type=_positive_int, default=DEFAULT_TOP_K, help="triplets kept per frame (default: %(default)s)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="lowest triplet score kept, subject x object x predicate score (default: %(default)s)",
    )
    parser.add_argument(
        "--causal",
        action="store_true",
        help="predict each frame from itself and the previous frames only (T times the compute)",
    )
    parser.add_argument(
        "--window",
        type=_positive_int,
        default=None,
        help="frames per clip, 1 to the model's T (default: T); with --stream or --causal the frames of context",
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=1, help="clips per forward pass (default: %(default)s)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto", help="auto: bf16 autocast on GPU, fp32 on CPU"
    )
    parser.add_argument("--save-frames", action="store_true", help="also write every annotated frame as a PNG")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_stream_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``--stream`` and its live sources."""
    stream = parser.add_argument_group("streaming (--stream)")
    stream.add_argument(
        "--stream",
        action="store_true",
        help="follow the input frame by frame (causal, one frame's cost each), writing each line as it is computed",
    )
    stream.add_argument(
        "--raw-size",
        type=_raw_size,
        default=None,
        metavar="WxH",
        help="--input -: standard input holds raw rgb24 frames of this size (default: a container)",
    )
    stream.add_argument(
        "--frame-rate",
        type=_positive_float,
        default=None,
        help="rate of raw frames or a folder's images, for their timestamps (default: --fps)",
    )
    stream.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_STREAM_TIMEOUT,
        help="seconds without data before a live source counts as stalled (default: %(default)s)",
    )
    stream.add_argument(
        "--reconnect",
        type=_non_negative_int,
        default=0,
        help="times to reopen a stalled or disconnected URL or camera (default: %(default)s)",
    )
    stream.add_argument(
        "--on-bad-frame",
        choices=("skip", "error"),
        default="skip",
        help="a frame that cannot be decoded: report it and go on, or stop (default: %(default)s)",
    )
    stream.add_argument("--max-frames", type=_positive_int, default=None, help="stop after this many frames")
    stream.add_argument(
        "--duration", type=_positive_float, default=None, help="stop after this many seconds of the source's time"
    )
    stream.add_argument(
        "--write-at-end",
        action="store_true",
        help="write the annotated video and the timeline when the stream ends (default: as it goes)",
    )
    stream.add_argument(
        "--timeline-every",
        type=_non_negative_int,
        default=None,
        help="frames between two redraws of the timeline while streaming (0: only at the end; default 50)",
    )


STREAM_ONLY = ("raw_size", "frame_rate", "max_frames", "duration", "write_at_end", "timeline_every")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse option combinations that mean nothing (exit 2 with the parser's message)."""
    if args.stream:
        if args.causal:
            parser.error("--causal: --stream is always causal (drop --causal)")
        if args.batch_size != 1:
            parser.error("--batch-size: --stream predicts one frame at a time (drop --batch-size)")
        return
    if args.checkpoint.suffix.lower() == ".onnx":
        parser.error(f"--checkpoint {args.checkpoint}: an ONNX model runs with --stream only")
    given = [f"--{name.replace('_', '-')}" for name in STREAM_ONLY if getattr(args, name) not in (None, False)]
    if given:
        parser.error(f"{', '.join(given)}: only with --stream")
    if args.input == "-" or "://" in args.input or args.input.startswith("/dev/video"):
        parser.error(f"--input {redact(args.input, args.input)}: a camera, URL or standard input needs --stream")
    if args.out == "-":
        parser.error("--out -: JSON lines on standard output need --stream")


def default_out(input_path: Path) -> Path:
    """``<input name without suffix>_scene_graphs`` next to the input."""
    return input_path.parent / f"{input_path.stem or input_path.name}_scene_graphs"


def run(args: argparse.Namespace) -> Path:
    """Predict and write every output; returns the output folder (raises on any error, leaving nothing behind)."""
    from arn_lightning.inference.api import load_model
    from arn_lightning.inference.output import staged_directory, write_inference
    from arn_lightning.video.files import open_frames

    input_path = Path(args.input)
    out = Path(args.out) if args.out else default_out(input_path)
    source = open_frames(input_path, args.fps)
    with staged_directory(out, overwrite=args.overwrite) as staging:
        predictor = load_model(args.checkpoint, device=args.device, precision=args.precision, window=args.window)
        write_inference(
            predictor,
            source,
            staging,
            causal=args.causal,
            batch_size=args.batch_size,
            top_k=args.top_k,
            threshold=args.threshold,
            save_frames=args.save_frames,
            progress=not args.quiet,
        )
    return out


class _StopSignals:
    """Ctrl-C / SIGTERM during a stream: while a frame's outputs are being written the stop waits for the end of
    that frame (no line is ever cut); at any other moment (decoding, the model, waiting for a live source) it
    interrupts at once. Either way the run then closes its outputs and exits with :data:`EXIT_INTERRUPTED`."""

    def __init__(self) -> None:
        self.requested = False
        self.writing = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        if not self.writing:
            raise KeyboardInterrupt

    def __enter__(self) -> _StopSignals:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _stream_predictor(args: argparse.Namespace) -> StreamingPredictor | OnnxStreamingPredictor:
    """The streaming predictor of ``--checkpoint``: onnxruntime for a ``.onnx`` export, else PyTorch."""
    if args.checkpoint.suffix.lower() == ".onnx":  # an exported model (arn-lightning export): onnxruntime
        from arn_lightning.inference.onnx_predictor import OnnxStreamingPredictor

        if args.window is not None or args.device != "cpu" or args.precision != "auto":
            raise ValueError(
                f"Expected no --window, --device or --precision with the ONNX model {args.checkpoint} (its window "
                "is fixed at export; it runs on onnxruntime's CPU provider) but got some"
            )
        return OnnxStreamingPredictor(args.checkpoint, top_k=args.top_k, threshold=args.threshold)
    from arn_lightning.inference.streaming import StreamingPredictor

    return StreamingPredictor(
        args.checkpoint,
        device=args.device,
        precision=args.precision,
        window=args.window,
        top_k=args.top_k,
        threshold=args.threshold,
    )


def _report_event(event: SourceEvent) -> None:
    """A source event on standard error (its message is masked where it is made: no password or token)."""
    print(f"{PROG}: {event.kind}: {event.message}", file=sys.stderr, flush=True)


def _open_stream_source(args: argparse.Namespace) -> LiveSource:
    """The live source of ``--input`` (:func:`arn_lightning.video.live.open_source`), events to standard error."""
    from arn_lightning.video.live import open_source

    return open_source(
        args.input,
        fps=args.fps,
        raw_size=args.raw_size,
        frame_rate=args.frame_rate,
        timeout=args.timeout,
        reconnect=args.reconnect,
        on_bad_frame=args.on_bad_frame,
        max_frames=args.max_frames,
        duration=args.duration,
        on_event=_report_event,
    )


def _follow(
    source: LiveSource, predictor: StreamingPredictor | OnnxStreamingPredictor, output: LiveOutput, quiet: bool
) -> int:
    """Push every frame of ``source`` through ``predictor`` into ``output``; returns the exit code (0, or
    :data:`EXIT_INTERRUPTED` after Ctrl-C / SIGTERM)."""
    from tqdm import tqdm

    stop = _StopSignals()
    code = 0
    progress = tqdm(unit="frame", disable=quiet, file=sys.stderr, desc=source.name)
    try:
        with stop, source, output:
            for frame in source:
                graph = predictor.push(frame)
                stop.writing = True
                output.add(frame, graph)
                stop.writing = False
                progress.update()
                if stop.requested:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
        print(f"{PROG}: stopped after {output.frames} frames (interrupted); outputs closed", file=sys.stderr)
    except BrokenPipeError:  # the reader of standard output went away (e.g. `| head`): a normal end
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        progress.close()
    return code


def run_stream(args: argparse.Namespace) -> int:
    """``--stream``: follow the source frame by frame, writing as it goes; returns the exit code."""
    from arn_lightning.inference.output import LiveOutput, live_directory

    to_stdout = args.out in (None, "-")
    folder = None if to_stdout else Path(args.out)
    if folder is not None:  # checked before the model loads: a refused folder costs nothing
        from arn_lightning.inference.output import check_output_folder

        check_output_folder(folder, args.overwrite)
    predictor = _stream_predictor(args)
    source = _open_stream_source(args)  # after the model: a live source buffers from the moment it is opened
    if folder is not None:
        live_directory(folder, overwrite=args.overwrite)
    timeline_every = {} if args.timeline_every is None else {"timeline_every": args.timeline_every}
    output = LiveOutput(
        folder,
        fps=source.fps or args.frame_rate or args.fps,
        lines=sys.stdout if to_stdout else None,
        save_frames=args.save_frames,
        at_end=args.write_at_end,
        title=source.name,
        **timeline_every,
    )
    code = _follow(source, predictor, output, args.quiet)
    where = "standard output" if folder is None else str(folder)
    print(f"{PROG}: {output.frames} frames -> {where}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the command on ``argv``; returns the exit code (0 ok, 1 error, 2 bad arguments, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    if args.stream:
        try:
            return run_stream(args)
        except (ValueError, OSError) as error:
            print(f"{PROG}: error: {redact(str(error), args.input)}", file=sys.stderr)
            return EXIT_ERROR
    try:
        out = run(args)
    except (ValueError, OSError) as error:
        print(f"{PROG}: error: {redact(str(error), args.input)}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{PROG}: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
