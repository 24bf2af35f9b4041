"""Frame files: decoding the annotated frames of Charades videos to PNG, and reading frames back.

Frame keys name the same image as the Action Genome toolkit, which dumps frames with
``ffmpeg -i <video> <dir>/%06d.png``: ``NNNNNN`` in ``<VID>.mp4/<NNNNNN>.png`` is the **1-based** position of the
frame in decode order (``000001.png`` is the first frame, ``000010.png`` the last frame of a 10-frame video; there is
no ``000000.png``), and the frame is turned upright by the container's display rotation, as ffmpeg does by default.
Decoding goes through :func:`arn_lightning.video.decode.decode_video`, the one decoding path that
``arn-lightning infer`` uses too; ``docs/frames.md`` gives the rules (variable frame rate included).

Unlike the toolkit, the dump checks what it writes and reports every video it cannot use, with a plain reason:
a missing or unreadable file, no video stream, no decodable frame, a decoding error (a truncated or corrupt file),
annotated frames beyond the video's last frame, a frame whose size differs from the annotation's ``bbox_size``, or a
key numbered ``000000``. A failed video leaves no empty frame folder behind, and every PNG is written atomically.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file
from tqdm import tqdm

from arn_lightning._types import PathLike
from arn_lightning.atomic import atomic_path
from arn_lightning.data import ag
from arn_lightning.reading import read_text
from arn_lightning.video.decode import (
    FIRST_FRAME_NUMBER,
    FRAME_NUMBER_DIGITS,
    OFF_GRID_PERIODS,
    DecodedFrame,
    VideoError,
    VideoInfo,
    decode_video,
    frame_file_name,
    off_grid,
    probe_video,
)

Size = tuple[int, int]
#: zlib level of the dumped PNGs: 1 writes about 3x faster than the default 6 for ~10% larger files.
DEFAULT_PNG_LEVEL = 1
#: Frame names listed in a failure message before "and N more".
_LISTED = 5


class FrameError(ValueError):
    """A frame image is missing, unreadable or of the wrong size; the message names the file."""


def frame_path(frames_dir: PathLike, key: str) -> Path:
    """Path of the frame ``key`` (``"<VID>.mp4/<NNNNNN>.png"``) under ``frames_dir``."""
    return Path(frames_dir) / key


#: Frame decoders of :func:`read_frame`. PNG is lossless, so both give the same pixels (tests/test_data_frames.py
#: checks it); torchvision's libpng path is ~30% faster (0.82 vs 1.17 ms CPU per 480x270 frame), Pillow is the
#: fallback for a torchvision without image decoding (deprecated there since 0.29 in favour of TorchCodec).
FRAME_DECODERS = ("torchvision", "pil")


def _decode_torchvision(path: PathLike) -> torch.Tensor:
    """``uint8 [3, H, W]`` RGB via torchvision.io (a channels-last view of libpng's interleaved rows)."""
    return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)


def _decode_pil(path: PathLike) -> torch.Tensor:
    """``uint8 [3, H, W]`` RGB via Pillow, with the same memory layout as :func:`_decode_torchvision`."""
    with Image.open(path) as image:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)  # [H, W, 3] -> [3, H, W]


def read_frame(path: PathLike, expected_size: Size | None = None, decoder: str = "torchvision") -> torch.Tensor:
    """Decode a frame image to ``uint8 [3, H, W]`` RGB (libpng / libjpeg through torchvision.io, or Pillow).

    The result is a channels-last view (strides ``(1, 3 * W, 3)``), the layout torchvision's ``uint8`` resize
    works in: resizing it is ~2.5x faster than resizing a contiguous ``[3, H, W]`` copy.

    Args:
        path: the image file.
        expected_size: ``(width, height)`` the image must have (``bbox_size`` of the annotations), or None.
        decoder: one of :data:`FRAME_DECODERS` (both give the same pixels).

    Raises:
        FrameError: the file is missing, cannot be decoded, or has another size.
        ValueError: an unknown ``decoder``.
    """
    if decoder not in FRAME_DECODERS:
        raise ValueError(f"Expected decoder in {list(FRAME_DECODERS)} but got {decoder!r}")
    try:
        image = _decode_torchvision(path) if decoder == "torchvision" else _decode_pil(path)
    except (RuntimeError, OSError, ValueError, SyntaxError) as exc:  # Pillow raises SyntaxError on broken chunks
        raise FrameError(f"{path}: Expected a readable frame image but decoding failed ({exc})") from exc
    if expected_size is not None and (image.shape[2], image.shape[1]) != tuple(expected_size):
        raise FrameError(
            f"{path}: Expected a {expected_size[0]}x{expected_size[1]} frame (bbox_size of "
            f"{ag.PERSON_FILE}) but got {image.shape[2]}x{image.shape[1]}"
        )
    return image


