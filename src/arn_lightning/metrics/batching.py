"""Validate per-frame records of arrays and concatenate them frame after frame (one array per key).

The metric scores a batch of frames with whole-batch numpy operations: every key (``boxes``, ``pairs``, ...) of all
frames is concatenated along its first dimension, and the per-frame lengths are kept to find a frame again.
Tensors take a fast path (dtype and shape read from the tensor, one ``torch.cat`` per key, a single copy to the
host), numpy arrays and JSON-style nested lists are converted with :func:`checked_array`.

Example:
    >>> import torch
    >>> fields = {"boxes": Field("float", "R", 4), "labels": Field("int", "R")}
    >>> arrays, sizes = stack_frames([{"boxes": torch.zeros(2, 4), "labels": torch.tensor([1, 2])},
    ...                               {"boxes": [[0, 0, 1, 1]], "labels": [3]}], fields, lambda i: f"preds[{i}]")
    >>> arrays["boxes"].shape, arrays["labels"].tolist(), sizes["R"].tolist()
    ((3, 4), [1, 2, 3], [2, 1])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from arn_lightning.boxes import first_invalid_box

ArrayLike = torch.Tensor | np.ndarray


class Field(NamedTuple):
    """One key of a per-frame record: ``kind`` ``"int"`` or ``"float"``, first dimension named ``dim``
    (shared by the keys of equal length), and ``width`` of the second dimension (``None``: 1-D)."""

    kind: str
    dim: str
    width: int | None = None


def _shape_text(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("*" if size is None else str(size) for size in shape) + "]"


def checked_array(value: Any, name: str, kind: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """``value`` (tensor, array or nested list) as a numpy array of the expected kind and shape.

    Args:
        value: the data; a tensor is detached and moved to the CPU.
        name: what to call it in an error, e.g. ``"preds[3]['pairs']"``.
        kind: ``"int"`` (result int64, integers required) or ``"float"`` (any real number; float32 and float64
            stay as they are, anything else becomes float64).
        shape: expected shape, ``None`` for a free dimension; an empty JSON list ``[]`` stands for any empty shape.

    Raises:
        ValueError: "Expected ... but got ..." naming ``name``.

    Example:
        >>> checked_array([[1, 2]], "pairs", "int", (None, 2)).dtype
        dtype('int64')
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.double() if value.dtype in (torch.float16, torch.bfloat16) else value
    try:
        array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    except (ValueError, TypeError) as error:
        raise ValueError(f"Expected {name} to be a rectangular array of numbers but got {error}") from None
    empty_shape = [0 if size is None else size for size in shape]
    if array.size == 0 and array.ndim <= len(shape) and 0 in empty_shape:  # JSON "[]" for an empty [0, k]
        array = np.zeros(empty_shape, dtype=np.int64 if kind == "int" else np.float64)
    if array.dtype.kind not in ("iu" if kind == "int" else "iuf"):
        wanted = "integers" if kind == "int" else "real numbers"
        raise ValueError(f"Expected {name} to hold {wanted} but got dtype {array.dtype}")
    if array.ndim != len(shape) or any(e is not None and e != s for e, s in zip(shape, array.shape)):
        raise ValueError(f"Expected {name} of shape {_shape_text(shape)} but got {list(array.shape)}")
    return _as_kind(array, kind)


_TORCH_INTEGERS = frozenset({torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8})
_TORCH_REALS = _TORCH_INTEGERS | {torch.float64, torch.float32}


def _checked_value(value: Any, name: str, kind: str, rows: int | None, width: int | None) -> ArrayLike:
    """A tensor of an accepted dtype and the expected shape as it is (the fast path, no copy), anything else
    through :func:`checked_array` (conversion, or the error message)."""
    if isinstance(value, torch.Tensor) and value.dtype in (_TORCH_INTEGERS if kind == "int" else _TORCH_REALS):
        shape = value.shape
        if width is None:
            if len(shape) == 1 and (rows is None or shape[0] == rows):
                return value
        elif len(shape) == 2 and shape[1] == width and (rows is None or shape[0] == rows):
            return value
    return checked_array(value, name, kind, (rows,) if width is None else (rows, width))


