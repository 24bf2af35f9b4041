"""Per-frame scene-graph predictions: validation, and the JSON Lines prediction files.

A prediction of one frame follows ``ARCHITECTURE.md`` section 4 (``docs/action_genome.md`` section 4 on disk):

========================  ==========================  ===============================================
key                       in memory                   meaning
========================  ==========================  ===============================================
``frame``                 ``str``                     ``"<VID>.mp4/<NNNNNN>.png"``
``boxes``                 ``float [R, 4]``            xyxy, original pixels (row 0 need not be the person)
``labels``                ``int [R]``                 AG object index, 1 (person) .. 36
``scores``                ``float [R]``               object scores in ``[0, 1]``
``pairs``                 ``int [P, 2]``              (subject row, object row), rows in ``[0, R)``
``attention``             ``float [P, 3]``            predicate scores in ``[0, 1]``, one row per pair
``spatial``               ``float [P, 6]``            likewise
``contacting``            ``float [P, 17]``           likewise
========================  ==========================  ===============================================

Every box obeys the box rule of :mod:`arn_lightning.boxes` (finite coordinates, ``x2 >= x1``, ``y2 >= y1``; zero
width or height and coordinates beyond the frame allowed). In memory the values are tensors (any device), numpy
arrays or nested lists; on disk they are JSON lists, one
frame a line, with float32 precision: :func:`write_predictions` writes every float as the shortest decimal that
reads back as the same float32 (``0.1`` rather than ``0.10000000149011612``), atomically; :func:`read_predictions`
reads and validates a file, returning float32 tensors equal to what was written, and raises
:class:`PredictionFileError` with the line number on the first bad line. Scoring a file therefore gives exactly
the numbers of scoring the float32 predictions in memory.

Example:
    >>> import os, tempfile, torch
    >>> pred = {"frame": "001YG.mp4/000089.png", "boxes": torch.tensor([[0., 0., 10., 20.], [2., 2., 6., 6.]]),
    ...         "labels": torch.tensor([1, 11]), "scores": torch.tensor([1.0, 0.5]),
    ...         "pairs": torch.tensor([[0, 1]]), "attention": torch.full((1, 3), 0.25),
    ...         "spatial": torch.full((1, 6), 0.5), "contacting": torch.full((1, 17), 0.125)}
    >>> path = os.path.join(tempfile.mkdtemp(), "preds.jsonl")
    >>> write_predictions(path, [pred])
    1
    >>> [back] = read_predictions(path)
    >>> back["frame"], back["pairs"].tolist(), back["scores"].tolist()
    ('001YG.mp4/000089.png', [[0, 1]], [1.0, 0.5])
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any, NamedTuple

import numpy as np
import orjson
import torch

from arn_lightning import vocab
from arn_lightning._types import PathLike
from arn_lightning.atomic import atomic_open
from arn_lightning.boxes import InvalidBoxError
from arn_lightning.metrics.batching import Field, check_range, first_invalid_row, frame_of_row, stack_frames
from arn_lightning.reading import TextDecodeError
from arn_lightning.reading import decode_line as decode_text_line

#: Significant decimal digits that always identify a float32.
FLOAT32_DIGITS = 9
#: Keys of a prediction, in the order they are written.
PREDICTION_KEYS: tuple[str, ...] = ("frame", "boxes", "labels", "scores", "pairs", *vocab.PREDICATE_TYPES)


#: The prediction's array keys; ``R`` box rows, ``P`` pairs.
PREDICTION_FIELDS: dict[str, Field] = {
    "boxes": Field("float", "R", 4),
    "labels": Field("int", "R"),
    "scores": Field("float", "R"),
    "pairs": Field("int", "P", 2),
    **{kind: Field("float", "P", vocab.TYPE_SIZES[kind]) for kind in vocab.PREDICATE_TYPES},
}


class PredictionBatch(NamedTuple):
    """Validated predictions of ``F`` frames, each key concatenated over the frames (``R_f`` rows, ``P_f`` pairs).

    A single frame is a batch with ``F = 1``. Float arrays keep float32 or float64 as given (other numbers
    become float64).
    """

    boxes: np.ndarray  #: float [sum R_f, 4] xyxy original pixels
    labels: np.ndarray  #: int64 [sum R_f]
    scores: np.ndarray  #: float [sum R_f]
    pairs: np.ndarray  #: int64 [sum P_f, 2] (subject row, object row), rows counted within the frame
    attention: np.ndarray  #: float [sum P_f, 3]
    spatial: np.ndarray  #: float [sum P_f, 6]
    contacting: np.ndarray  #: float [sum P_f, 17]
    num_rows: np.ndarray  #: int64 [F] R_f
    num_pairs: np.ndarray  #: int64 [F] P_f


class PredictionFileError(ValueError):
    """A prediction file that cannot be read; ``path`` and ``line`` (1-based, 0 if none) name the place."""

    def __init__(self, path: PathLike, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        super().__init__(f"{path} line {line}: {message}" if line else f"{path}: {message}")


def _check_values(batch: PredictionBatch, name_of: Callable[[int], str]) -> None:
    def describe(key: str) -> Callable[[int], str]:
        return lambda frame: f"{name_of(frame)}[{key!r}]"

    row = first_invalid_row(batch.boxes)
    if row >= 0:  # the box rule of arn_lightning.boxes
        frame = frame_of_row(row, batch.num_rows)
        local = row - int(batch.num_rows[:frame].sum())
        raise InvalidBoxError(f"{describe('boxes')(frame)}[{local}]", batch.boxes[row].tolist())
    check_range(batch.labels, batch.num_rows, vocab.PERSON_LABEL, vocab.NUM_OBJECT_CLASSES, describe("labels"))
    check_range(batch.scores, batch.num_rows, 0.0, 1.0, describe("scores"))
    rows_of_pair = np.repeat(batch.num_rows, batch.num_pairs)[:, None]  # [sum P_f, 1]
    check_range(batch.pairs, batch.num_pairs, 0, rows_of_pair - 1, describe("pairs"))
    for kind in vocab.PREDICATE_TYPES:
        check_range(getattr(batch, kind), batch.num_pairs, 0.0, 1.0, describe(kind))


def stack_predictions(
    preds: Sequence[Mapping[str, Any]], name_of: Callable[[int], str] = "preds[{}]".format, check_values: bool = True
) -> PredictionBatch:
    """Validate the predictions of several frames (module docstring) and concatenate them key by key.

    Args:
        preds: per-frame predictions; ``frame`` is not needed here.
        name_of: frame index -> its name in errors.
        check_values: also check the values (boxes obeying the box rule of :mod:`arn_lightning.boxes`, labels in
            1..36, scores and predicate scores in ``[0, 1]`` (NaN fails), pair rows in ``[0, R_f)``), not only
            keys, dtypes and shapes.

    Raises:
        ValueError: "Expected ... but got ..." naming the frame and the key (a box breaking the rule:
            :class:`~arn_lightning.boxes.InvalidBoxError`, naming the frame, the key and the row).

    Example:
        >>> batch = stack_predictions([{"boxes": [], "labels": [], "scores": [], "pairs": [],
        ...                             "attention": [], "spatial": [], "contacting": []}])
        >>> batch.boxes.shape, batch.contacting.shape, batch.num_pairs.tolist()
        ((0, 4), (0, 17), [0])
    """
    arrays, sizes = stack_frames(preds, PREDICTION_FIELDS, name_of)
    empty = np.zeros(0, dtype=np.int64)
    batch = PredictionBatch(**arrays, num_rows=sizes.get("R", empty), num_pairs=sizes.get("P", empty))
    if check_values:
        _check_values(batch, name_of)
    return batch


def prediction_arrays(pred: Mapping[str, Any], where: str = "prediction", check_values: bool = True) -> PredictionBatch:
    """Validate one frame's prediction and return it as a :class:`PredictionBatch` of one frame.

    Example:
        >>> prediction_arrays({"boxes": [[0, 0, 2, 2]], "labels": [1], "scores": [0.5], "pairs": [[0, 0]],
        ...                    "attention": [[1, 0, 0]], "spatial": [[0] * 6], "contacting": [[0] * 17]}).pairs
        array([[0, 0]])
    """
    return stack_predictions([pred], lambda _: where, check_values)


def empty_prediction(frame: str) -> dict[str, Any]:
    """A prediction with no box and no pair (scores recall 0), e.g. for a frame missing from a file.

    Example:
        >>> empty_prediction("001YG.mp4/000089.png")["pairs"].shape
        torch.Size([0, 2])
    """
    return {
        "frame": frame,
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.long),
        "scores": torch.zeros(0),
        "pairs": torch.zeros(0, 2, dtype=torch.long),
        **{kind: torch.zeros(0, vocab.TYPE_SIZES[kind]) for kind in vocab.PREDICATE_TYPES},
    }


def prediction_from_ground_truth(target: Mapping[str, Any]) -> dict[str, Any]:
    """The PredCls-style oracle of a metric ground truth: GT boxes and labels with score 1, one pair
    ``(0, j + 1)`` per object, predicate score 1 for every annotated label and 0 otherwise.

    Under "no constraint" it recalls every GT triplet once K covers them; under "with" only the first of several
    spatial (or contacting) labels of an object. Useful as an upper bound, to check a pipeline end to end, and to draw
    the ground truth of a frame (the validation report).

    Args:
        target: ``{"frame"?, "boxes" [N+1, 4], "labels" [N+1], "attention" [N, 3], "spatial" [N, 6],
            "contacting" [N, 17]}`` (ARCHITECTURE.md section 4, tensors on any device, arrays or lists); a batch
            target (section 2) has these keys too.

    Returns:
        The prediction as CPU tensors (section 4); ``"frame"`` only if the target has one.

    Example:
        >>> import torch
        >>> oracle = prediction_from_ground_truth({"frame": "a.mp4/000001.png", "boxes": torch.zeros(2, 4),
        ...     "labels": torch.tensor([1, 8]), "attention": torch.tensor([[0, 1, 0]]),
        ...     "spatial": torch.tensor([[0, 1, 1, 0, 0, 0]]), "contacting": torch.zeros(1, 17, dtype=torch.long)})
        >>> oracle["pairs"].tolist(), oracle["spatial"].tolist()
        ([[0, 1]], [[0.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    """

    def cpu(value: Any) -> torch.Tensor:  # a batch target may live on the GPU, where numpy cannot read it
        return value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))

    boxes = cpu(target["boxes"]).to(torch.float32)
    rows = len(boxes)
    oracle: dict[str, Any] = {
        "boxes": boxes,
        "labels": cpu(target["labels"]).to(torch.long),
        "scores": torch.ones(rows),
        "pairs": torch.stack([torch.zeros(rows - 1, dtype=torch.long), torch.arange(1, rows)], dim=1),
    }
    for kind in vocab.PREDICATE_TYPES:
        oracle[kind] = (cpu(target[kind]) > 0).float()
    if "frame" in target:
        oracle["frame"] = target["frame"]
    return oracle


def _frame_key(pred: Mapping[str, Any], where: str) -> str:
    frame = pred.get("frame")
    if not isinstance(frame, str) or not frame:
        raise ValueError(f"Expected {where}['frame'] to be a frame key string but got {frame!r}")
    return frame


def prediction_to_json(pred: Mapping[str, Any], where: str = "prediction") -> dict[str, Any]:
    """The JSON object of one prediction (validated; lists of numbers, integers for labels and pairs, floats as
    the shortest decimals of their float32 values).

    Example:
        >>> from arn_lightning.metrics.predictions import empty_prediction
        >>> prediction_to_json(empty_prediction("a.mp4/000001.png"))["pairs"]
        []
    """
    arrays = prediction_arrays(pred, where)
    return _encode(_frame_key(pred, where), {key: getattr(arrays, key) for key in PREDICTION_FIELDS})


def encode_prediction(pred: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object of one prediction that already follows the contract, e.g. the output of
    :class:`~arn_lightning.postprocess.PostProcess` (which checks finiteness and the box rule) or a prediction read
    back by :func:`prediction_from_json`: the fields of :func:`prediction_to_json`, equal to its result, without
    validating again. Tensors may be on any device.

    Example:
        >>> encode_prediction(empty_prediction("a.mp4/000001.png"))["boxes"]
        []
    """
    arrays = {}
    for key, field in PREDICTION_FIELDS.items():
        value = pred[key]
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if field.kind == "float" and value.dtype not in (torch.float32, torch.float64):
                value = value.float()  # bfloat16 / float16: exact in float32
            value = value.numpy()
        arrays[key] = np.asarray(value, dtype=np.int64 if field.kind == "int" else None)
    return _encode(pred["frame"], arrays)


def _encode(frame: str, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The JSON object of a prediction's arrays: integers as they are, floats as the shortest decimals of their
    float32 values (one :func:`shortest_float32` call for all float fields)."""
    floats = [key for key, field in PREDICTION_FIELDS.items() if field.kind == "float"]
    sizes = [arrays[key].size for key in floats]
    short = np.split(
        shortest_float32(np.concatenate([np.asarray(arrays[key], dtype=np.float64).reshape(-1) for key in floats])),
        np.cumsum(sizes)[:-1],
    )
    values = {key: part.reshape(arrays[key].shape).tolist() for key, part in zip(floats, short)}
    return {
        "frame": frame,
        **{key: values[key] if key in values else arrays[key].tolist() for key in PREDICTION_FIELDS},
    }


def shortest_float32(values: np.ndarray, max_digits: int = FLOAT32_DIGITS) -> np.ndarray:
    """float64 array: per value, the double nearest to the shortest decimal that rounds to the same float32.

    ``json`` writes a double with the shortest digits that read back as that double, so a float32 ``0.1`` is
    written ``0.1`` instead of ``0.10000000149011612``; parsing it and rounding to float32 gives the value back.
    Values are first rounded to float32 (the file's precision).

    Example:
        >>> shortest_float32(np.array([0.1, 1 / 3, 1234.5, 0.0], dtype=np.float32)).tolist()
        [0.1, 0.33333334, 1234.5, 0.0]
    """
    single = np.asarray(values, dtype=np.float32).reshape(-1)
    exact = single.astype(np.float64)
    nonzero = np.isfinite(exact) & (exact != 0)
    exponent = np.floor(np.log10(np.abs(np.where(nonzero, exact, 1.0))))  # decimal exponent of the leading digit
    low, high = np.zeros(exact.size), np.full(exact.size, float(max_digits))  # round trip fails / holds
    best = exact.copy()
    while (high - low > 1).any():  # binary search: more digits never round-trip worse
        digits = np.floor((low + high) / 2)
        candidate = _round_significant(exact, digits, exponent)
        fits = (candidate.astype(np.float32) == single) & nonzero
        best = np.where(fits & (high - low > 1), candidate, best)
        low, high = np.where(fits, low, digits), np.where(fits, digits, high)
    return best.reshape(np.shape(values))


def _round_significant(values: np.ndarray, digits: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """``values`` rounded to ``digits`` significant decimal digits (per element), as the nearest doubles."""
    places = digits - 1 - exponent  # decimals to keep; negative: round to tens, hundreds, ...
    scale = 10.0 ** np.abs(places)  # an exact power of ten: the quotient / product below is correctly rounded
    return np.where(places >= 0, np.round(values * scale) / scale, np.round(values / scale) * scale)


def _tensors(frame: str, arrays: PredictionBatch) -> dict[str, Any]:
    tensors: dict[str, Any] = {"frame": frame}
    for key, field in PREDICTION_FIELDS.items():
        array = getattr(arrays, key)
        tensors[key] = torch.from_numpy(array if field.kind == "int" else array.astype(np.float32))
    return tensors


def _float32_batch(arrays: PredictionBatch) -> PredictionBatch:
    """The file's precision: float fields as float32.

    Raises:
        ValueError: a value that is finite in the file but beyond float32's range (it would become infinite).
    """
    floats = {}
    for key, field in PREDICTION_FIELDS.items():
        if field.kind != "float":
            continue
        wide = getattr(arrays, key)
        with np.errstate(over="ignore"):  # an overflow is reported below, naming the value
            narrow = wide.astype(np.float32)
        overflow = np.isfinite(wide) & ~np.isfinite(narrow)
        if overflow.any():
            raise ValueError(
                f"Expected {key} within float32's range (|x| <= {np.finfo(np.float32).max:.4g}) but got "
                f"{float(wide[overflow].reshape(-1)[0])!r}"
            )
        floats[key] = narrow
    return arrays._replace(**floats)


def prediction_from_json(obj: Any, where: str = "prediction") -> dict[str, Any]:
    """Validate a decoded JSON prediction and return it as tensors (float32 / int64), the in-memory contract.

    Example:
        >>> pred = prediction_from_json({"frame": "a.mp4/000001.png", "boxes": [[0, 0, 4, 4]], "labels": [1],
        ...     "scores": [1], "pairs": [], "attention": [], "spatial": [], "contacting": []})
        >>> pred["boxes"].dtype, pred["spatial"].shape
        (torch.float32, torch.Size([0, 6]))
    """
    if not isinstance(obj, dict):
        raise ValueError(f"Expected {where} to be a JSON object but got {type(obj).__name__}")
    return _tensors(_frame_key(obj, where), prediction_arrays(obj, where))


#: Frames validated together when a prediction file is read (one array operation per key per batch).
READ_BATCH_FRAMES = 256
#: The suffix of a gzip-compressed prediction file (``.jsonl.gz``), read and written transparently.
GZIP_SUFFIX = ".gz"


def is_gzip_path(path: PathLike) -> bool:
    """Whether ``path`` names a gzip-compressed prediction file (by its suffix, ``.gz``)."""
    return str(path).endswith(GZIP_SUFFIX)


def open_prediction_file(path: PathLike) -> IO[bytes]:
    """``path`` opened for binary reading, decompressed on the fly when it ends with ``.gz``.

    Raises:
        OSError: the file cannot be opened.
    """
    return gzip.open(path, "rb") if is_gzip_path(path) else open(path, "rb")  # noqa: SIM115 (the caller closes)


@contextlib.contextmanager
def atomic_prediction_file(path: PathLike) -> Iterator[IO[bytes]]:
    """A binary handle whose bytes become ``path`` atomically (:func:`arn_lightning.atomic.atomic_open`),
    gzip-compressed when ``path`` ends with ``.gz`` (no name and mtime 0 in the header: equal content gives an
    equal file)."""
    with atomic_open(path, "wb") as raw:
        if not is_gzip_path(path):
            yield raw
            return
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
            yield packed  # type: ignore[misc]


def decode_line(raw: bytes) -> Any:
    """One JSON line decoded with orjson; a line orjson refuses (the ``NaN`` token, invalid UTF-8, ...) goes
    through the standard library, whose result or error message is then the one reported.

    Raises:
        ValueError: not JSON (``json.JSONDecodeError`` or ``UnicodeDecodeError``).
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw.decode("utf-8"))


def _line_object(raw: bytes) -> tuple[str, dict[str, Any]]:
    obj = decode_line(raw)
    if not isinstance(obj, dict):
        raise ValueError(f"Expected a JSON object but got {type(obj).__name__}")
    return _frame_key(obj, "the line"), obj


def _as_arrays(obj: dict[str, Any]) -> dict[str, Any]:
    """The line's values of :data:`PREDICTION_FIELDS` as numpy arrays, converted at once so that the decoded lists
    die with the line: a batch of live lists (about 700 a frame) makes Python's cyclic garbage collector scan them
    again and again, which cost more than parsing. The conversion is the ``np.asarray`` that validation applies
    anyway; a value it refuses is kept as it is, for validation to report."""
    for key in PREDICTION_FIELDS:
        value = obj.get(key)
        if isinstance(value, list):
            try:
                obj[key] = np.asarray(value)
            except (ValueError, TypeError):
                pass
    return obj


def _checked_batches(
    path: PathLike, numbers: list[int], frames: list[str], objs: list[dict[str, Any]]
) -> Iterator[tuple[list[int], list[str], PredictionBatch]]:
    """The float32 :class:`PredictionBatch` of decoded lines, validated together; on an error each line is validated
    alone, the lines before the first bad one are yielded, and the bad one is reported with its message and number."""
    try:
        batch = _float32_batch(stack_predictions(objs, lambda _: "the line"))
    except ValueError:
        for index, (number, obj) in enumerate(zip(numbers, objs)):
            try:
                _float32_batch(prediction_arrays(obj, "the line"))
            except ValueError as error:
                if index:
                    yield from _checked_batches(path, numbers[:index], frames[:index], objs[:index])
                raise PredictionFileError(path, number, str(error)) from None
        raise
    yield numbers, frames, batch


def iter_prediction_batches(
    path: PathLike, batch_frames: int = READ_BATCH_FRAMES
) -> Iterator[tuple[list[int], list[str], PredictionBatch]]:
    """Stream a prediction file (``.jsonl``, or ``.jsonl.gz``) in batches of up to ``batch_frames`` frames:
    ``(line numbers, frames, arrays)``, the arrays float32 (the file's precision) and concatenated over the batch.

    Lines are parsed with orjson and validated a batch at a time (JSON, keys, lengths, pair rows, value ranges,
    NaN, the box rule); frames must be unique. Memory holds one batch, whatever the file's size. Every line before
    a bad one is yielded before the error.

    Raises:
        PredictionFileError: naming the file and the 1-based line number of the first bad line.
    """
    seen: dict[str, int] = {}
    numbers: list[int] = []
    frames: list[str] = []
    objs: list[dict[str, Any]] = []
    with open_prediction_file(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                frame, obj = _line_object(raw)
                if frame in seen:  # the line's own errors come first, as when each line is checked alone
                    _float32_batch(prediction_arrays(obj, "the line"))
                    first = seen[frame]
                    raise ValueError(f"Expected one line per frame but {frame!r} already appeared on line {first}")
            except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
                yield from _checked_batches(path, numbers, frames, objs) if objs else ()
                raise PredictionFileError(path, number, _line_error(path, raw, number, error)) from None
            seen[frame] = number
            numbers.append(number)
            frames.append(frame)
            objs.append(_as_arrays(obj))
            if len(objs) == batch_frames:
                yield from _checked_batches(path, numbers, frames, objs)
                numbers, frames, objs = [], [], []
    if objs:
        yield from _checked_batches(path, numbers, frames, objs)


def _line_error(path: PathLike, raw: bytes, number: int, error: ValueError) -> str:
    """What is wrong with line ``number``: where its bytes stop being UTF-8 (column and byte), else ``error``."""
    try:
        decode_text_line(path, raw, number)
    except TextDecodeError as decode_error:
        return str(decode_error).removeprefix(f"{path} line {number}, ")
    return str(error)


def split_batch(batch: PredictionBatch) -> list[PredictionBatch]:
    """The frames of a batch, each as a :class:`PredictionBatch` of one frame (views, no copy).

    Example:
        >>> both = stack_predictions([empty_prediction("a"), empty_prediction("b")])
        >>> [part.num_rows.tolist() for part in split_batch(both)]
        [[0], [0]]
    """
    row_ends = np.cumsum(batch.num_rows).tolist()
    pair_ends = np.cumsum(batch.num_pairs).tolist()
    parts = []
    for index, (row_end, pair_end) in enumerate(zip(row_ends, pair_ends)):
        rows = slice(row_end - int(batch.num_rows[index]), row_end)
        pairs = slice(pair_end - int(batch.num_pairs[index]), pair_end)
        values = {
            key: getattr(batch, key)[rows if field.dim == "R" else pairs] for key, field in PREDICTION_FIELDS.items()
        }
        one = slice(index, index + 1)
        parts.append(PredictionBatch(**values, num_rows=batch.num_rows[one], num_pairs=batch.num_pairs[one]))
    return parts


def iter_predictions(path: PathLike) -> Iterator[tuple[int, str, PredictionBatch]]:
    """Read a prediction file lazily, yielding ``(line number, frame, arrays)`` per non-blank line (float fields
    as float32, the file's precision); a ``.jsonl.gz`` file is decompressed on the fly.

    Every line is validated (JSON, keys, lengths, pair rows, value ranges, NaN, the box rule) and frames must be
    unique (:func:`iter_prediction_batches`, whose batches this splits).

    Raises:
        PredictionFileError: naming the file and the 1-based line number of the first bad line.
    """
    for numbers, frames, batch in iter_prediction_batches(path):
        yield from zip(numbers, frames, split_batch(batch))


def read_predictions(path: PathLike) -> Iterator[dict[str, Any]]:
    """Read a prediction file lazily, yielding each frame's prediction as tensors (float32 / int64).

    Raises:
        PredictionFileError: see :func:`iter_predictions`.
    """
    for _, frame, arrays in iter_predictions(path):
        yield _tensors(frame, arrays)


def json_line(obj: dict[str, Any]) -> bytes:
    """One line of a prediction file: the compact JSON of ``obj`` (:func:`prediction_to_json`) and a newline."""
    # allow_nan=False: validation already rejected NaN, this keeps the file strict JSON regardless
    return (json.dumps(obj, allow_nan=False, separators=(",", ":")) + "\n").encode("utf-8")


def write_predictions(path: PathLike, preds: Iterable[Mapping[str, Any]]) -> int:
    """Write predictions as JSON Lines, atomically: the file appears complete or not at all.

    Each prediction is validated first (:func:`prediction_arrays`); on any error the target is left untouched.
    Floats are written with float32 precision, each as its shortest decimal (:func:`shortest_float32`). The
    predictions are consumed one at a time (memory holds one frame and the set of frame keys).

    Args:
        path: the ``.jsonl`` file, or ``.jsonl.gz`` for a gzip-compressed one; its folder is created if needed.
            Written through :func:`atomic_prediction_file` (flushed to disk, then renamed over ``path``).
        preds: per-frame predictions (module docstring), each with a unique ``frame``.

    Returns:
        The number of lines written.

    Raises:
        ValueError: a prediction that is invalid (naming its index) or a repeated frame.
    """
    count, seen = 0, set()
    with atomic_prediction_file(path) as out:  # fsync, rename; removed on an error
        for index, pred in enumerate(preds):
            obj = prediction_to_json(pred, f"preds[{index}]")
            if obj["frame"] in seen:
                raise ValueError(f"Expected one prediction per frame but preds[{index}] repeats {obj['frame']!r}")
            seen.add(obj["frame"])
            out.write(json_line(obj))
            count += 1
    return count


__all__ = [
    "PREDICTION_FIELDS",
    "PREDICTION_KEYS",
    "PredictionBatch",
    "PredictionFileError",
    "atomic_prediction_file",
    "decode_line",
    "empty_prediction",
    "is_gzip_path",
    "iter_prediction_batches",
    "iter_predictions",
    "json_line",
    "open_prediction_file",
    "prediction_arrays",
    "prediction_from_ground_truth",
    "prediction_from_json",
    "prediction_to_json",
    "read_predictions",
    "shortest_float32",
    "split_batch",
    "stack_predictions",
    "write_predictions",
]