def find_missing_frames(frames_dir: PathLike, keys: Iterable[str]) -> list[str]:
    """Keys whose frame file is absent or empty (one directory listing per video, no image decoding)."""
    by_video: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        video, _ = ag.parse_frame_key(key, "frame key")
        by_video[video].append(key)
    missing = []
    for video, video_keys in by_video.items():
        folder = Path(frames_dir) / video
        sizes = {e.name: e.stat().st_size for e in os.scandir(folder)} if folder.is_dir() else {}
        missing += [k for k in video_keys if sizes.get(k.split("/", 1)[1], 0) == 0]
    return missing


def _bbox_size(entry: Any, key: str, source: Path) -> Size:
    """``(width, height)`` of a ``person_bbox.pkl`` entry."""
    value = entry.get("bbox_size") if isinstance(entry, dict) else None
    try:
        width, height = (int(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        width = height = 0
    if width <= 0 or height <= 0:
        raise ag.AnnotationError(
            f"{source}[{key!r}]['bbox_size']: Expected a positive (width, height) pair but got {value!r:.100}"
        )
    return width, height


def load_annotated_frames(root: PathLike, keys_file: PathLike | None = None) -> tuple[list[str], dict[str, Size]]:
    """The frame keys to dump and the frame sizes they must have.

    Keys come from ``keys_file``, else the key set of ``annotations/person_bbox.pkl``, else
    ``annotations/frame_list.txt``. Sizes are the ``bbox_size`` ``(width, height)`` of every key of
    ``person_bbox.pkl`` when that file exists (empty otherwise); a key without an entry is not size checked.

    Returns:
        ``(keys, sizes)``: sorted unique keys, and ``key -> (width, height)``.

    Raises:
        FileNotFoundError: no source of keys exists.
        ag.AnnotationError: a malformed key (naming the file and line), an unreadable pickle, or an entry without a
            positive ``bbox_size``.
    """
    annotations = Path(root) / ag.ANNOTATION_DIR
    person_file = annotations / ag.PERSON_FILE
    sizes: dict[str, Size] = {}
    if person_file.is_file():
        person = ag.load_pickle(person_file)
        for key, entry in person.items():
            ag.parse_frame_key(key, str(person_file))
            sizes[key] = _bbox_size(entry, key, person_file)
        if keys_file is None:
            return sorted(sizes), sizes
    path = Path(keys_file) if keys_file is not None else annotations / ag.FRAME_LIST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"Expected frame keys in {path} (or {person_file}) but neither exists")
    keys = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if line.strip():
            ag.parse_frame_key(line.strip(), f"{path} line {number}")
            keys.append(line.strip())
    return sorted(set(keys)), sizes


def load_frame_keys(root: PathLike, keys_file: PathLike | None = None) -> list[str]:
    """The frame keys to dump (the keys of :func:`load_annotated_frames`).

    Raises:
        FileNotFoundError: none of the three sources exists.
        ag.AnnotationError: a malformed key (naming the file and line) or pickle.
    """
    return load_annotated_frames(root, keys_file)[0]


@dataclass
class DumpReport:
    """Outcome of :func:`dump_frames`.

    Attributes:
        written: frames decoded and written.
        skipped: frames already present (resumed run).
        failures: ``video -> reason`` for every video that could not be fully dumped.
        warnings: ``video -> note`` for videos dumped in full whose frame numbers may still differ from the
            toolkit's (variable frame rate, see ``docs/frames.md``).
    """

    written: int = 0
    skipped: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)


@dataclass
class VideoDump:
    """Outcome of :func:`dump_video` for one video (``failure`` / ``warning`` None when there is none)."""

    written: int = 0
    skipped: int = 0
    failure: str | None = None
    warning: str | None = None


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _save_png(image: Image.Image, path: Path, level: int) -> None:
    """Write ``image`` as PNG atomically (a killed run leaves no partial file under ``path``)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=level)


def _present(path: Path) -> bool:
    """A frame file that exists and is not empty (an empty file is what a crashed writer of another tool leaves)."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _missing_dirs(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_empty(folders: Iterable[Path]) -> None:
    """Remove each folder (deepest first) that exists and is empty: folders this run created and left unused."""
    for folder in folders:
        try:
            folder.rmdir()  # fails on a non-empty folder, which is never removed
        except OSError:
            pass


