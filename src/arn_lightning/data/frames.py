"""Frame files: decoding annotated frames from Charades videos to PNG, and reading frames back.

Frame numbers follow the Action Genome toolkit: ``NNNNNN`` in ``<VID>.mp4/<NNNNNN>.png`` is the 0-based index of
the frame in decoding order (ffmpeg's ``select=eq(n, NNNNNN)``). Unlike the toolkit, a video that cannot be decoded
or is shorter than its annotated frames is reported as a failure instead of leaving an empty folder.
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import av
import torch
from torchvision.io import ImageReadMode, decode_image, read_file
from tqdm import tqdm

from arn_lightning.data import ag

PathLike = Union[str, Path]
#: zlib level of the dumped PNGs: 1 writes about 3x faster than the default 6 for ~10% larger files.
DEFAULT_PNG_LEVEL = 1


class FrameError(ValueError):
    """A frame image is missing, unreadable or of the wrong size; the message names the file."""


def frame_path(frames_dir: PathLike, key: str) -> Path:
    """Path of the frame ``key`` (``"<VID>.mp4/<NNNNNN>.png"``) under ``frames_dir``."""
    return Path(frames_dir) / key


def read_frame(path: PathLike, expected_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Decode a frame image to ``uint8 [3, H, W]`` RGB (libpng / libjpeg through torchvision.io).

    Args:
        path: the image file.
        expected_size: ``(width, height)`` the image must have (``bbox_size`` of the annotations), or None.

    Raises:
        FrameError: the file is missing, cannot be decoded, or has another size.
    """
    try:
        image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as exc:
        raise FrameError(f"{path}: Expected a readable frame image but decoding failed ({exc})") from exc
    if expected_size is not None and (image.shape[2], image.shape[1]) != tuple(expected_size):
        raise FrameError(f"{path}: Expected a {expected_size[0]}x{expected_size[1]} frame (bbox_size of "
                         f"{ag.PERSON_FILE}) but got {image.shape[2]}x{image.shape[1]}")
    return image


def find_missing_frames(frames_dir: PathLike, keys: Iterable[str]) -> List[str]:
    """Keys whose frame file is absent or empty (one directory listing per video, no image decoding)."""
    by_video: Dict[str, List[str]] = defaultdict(list)
    for key in keys:
        video, _ = ag.parse_frame_key(key, "frame key")
        by_video[video].append(key)
    missing = []
    for video, video_keys in by_video.items():
        folder = Path(frames_dir) / video
        sizes = {e.name: e.stat().st_size for e in os.scandir(folder)} if folder.is_dir() else {}
        missing += [k for k in video_keys if sizes.get(k.split("/", 1)[1], 0) == 0]
    return missing


def load_frame_keys(root: PathLike, keys_file: Optional[PathLike] = None) -> List[str]:
    """The frame keys to dump: from ``keys_file``, else the pickles' key set, else ``annotations/frame_list.txt``.

    Raises:
        FileNotFoundError: none of the three sources exists.
        ag.AnnotationError: a malformed key (naming the file and line).
    """
    annotations = Path(root) / ag.ANNOTATION_DIR
    if keys_file is None and (annotations / ag.PERSON_FILE).is_file():
        keys = list(ag.load_pickle(annotations / ag.PERSON_FILE))
        source = str(annotations / ag.PERSON_FILE)
        for key in keys:
            ag.parse_frame_key(key, source)
        return sorted(keys)
    path = Path(keys_file) if keys_file is not None else annotations / ag.FRAME_LIST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"Expected frame keys in {path} (or {annotations / ag.PERSON_FILE}) but neither "
                                f"exists")
    keys = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            ag.parse_frame_key(line.strip(), f"{path} line {number}")
            keys.append(line.strip())
    return sorted(set(keys))