def _frame_values(
    item: Mapping[str, Any], fields: Mapping[str, Field], name: str, derived: Mapping[str, tuple[str, int]]
) -> tuple[list[ArrayLike], dict[str, int]]:
    if not isinstance(item, (dict, Mapping)):
        raise ValueError(f"Expected {name} to be a dict but got {type(item).__name__}")
    values, sizes = [], {}
    for key, field in fields.items():
        if key not in item:
            raise ValueError(f"Expected {name} to have the keys {list(fields)} but {key!r} is missing")
        value = _checked_value(item[key], f"{name}[{key!r}]", field.kind, sizes.get(field.dim), field.width)
        if field.dim not in sizes:
            sizes[field.dim] = int(value.shape[0])
            for target, (source, offset) in derived.items():
                if source == field.dim:
                    sizes[target] = sizes[field.dim] + offset
        values.append(value)
    return values, sizes


def _as_kind(array: np.ndarray, kind: str) -> np.ndarray:
    """int64 for ``"int"``; float32 / float64 kept as they are for ``"float"`` (other numbers become float64)."""
    if kind == "int":
        return array.astype(np.int64, copy=False)
    return array if array.dtype in (np.float32, np.float64) else array.astype(np.float64)


def _concatenate(parts: list[ArrayLike], kind: str) -> np.ndarray:
    if all(isinstance(part, torch.Tensor) for part in parts):
        return _as_kind(torch.cat(parts).detach().cpu().numpy(), kind)  # one device-to-host copy
    return _as_kind(
        np.concatenate(
            [
                checked_array(part, "", kind, tuple(part.shape)) if isinstance(part, torch.Tensor) else part
                for part in parts
            ]
        ),
        kind,
    )


def _fast_stack(
    items: Sequence[Mapping[str, Any]], fields: Mapping[str, Field], derived: Mapping[str, tuple[str, int]]
) -> tuple[dict[str, np.ndarray], dict[str, list[int]]] | None:
    """The common case without per-value work: every value a tensor of an accepted dtype, one ``torch.cat`` per
    key, shapes checked on the result and lengths compared as lists. ``None`` when anything is off, so that the
    per-record path can name the culprit."""
    arrays: dict[str, np.ndarray] = {}
    sizes: dict[str, list[int]] = {}
    for key, field in fields.items():
        try:
            column = [item[key] for item in items]
        except (KeyError, TypeError, IndexError):
            return None
        if set(map(type, column)) != {torch.Tensor}:
            return None
        try:
            joined = torch.cat(column)
        except RuntimeError:
            return None
        if (
            joined.dtype not in (_TORCH_INTEGERS if field.kind == "int" else _TORCH_REALS)
            or joined.dim() != (1 if field.width is None else 2)
            or (field.width is not None and joined.shape[1] != field.width)
        ):
            return None
        lengths = [value.shape[0] for value in column]  # torch.cat rejects 0-d tensors: every value has a row axis
        if field.dim not in sizes:
            sizes[field.dim] = lengths
            for target, (source, offset) in derived.items():
                if source == field.dim:
                    sizes[target] = [length + offset for length in lengths]
        elif sizes[field.dim] != lengths:
            return None
        arrays[key] = _as_kind(joined.detach().cpu().numpy(), field.kind)
    return arrays, sizes