def dump_video(
    video_path: PathLike,
    out_dir: PathLike,
    numbers: Sequence[int],
    png_level: int = DEFAULT_PNG_LEVEL,
    sizes: Mapping[int, Size] | None = None,
) -> VideoDump:
    """Decode the frames ``numbers`` (1-based decode order) of one video into ``out_dir/<NNNNNN>.png``.

    Decoding stops after the largest number. Frames already present (non-empty files) are skipped. A frame whose
    upright size differs from ``sizes[number]`` is not written. ``out_dir`` is created with the first frame
    written; if this call created it and it is empty at the end, it is removed again (never a folder that existed
    before).

    Args:
        video_path: the video file.
        out_dir: the video's frame folder.
        numbers: frame numbers, each >= 1.
        png_level: zlib compression level of the PNGs (0-9).
        sizes: ``number -> (width, height)`` the frame must have (``bbox_size``), for the numbers that have one.

    Returns:
        A :class:`VideoDump`; its ``failure`` names ``video_path`` and says why frames are missing.

    Raises:
        ValueError: a number below 1 (callers report such keys themselves, see :func:`dump_frames`).
    """
    video_path, out_dir = Path(video_path), Path(out_dir)
    sizes = sizes or {}
    names = {n: frame_file_name(n) for n in set(numbers)}  # raises ValueError below 1
    pending = {n for n in names if not _present(out_dir / names[n])}
    result = VideoDump(skipped=len(names) - len(pending))
    if not pending:
        return result
    created = not out_dir.exists()  # its parents are dump_frames' business (other workers write into them)
    try:
        _decode_into(video_path, out_dir, names, pending, png_level, sizes, result)
    finally:
        if created:
            _remove_empty([out_dir])
    return result


def _leading_gap_warning(video_path: Path, info: VideoInfo) -> str | None:
    """The warning of a video that starts after its other streams (see ``VideoInfo.leading_gap``), or None."""
    if info.leading_gap() < OFF_GRID_PERIODS:
        return None
    return (
        f"{video_path} starts its video {info.start_offset:.3f} s ({info.leading_gap():.2f} frame periods) "
        f"after its other streams, so the Action Genome toolkit's ffmpeg (constant-rate image2 output) may "
        f"have repeated the first frame and numbered every later frame one or more higher than decode order "
        f"(frames are numbered in decode order; see docs/frames.md)"
    )


def _off_grid_warning(video_path: Path, frame: DecodedFrame, frame_rate: float | None) -> str | None:
    """The warning of a variable-rate video whose ``frame`` is off the constant-rate grid (:func:`off_grid`)."""
    if not off_grid(frame, frame_rate):
        return None
    assert frame_rate is not None
    return (
        f"{video_path} has a variable frame rate: frame {frame.number} is at {frame.timestamp:.3f} s, "
        f"{frame.timestamp * frame_rate - (frame.number - 1):+.2f} frame periods off the "
        f"{frame_rate:g} fps grid, so the Action Genome toolkit's ffmpeg (constant-rate image2 output) "
        f"may number the frames from there on differently (frames are numbered in decode order; see "
        f"docs/frames.md)"
    )


def _write_pending(
    video_path: Path,
    out_dir: Path,
    names: Mapping[int, str],
    pending: set,
    png_level: int,
    sizes: Mapping[int, Size],
    result: VideoDump,
) -> tuple[VideoInfo, int, list[str]]:
    """Decode up to the last pending frame (:func:`decode_video`, the shared decode loop) and write the pending
    frames of the annotated size; returns the video's info, the frames decoded and the wrong-size reports.

    Raises:
        VideoError: the video cannot be read or decoded.
        OSError: writing a frame failed.
    """
    info = probe_video(video_path)
    result.warning = _leading_gap_warning(video_path, info)
    decoded, wrong_size = 0, []
    for frame in decode_video(video_path, last=max(pending)):
        decoded = frame.number
        result.warning = result.warning or _off_grid_warning(video_path, frame, info.frame_rate)
        if frame.number not in pending:
            continue
        expected = sizes.get(frame.number)
        if expected is not None and frame.image.size != tuple(expected):
            wrong_size.append(
                f"{names[frame.number]}: Expected {expected[0]}x{expected[1]} (bbox_size of "
                f"{ag.PERSON_FILE}) but got {frame.image.width}x{frame.image.height}"
            )
            continue
        _save_png(frame.image, out_dir / names[frame.number], png_level)
        result.written += 1
    return info, decoded, wrong_size


