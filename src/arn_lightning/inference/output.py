"""The files of an inference run: written all or nothing (``infer``), or as the frames arrive (``infer --stream``).

Everything is written into a hidden temporary folder next to the output folder, which replaces the output folder
only once every file is complete; on any error (or Ctrl-C) the temporary folder is removed and an existing output
folder is left as it was.

Files (names in :data:`OUTPUT_FILES`):

- ``scene_graphs.jsonl``: one line per sampled frame, see :meth:`arn_lightning.scene_graph.FrameGraph.to_json`;
- ``annotated.mp4``: each sampled frame with its boxes and triplet panel, at the sampling rate;
- ``timeline.png``: the relation timeline (:mod:`arn_lightning.drawing.timeline`);
- ``frames/<NNNNNN>.png``: the annotated frames as images (optional), named by the frame's number in its source (the
  number of its key, 1-based, see docs/frames.md);
- ``.arn-lightning-output``: marks the folder as written by this command; ``--overwrite`` replaces only a folder that
  holds it, never a folder of the user's own.

A streaming run (:class:`LiveOutput`) writes the same files into the output folder itself while the stream goes, so
that they can be watched (and piped) as they grow: each JSON line is written whole and flushed as soon as its frame
is predicted; the annotated video is a fragmented mp4 (:class:`~arn_lightning.video.files.VideoWriter`'s
``live`` mode: playable while it grows, everything up to the last fragment intact if the process dies); the timeline
is redrawn every ``timeline_every`` frames and at the end, each time replacing the previous PNG atomically; frame
PNGs are written atomically one by one. With ``at_end`` the video and the timeline are written only when the stream
ends (the video atomically).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tqdm import tqdm

from arn_lightning.atomic import atomic_path, replace_folder
from arn_lightning.drawing.annotate import annotate_frame
from arn_lightning.drawing.timeline import save_timeline
from arn_lightning.scene_graph import DEFAULT_THRESHOLD, DEFAULT_TOP_K, FrameGraph
from arn_lightning.video.files import FRAME_NUMBER_DIGITS, FrameSource, VideoFrame, VideoWriter

if TYPE_CHECKING:
    from arn_lightning.inference.api import SceneGraphPredictor

OUTPUT_FILES = {
    "graphs": "scene_graphs.jsonl",
    "video": "annotated.mp4",
    "timeline": "timeline.png",
    "frames": "frames",
}
#: The file that marks an output folder as this project's (the only kind ``overwrite`` replaces).
MARKER_FILE = ".arn-lightning-output"


#: Permissions of the output folder (``mkdtemp`` makes it private).
FOLDER_MODE = 0o755
#: Frames between two redraws of a streaming run's timeline (each redraw takes the whole history so far).
DEFAULT_TIMELINE_EVERY = 50


class OutputExistsError(FileExistsError):
    """The output folder exists, is not empty, and overwriting was not asked for."""


def check_output_folder(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that is a file, or not empty without being an earlier output to overwrite."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"Expected an output folder but {out} is a file")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"Expected a new or empty output folder but {out} is not empty (pass --overwrite)")
        if not (out / MARKER_FILE).is_file():
            raise OutputExistsError(
                f"Expected --overwrite to replace an earlier output (a folder holding "
                f"{MARKER_FILE}) but {out} holds other files; it is left as it is: choose "
                f"another output folder"
            )


@contextlib.contextmanager
def staged_directory(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder next to ``out`` that becomes ``out`` when the ``with`` block ends without error.

    Args:
        out: the final folder.
        overwrite: replace an existing, non-empty ``out`` (removed only after the new one is complete).

    The new folder holds :data:`MARKER_FILE`; ``overwrite`` replaces only a folder that holds it (an earlier output),
    so no folder of the user's own is ever deleted.

    Raises:
        OutputExistsError: ``out`` exists and is not empty, and ``overwrite`` is off or ``out`` is not an earlier
            output (no :data:`MARKER_FILE`); checked before anything is written.
        NotADirectoryError: ``out`` exists and is a file.
    """
    out = Path(out)
    check_output_folder(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        staging.chmod(FOLDER_MODE)
        (staging / MARKER_FILE).write_text("written by arn-lightning; --overwrite may replace this folder\n")
        yield staging
        replace_folder(staging, out, replace_existing=True)  # checked above: empty, or an earlier output
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_inference(
    predictor: SceneGraphPredictor,
    source: FrameSource,
    folder: Path,
    causal: bool = False,
    batch_size: int = 1,
    top_k: int = DEFAULT_TOP_K,
    threshold: float = DEFAULT_THRESHOLD,
    save_frames: bool = False,
    progress: bool = False,
) -> list[FrameGraph]:
    """Predict every sampled frame of ``source`` and write the run's files into ``folder`` (module docstring).

    Args:
        predictor: the model.
        source: the sampled frames (:func:`~arn_lightning.video.files.open_frames`).
        folder: an existing folder (the staging folder of :func:`staged_directory`).
        causal, batch_size, top_k, threshold: see :meth:`SceneGraphPredictor.stream`.
        save_frames: also write each annotated frame as a PNG.
        progress: show a progress bar (frames predicted and written).

    Returns:
        The frames' scene graphs.
    """
    with OutputWriter(folder, source.fps, save_frames=save_frames, title=source.name) as writer:
        stream = predictor.stream(source, causal=causal, batch_size=batch_size, top_k=top_k, threshold=threshold)
        for frame, graph in tqdm(stream, total=source.estimated_count, unit="frame", disable=not progress):
            writer.add(frame, graph)
    return writer.graphs


def live_directory(out: Path, overwrite: bool = False) -> Path:
    """Create the output folder of a streaming run (written in place, see the module docstring).

    Same rules as :func:`staged_directory`: a new or empty folder, or with ``overwrite`` an earlier output (holding
    :data:`MARKER_FILE`), which is removed first; a folder of the user's own is never touched.

    Raises:
        OutputExistsError, NotADirectoryError: as :func:`staged_directory`, before anything is written.
    """
    out = Path(out)
    check_output_folder(out, overwrite)
    if out.is_dir() and (out / MARKER_FILE).is_file():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(FOLDER_MODE)
    (out / MARKER_FILE).write_text("written by arn-lightning; --overwrite may replace this folder\n")
    return out


class LiveOutput:
    """The outputs of a streaming run, written as each frame arrives (see the module docstring).

    Args:
        folder: the output folder (:func:`live_directory`), or None for no files.
        fps: the annotated video's frame rate and the timeline's frame duration (``1 / fps``).
        lines: also write each JSON line here (e.g. standard output), flushed per frame.
        save_frames: also write each annotated frame as a PNG.
        at_end: write the video and the timeline only when the stream ends.
        timeline_every: frames between two redraws of the timeline (0: only at the end).
        title: the timeline's title.
    """

    def __init__(
        self,
        folder: Path | None,
        fps: float,
        lines: IO[str] | None = None,
        save_frames: bool = False,
        at_end: bool = False,
        timeline_every: int = DEFAULT_TIMELINE_EVERY,
        title: str = "",
    ) -> None:
        if timeline_every < 0:
            raise ValueError(f"Expected timeline_every >= 0 frames but got {timeline_every}")
        self.folder = None if folder is None else Path(folder)
        self.fps = fps
        self.lines = lines
        self.save_frames = save_frames and self.folder is not None
        self.at_end = at_end
        self.timeline_every = 0 if at_end else timeline_every
        self.title = title
        self.frames = 0
        #: Every frame's graph without its raw prediction (what the timeline reads; bounded memory per frame).
        self.history: list[FrameGraph] = []
        self._file: IO[str] | None = None
        self._video: VideoWriter | None = None
        if self.folder is not None:
            self._file = open(self.folder / OUTPUT_FILES["graphs"], "w", encoding="utf-8")
            self._video = VideoWriter(self.folder / OUTPUT_FILES["video"], fps, live=not at_end)
            if self.save_frames:
                (self.folder / OUTPUT_FILES["frames"]).mkdir(exist_ok=True)

    def add(self, frame: VideoFrame, graph: FrameGraph) -> None:
        """Write one frame's JSON line (whole, flushed), its annotated image, and the timeline when due."""
        line = json.dumps(graph.to_json(), allow_nan=False, separators=(",", ":")) + "\n"
        for handle in (self._file, self.lines):
            if handle is not None:
                handle.write(line)
                handle.flush()
        light = FrameGraph(graph.index, graph.source_index, graph.timestamp, {"frame": graph.frame}, graph.triplets)
        self.history.append(light)
        self.frames += 1
        if self.folder is None:
            return
        annotated = annotate_frame(frame.image, graph)
        assert self._video is not None
        self._video.write(annotated)
        if self.save_frames:
            name = f"{frame.source_index:0{FRAME_NUMBER_DIGITS}d}.png"
            with atomic_path(self.folder / OUTPUT_FILES["frames"] / name) as tmp:
                annotated.save(tmp, format="png")
        if self.timeline_every and self.frames % self.timeline_every == 0:
            self.write_timeline()

    def write_timeline(self) -> None:
        """Draw the timeline of every frame so far, replacing the previous one atomically."""
        if self.folder is None or not self.history:
            return
        with atomic_path(self.folder / OUTPUT_FILES["timeline"]) as tmp:
            save_timeline(self.history, tmp, 1 / self.fps, title=self.title)

    def close(self, timeline: bool = True) -> None:
        """Finish the files: the JSON lines closed, the video closed (playable), the final timeline drawn (unless
        ``timeline`` is False)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._video is not None:
            video, self._video = self._video, None
            video.close()
        if timeline:
            self.write_timeline()

    def __enter__(self) -> LiveOutput:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class OutputWriter(LiveOutput):
    """Writes the files of one inference run into a folder as frames arrive, for :func:`write_inference` (see the
    module docstring): :class:`LiveOutput` with the video and the timeline written at the end (``at_end``), every
    frame's whole graph kept in :attr:`graphs`, and no timeline when the block ends with an error.

    Use as a context manager around the frame loop; :meth:`add` each frame in order. The folder is the staging
    folder of :func:`staged_directory`, which the caller turns into the output.

    Args:
        folder: where to write (must exist).
        fps: rate of the sampled frames: the annotated video's frame rate and the timeline's frame duration.
        save_frames: also write each annotated frame as a PNG.
        title: the timeline's title (e.g. the video's name).
    """

    def __init__(self, folder: Path, fps: float, save_frames: bool = False, title: str = "") -> None:
        super().__init__(folder, fps, save_frames=save_frames, at_end=True, title=title)
        #: Every frame's graph, its prediction included.
        self.graphs: list[FrameGraph] = []

    def add(self, frame: VideoFrame, graph: FrameGraph) -> None:
        """Write one frame's JSON line and annotated image (frames must come in order)."""
        super().add(frame, graph)
        self.graphs.append(graph)

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        self.close(timeline=exc_type is None)  # the staging folder of a failed run is removed anyway