def stack_frames(
    items: Sequence[Mapping[str, Any]],
    fields: Mapping[str, Field],
    name_of: Callable[[int], str],
    derived: Mapping[str, tuple[str, int]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Validate the keys, dtypes and shapes of every record and concatenate each key over the records.

    Args:
        items: per-frame records (dicts of tensors, arrays or nested lists).
        fields: key -> :class:`Field`, in checking order; the first key of a dimension fixes its length.
        name_of: record index -> its name in errors (``lambda i: f"preds[{i}]"``).
        derived: dimension -> (source dimension, offset): its length is the source's plus the offset
            (e.g. ``{"N": ("N+1", -1)}``).

    Returns:
        ``(arrays, sizes)``: per key the concatenation (int64 / float32 or float64, first dimension the sum over
        records),
        per dimension the int64 lengths ``[F]``.

    Raises:
        ValueError: "Expected ... but got ..." naming the record and the key.
    """
    derived = derived or {}
    fast = _fast_stack(items, fields, derived) if items else None
    if fast is not None and all(min(lengths) >= 0 for lengths in fast[1].values()):
        return fast[0], {dim: np.asarray(lengths, dtype=np.int64) for dim, lengths in fast[1].items()}
    columns: list[list[ArrayLike]] = [[] for _ in fields]
    sizes: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        values, frame_sizes = _frame_values(item, fields, name_of(index), derived)
        for column, value in zip(columns, values):
            column.append(value)
        for dim, size in frame_sizes.items():
            sizes.setdefault(dim, []).append(size)
    arrays = {}
    for (key, field), column in zip(fields.items(), columns):
        empty = np.zeros((0,) if field.width is None else (0, field.width), np.int64 if field.kind == "int" else float)
        arrays[key] = _concatenate(column, field.kind) if column else empty
    return arrays, {dim: np.asarray(lengths, dtype=np.int64) for dim, lengths in sizes.items()}


def first_invalid_row(boxes: np.ndarray) -> int:
    """:func:`arn_lightning.boxes.first_invalid_box` of xyxy ``boxes [M, 4]`` with a fast path: two whole-array
    reductions when every box obeys the rule (the common case), the row-wise search only otherwise."""
    with np.errstate(invalid="ignore"):
        if np.isfinite(boxes).all() and (boxes[:, 2:] >= boxes[:, :2]).all():
            return -1
    return first_invalid_box(boxes)


def frame_of_row(row: int, lengths: np.ndarray) -> int:
    """Index of the frame that owns concatenated row ``row``, given the per-frame ``lengths``.

    Example:
        >>> frame_of_row(2, np.array([2, 0, 3]))
        2
    """
    return int(np.searchsorted(np.cumsum(lengths), row, side="right"))


def check_range(array: np.ndarray, lengths: np.ndarray, low: Any, high: Any, describe: Callable[[int], str]) -> None:
    """Raise naming the first frame whose rows of ``array`` leave ``[low, high]`` (or hold NaN).

    ``low`` / ``high`` are scalars or arrays broadcastable against ``array`` (e.g. per-row bounds ``[rows, 1]``);
    ``describe(frame)`` names the offending frame's field in the message.

    Example:
        >>> check_range(np.array([0.5, 1.5]), np.array([1, 1]), 0.0, 1.0, lambda f: f"preds[{f}]['scores']")
        Traceback (most recent call last):
        ...
        ValueError: Expected preds[1]['scores'] in [0, 1] but got 1.5
    """
    if array.size == 0 or (np.isscalar(low) and np.isscalar(high) and array.min() >= low and array.max() <= high):
        return  # (NaN fails the comparisons)
    ok = (array >= low) & (array <= high)  # False for NaN
    if ok.all():
        return
    row = int(np.flatnonzero(~ok.reshape(len(array), -1).all(axis=1))[0])
    column = int(np.flatnonzero(~ok[row].reshape(-1))[0])
    bad, lowest, highest = (np.broadcast_to(x, array.shape)[row].reshape(-1)[column].item() for x in (array, low, high))
    raise ValueError(f"Expected {describe(frame_of_row(row, lengths))} in [{lowest:g}, {highest:g}] but got {bad!r}")
