"""Prediction files at full size: random access by frame key, sorted writing and merging in bounded memory.

The format is that of :mod:`arn_lightning.metrics.predictions` (one frame a JSON line, ``.jsonl`` or gzip-compressed
``.jsonl.gz``); this module adds what a file of Action Genome's size (54,371 test frames, about 26 KB a line for the
paper model: 1.4 GB) needs:

- :class:`PredictionIndex`: ``frame key -> prediction``, read from disk on access (the web app's compare tab);
- :class:`SortedPredictionSpool`: predictions added in any order, written sorted by frame key; lines beyond a memory
  budget are spilled as sorted runs to temporary files and k-way merged at the end (the writer of ``test`` and
  ``predict``);
- :func:`merge_prediction_files`: a k-way merge of files already sorted by frame key (the per-rank shards under DDP),
  reading one line of each at a time.

Merging copies the lines' bytes: a merged file is byte-identical to writing the same predictions in one go.

Example:
    >>> import os, tempfile
    >>> from arn_lightning.metrics.predictions import empty_prediction
    >>> folder = tempfile.mkdtemp()
    >>> spool = SortedPredictionSpool()
    >>> for key in ("b.mp4/000002.png", "a.mp4/000001.png"):
    ...     spool.add(empty_prediction(key))
    >>> spool.write(os.path.join(folder, "preds.jsonl"))
    2
    >>> list(PredictionIndex(os.path.join(folder, "preds.jsonl")))
    ['a.mp4/000001.png', 'b.mp4/000002.png']
"""

from __future__ import annotations

import heapq
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from arn_lightning._types import PathLike
from arn_lightning.metrics.predictions import (
    PredictionFileError,
    _float32_batch,
    _line_object,
    _tensors,
    atomic_prediction_file,
    decode_line,
    json_line,
    open_prediction_file,
    prediction_arrays,
    prediction_to_json,
)

#: Bytes of encoded lines a :class:`SortedPredictionSpool` keeps in memory before spilling a sorted run.
SPOOL_BYTES = 128 * 2**20
#: The start of a line as :func:`~arn_lightning.metrics.predictions.write_predictions` writes it: the frame first.
_FRAME_PREFIX = re.compile(rb'\{"frame":("(?:[^"\\]|\\.)*")')


def line_frame(raw: bytes) -> str:
    """The frame key of a prediction line, read from its start when it begins with ``{"frame":`` (as every written
    line does), else from the decoded line.

    Raises:
        ValueError: not JSON, not an object, or no frame key string.
    """
    match = _FRAME_PREFIX.match(raw)
    if match is not None:
        frame = orjson.loads(match.group(1))
        if frame:
            return frame
    return _line_object(raw)[0]


