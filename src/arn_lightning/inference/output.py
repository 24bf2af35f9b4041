"""The files of an inference run, written all or nothing.

Everything is written into a hidden temporary folder next to the output folder, which replaces the output folder
only once every file is complete; on any error (or Ctrl-C) the temporary folder is removed and an existing output
folder is left as it was.

Files (names in :data:`OUTPUT_FILES`):

- ``scene_graphs.jsonl``: one line per sampled frame, see :meth:`arn_lightning.inference.graph.FrameGraph.to_json`;
- ``annotated.mp4``: each sampled frame with its boxes and triplet panel, at the sampling rate;
- ``timeline.png``: the relation timeline (:mod:`arn_lightning.inference.timeline`);
- ``frames/<NNNNNN>.png``: the annotated frames as images (optional), named by the frame's number in its source (the
  number of its key, 1-based, see docs/frames.md);
- ``.arn-lightning-output``: marks the folder as written by this command; ``--overwrite`` replaces only a folder that
  holds it, never a folder of the user's own.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

from tqdm import tqdm

from arn_lightning.atomic import replace_folder
from arn_lightning.inference.draw import annotate_frame
from arn_lightning.inference.graph import DEFAULT_THRESHOLD, DEFAULT_TOP_K, FrameGraph
from arn_lightning.inference.timeline import save_timeline
from arn_lightning.inference.video import FRAME_NUMBER_DIGITS, FrameSource, VideoFrame, VideoWriter

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


class OutputExistsError(FileExistsError):
    """The output folder exists, is not empty, and overwriting was not asked for."""


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


class OutputWriter:
    """Writes the files of one inference run into a folder as frames arrive (see the module docstring).

    Use as a context manager around the frame loop; :meth:`add` each frame in order. The folder is the staging
    folder of :func:`staged_directory`, which the caller turns into the output.

    Args:
        folder: where to write (must exist).
        fps: rate of the sampled frames: the annotated video's frame rate and the timeline's frame duration.
        save_frames: also write each annotated frame as a PNG.
        title: the timeline's title (e.g. the video's name).
    """

    def __init__(self, folder: Path, fps: float, save_frames: bool = False, title: str = "") -> None:
        self.folder = Path(folder)
        self.fps = fps
        self.save_frames = save_frames
        self.title = title
        self.graphs: list[FrameGraph] = []
        self._video = VideoWriter(self.folder / OUTPUT_FILES["video"], fps)
        self._lines: IO[str] | None = None

    def __enter__(self) -> OutputWriter:
        self._lines = open(self.folder / OUTPUT_FILES["graphs"], "w", encoding="utf-8")
        if self.save_frames:
            (self.folder / OUTPUT_FILES["frames"]).mkdir()
        return self

    def add(self, frame: VideoFrame, graph: FrameGraph) -> None:
        """Write one frame's JSON line and annotated image (frames must come in order)."""
        assert self._lines is not None, "use OutputWriter as a context manager"
        self._lines.write(json.dumps(graph.to_json(), allow_nan=False, separators=(",", ":")) + "\n")
        annotated = annotate_frame(frame.image, graph)
        self._video.write(annotated)
        if self.save_frames:
            name = f"{frame.source_index:0{FRAME_NUMBER_DIGITS}d}.png"  # the number of the frame's key
            annotated.save(self.folder / OUTPUT_FILES["frames"] / name)
        self.graphs.append(graph)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._lines is not None
        self._lines.close()
        self._video.close()
        if exc_type is None:
            save_timeline(self.graphs, self.folder / OUTPUT_FILES["timeline"], 1 / self.fps, title=self.title)


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
        source: the sampled frames (:func:`~arn_lightning.inference.video.open_frames`).
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