@dataclass
class DumpReport:
    """Outcome of :func:`dump_frames`.

    Attributes:
        written: frames decoded and written.
        skipped: frames already present (resumed run).
        failures: ``video -> reason`` for every video that could not be fully dumped.
    """

    written: int = 0
    skipped: int = 0
    failures: Dict[str, str] = field(default_factory=dict)


def _save_png(frame: "av.VideoFrame", path: Path, level: int) -> None:
    """Write a decoded frame as PNG through a temporary file, so that a killed run leaves no partial file."""
    tmp = path.with_name(path.name + ".tmp")
    frame.to_image().save(tmp, format="PNG", compress_level=level)
    os.replace(tmp, path)


def dump_video(video_path: PathLike, out_dir: PathLike, numbers: Sequence[int],
               png_level: int = DEFAULT_PNG_LEVEL) -> Tuple[int, int, Optional[str]]:
    """Decode the frames ``numbers`` (0-based decode order) of one video into ``out_dir/<NNNNNN>.png``.

    Returns:
        ``(written, skipped, failure)``: frames written, frames already present, and None or the failure reason.
    """
    out_dir = Path(out_dir)
    pending = {n for n in numbers if not (out_dir / f"{n:06d}.png").is_file()}
    skipped = len(set(numbers)) - len(pending)
    if not pending:
        return 0, skipped, None
    if not Path(video_path).is_file():
        return 0, skipped, f"video file {video_path} does not exist"
    out_dir.mkdir(parents=True, exist_ok=True)
    written, last, count = 0, max(pending), 0
    try:
        with av.open(str(video_path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for count, frame in enumerate(container.decode(stream), start=1):
                index = count - 1
                if index in pending:
                    _save_png(frame, out_dir / f"{index:06d}.png", png_level)
                    written += 1
                if index >= last:
                    break
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
        return written, skipped, f"decoding {video_path} failed after {count} frames: {exc}"
    if written < len(pending):
        return written, skipped, (f"{video_path} has {count} decodable frames but frame {last} is annotated "
                                  f"({len(pending) - written} frame(s) not written)")
    return written, skipped, None


def dump_frames(videos_dir: PathLike, root: PathLike, keys: Sequence[str], workers: int = 1,
                png_level: int = DEFAULT_PNG_LEVEL, progress: bool = True) -> DumpReport:
    """Decode the annotated frames ``keys`` of the videos in ``videos_dir`` into ``root/frames/``.

    Resumable: frames already on disk are skipped (each PNG is written to a temporary file and renamed).

    Args:
        videos_dir: folder with ``<VID>.mp4`` files.
        root: dataset root; frames go to ``root/frames/<VID>.mp4/<NNNNNN>.png``.
        keys: frame keys to produce.
        workers: processes decoding videos in parallel.
        png_level: zlib compression level of the PNGs.
        progress: show a tqdm progress bar (frames).
    """
    by_video: Dict[str, List[int]] = defaultdict(list)
    for key in keys:
        video, number = ag.parse_frame_key(key, "frame key")
        by_video[video].append(number)
    jobs = [(Path(videos_dir) / video, Path(root) / ag.FRAMES_DIR / video, sorted(nums), png_level)
            for video, nums in sorted(by_video.items())]
    report = DumpReport()
    with tqdm(total=len(keys), unit="frame", disable=not progress, desc="dump-frames") as bar:
        for (video_path, _, numbers, _), (written, skipped, failure) in _run_jobs(jobs, workers):
            report.written += written
            report.skipped += skipped
            if failure is not None:
                report.failures[video_path.name] = failure
            bar.update(len(numbers))
    return report


def _run_jobs(jobs: List[tuple], workers: int) -> Iterable[Tuple[tuple, Tuple[int, int, Optional[str]]]]:
    """Run :func:`dump_video` on every job, in this process or a pool, yielding (job, result) as they finish."""
    if workers <= 1:
        for job in jobs:
            yield job, dump_video(*job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(dump_video, *job): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()