def _decode_into(
    video_path: Path,
    out_dir: Path,
    names: Mapping[int, str],
    pending: set,
    png_level: int,
    sizes: Mapping[int, Size],
    result: VideoDump,
) -> None:
    """The dumping of :func:`dump_video`: write the pending frames, then report what is missing in ``result``."""
    try:
        info, decoded, wrong_size = _write_pending(video_path, out_dir, names, pending, png_level, sizes, result)
    except VideoError as error:
        result.failure = str(error)
        return
    except OSError as error:  # writing a frame failed: a full disk, a read-only folder
        result.failure = f"Expected to write the frames of {video_path} into {out_dir} but writing failed: {error}"
        return
    problems: list[str] = []
    beyond = sorted(n for n in pending if n > decoded)
    if beyond:
        problem = (
            f"{video_path} has {decoded} frame{'' if decoded == 1 else 's'} (numbered {FIRST_FRAME_NUMBER} "
            f"to {decoded}) but "
            f"{_listed([names[n] for n in beyond])} {'is' if len(beyond) == 1 else 'are'} annotated"
        )
        if info.declared_frames is not None and info.declared_frames > decoded:
            problem += f"; the container declares {info.declared_frames} frames, so the file looks truncated"
        problems.append(problem)
    if wrong_size:
        problems.append(
            f"{len(wrong_size)} frame(s) of {video_path} have another size than annotated, not written: "
            + "; ".join(wrong_size[:_LISTED])
            + (" ..." if len(wrong_size) > _LISTED else "")
        )
    if problems:
        result.failure = "; ".join(problems)


def dump_frames(
    videos_dir: PathLike,
    root: PathLike,
    keys: Sequence[str],
    workers: int = 1,
    png_level: int = DEFAULT_PNG_LEVEL,
    progress: bool = True,
    sizes: Mapping[str, Size] | None = None,
) -> DumpReport:
    """Decode the annotated frames ``keys`` of the videos in ``videos_dir`` into ``root/frames/``.

    Resumable: frames already on disk are skipped (each PNG is written to a temporary file and renamed). Folders
    are created only when a frame is written into them, so a failed video leaves no empty folder.

    Args:
        videos_dir: folder with ``<VID>.mp4`` files.
        root: dataset root; frames go to ``root/frames/<VID>.mp4/<NNNNNN>.png`` (NNNNNN 1-based, module docstring).
        keys: frame keys to produce. A key numbered ``000000`` is reported as a failure of its video (the video's
            other frames are still dumped).
        workers: processes decoding videos in parallel.
        png_level: zlib compression level of the PNGs.
        progress: show a tqdm progress bar (frames).
        sizes: ``key -> (width, height)`` each frame must have (``bbox_size``, see :func:`load_annotated_frames`);
            a frame of another size is reported and not written.

    Raises:
        ag.AnnotationError: a malformed key.
    """
    sizes = sizes or {}
    by_video: dict[str, list[int]] = defaultdict(list)
    report = DumpReport()
    for key in keys:
        video, number = ag.parse_frame_key(key, "frame key")
        if number < FIRST_FRAME_NUMBER:
            report.failures[video] = (
                f"{key}: Expected a frame number from "
                f"{FIRST_FRAME_NUMBER:0{FRAME_NUMBER_DIGITS}d} (numbering is 1-based: "
                f"{frame_file_name(FIRST_FRAME_NUMBER)} is the first frame of the video) but "
                f"got {number:0{FRAME_NUMBER_DIGITS}d}; not dumped"
            )
        else:
            by_video[video].append(number)
    frames_dir = Path(root) / ag.FRAMES_DIR
    created = _missing_dirs(frames_dir)
    jobs = []
    for video, numbers in sorted(by_video.items()):
        video_keys = {n: f"{video}/{frame_file_name(n)}" for n in numbers}
        video_sizes = {n: sizes[key] for n, key in video_keys.items() if key in sizes}
        jobs.append((Path(videos_dir) / video, frames_dir / video, sorted(video_keys), png_level, video_sizes))
    try:
        with tqdm(total=len(keys), unit="frame", disable=not progress, desc="dump-frames") as bar:
            for job, result in _run_jobs(jobs, workers):
                video = job[0].name
                report.written += result.written
                report.skipped += result.skipped
                if result.failure is not None:
                    earlier = report.failures.get(video)
                    report.failures[video] = result.failure if earlier is None else f"{earlier}; {result.failure}"
                if result.warning is not None:
                    report.warnings[video] = result.warning
                bar.update(len(job[2]))
    finally:
        _remove_empty(created)
    return report


def _run_jobs(jobs: list[tuple], workers: int) -> Iterable[tuple[tuple, VideoDump]]:
    """Run :func:`dump_video` on every job, in this process or a pool, yielding (job, result) as they finish."""
    if workers <= 1:
        for job in jobs:
            yield job, dump_video(*job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(dump_video, *job): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()