def _raw_lines(path: PathLike) -> Iterator[tuple[int, int, bytes]]:
    """``(line number, byte offset, line)`` of every non-blank line (offsets in the decompressed stream)."""
    offset = 0
    with open_prediction_file(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield number, offset, raw
            offset += len(raw)


def _keyed_lines(path: PathLike) -> Iterator[tuple[str, int, bytes]]:
    """``(frame, line number, line)`` of a file that must be sorted by frame key with each frame once."""
    previous = None
    for number, _, raw in _raw_lines(path):
        try:
            frame = line_frame(raw)
        except ValueError as error:
            raise PredictionFileError(path, number, str(error)) from None
        if previous is not None and frame <= previous:
            raise PredictionFileError(
                path, number, f"Expected frames sorted by key, each once, but {frame!r} follows {previous!r}"
            )
        previous = frame
        yield frame, number, raw


def _write_merged(path: PathLike, streams: Iterable[Iterator[tuple[str, Any, bytes]]]) -> int:
    """Write the k-way merge of sorted ``(frame, _, line)`` streams to ``path`` atomically; the line count.

    Raises:
        ValueError: a frame in two streams.
    """
    count, previous = 0, None
    with atomic_prediction_file(path) as out:
        for frame, _, raw in heapq.merge(*streams, key=itemgetter(0)):
            if frame == previous:
                raise ValueError(f"Expected one prediction per frame but {frame!r} appears twice")
            previous = frame
            out.write(raw)
            count += 1
    return count


def merge_prediction_files(path: PathLike, sources: Iterable[PathLike]) -> int:
    """Merge prediction files that are each sorted by frame key into ``path`` (sorted, atomic), reading one line
    of each source at a time (memory does not grow with the files). Lines are copied byte for byte; each source's
    lines are checked for order and their frame keys read, not revalidated (sources written by
    :func:`~arn_lightning.metrics.predictions.write_predictions` or :class:`SortedPredictionSpool`).

    Returns:
        The number of lines written.

    Raises:
        FileNotFoundError: a source is missing.
        PredictionFileError: a source line without a frame key, or a source out of order (naming file and line).
        ValueError: a frame in two sources.
    """
    return _write_merged(path, [_keyed_lines(source) for source in sources])


class SortedPredictionSpool:
    """Predictions collected in any order and written as one file sorted by frame key, in bounded memory.

    Each added prediction is validated and encoded at once (:func:`~arn_lightning.metrics.predictions.
    prediction_to_json`); once the encoded lines exceed ``max_bytes`` they are sorted and spilled to a temporary
    run file (in ``folder``, default the system's temporary folder), and :meth:`write` k-way merges the runs and
    the lines still in memory. The output is byte-identical to ``write_predictions(path, sorted(preds))``.

    Args:
        max_bytes: encoded lines kept in memory before a spill.
        folder: where run files go (removed by :meth:`write` and :meth:`discard`).
    """

    def __init__(self, max_bytes: int = SPOOL_BYTES, folder: PathLike | None = None) -> None:
        if max_bytes < 1:
            raise ValueError(f"Expected max_bytes >= 1 but got {max_bytes}")
        self.max_bytes = max_bytes
        self.folder = folder
        self._lines: list[tuple[str, bytes]] = []
        self._bytes = 0
        self._runs: list[Path] = []
        self.count = 0

    def add(self, pred: Mapping[str, Any]) -> None:
        """Validate and encode one prediction (with its ``frame``).

        Raises:
            ValueError: an invalid prediction, named ``preds[i]`` by the order of addition.
        """
        obj = prediction_to_json(pred, f"preds[{self.count}]")
        line = json_line(obj)
        self._lines.append((obj["frame"], line))
        self._bytes += len(line)
        self.count += 1
        if self._bytes > self.max_bytes:
            self._spill()

    def _spill(self) -> None:
        handle, name = tempfile.mkstemp(prefix="arn-predictions-", suffix=".run", dir=self.folder)
        self._runs.append(Path(name))
        with os.fdopen(handle, "wb") as out:
            for frame, line in sorted(self._lines, key=itemgetter(0)):
                out.write(orjson.dumps(frame) + b"\t" + line)  # the frame as a JSON string holds no raw tab
        self._lines, self._bytes = [], 0

    @staticmethod
    def _run_lines(path: Path) -> Iterator[tuple[str, int, bytes]]:
        with open(path, "rb") as handle:
            for raw in handle:
                head, _, line = raw.partition(b"\t")
                yield orjson.loads(head), 0, line

    def write(self, path: PathLike) -> int:
        """Write every added prediction to ``path`` (``.jsonl`` or ``.jsonl.gz``) sorted by frame key, atomically,
        and empty the spool.

        Returns:
            The number of lines written.

        Raises:
            ValueError: a frame added twice (the target is left untouched).
        """
        memory = ((frame, 0, line) for frame, line in sorted(self._lines, key=itemgetter(0)))
        try:
            return _write_merged(path, [*(self._run_lines(run) for run in self._runs), memory])
        finally:
            self.discard()

    def discard(self) -> None:
        """Forget the added predictions and remove the spilled runs."""
        for run in self._runs:
            run.unlink(missing_ok=True)
        self._runs, self._lines, self._bytes, self.count = [], [], 0, 0


class PredictionIndex(Mapping[str, dict[str, Any]]):
    """``frame key -> prediction`` (float32 / int64 tensors) of a prediction file, each read from disk on access.

    Building the index reads the file once for its frame keys and line offsets (not the values); a lookup seeks to
    the line and validates it. A ``.jsonl.gz`` file is decompressed up to the line on each lookup (slower: keep
    large files uncompressed for browsing).

    Raises:
        PredictionFileError: (building) a line without a frame key or a repeated frame; (lookup) an invalid line.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._places: dict[str, tuple[int, int]] = {}  # frame -> (line number, byte offset)
        for number, offset, raw in _raw_lines(self.path):
            try:
                frame = line_frame(raw)
            except ValueError as error:
                raise PredictionFileError(self.path, number, str(error)) from None
            if frame in self._places:
                raise PredictionFileError(
                    self.path,
                    number,
                    f"Expected one line per frame but {frame!r} already appeared on line {self._places[frame][0]}",
                )
            self._places[frame] = (number, offset)

    def __getitem__(self, frame: str) -> dict[str, Any]:
        number, offset = self._places[frame]
        with open_prediction_file(self.path) as handle:
            handle.seek(offset)
            raw = handle.readline()
        try:
            return _tensors(frame, _float32_batch(prediction_arrays(decode_line(raw), "the line")))
        except ValueError as error:
            raise PredictionFileError(self.path, number, str(error)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._places)

    def __len__(self) -> int:
        return len(self._places)

    def __contains__(self, frame: object) -> bool:
        return frame in self._places
