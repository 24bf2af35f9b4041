r"""Scene-graph recall on Action Genome (R@K, mR@K): the pure functional core.

Definition (``docs/action_genome.md`` section 3). Per frame ``f`` with ``N`` annotated objects (box row
``j+1``; row 0 is the person), the ground-truth triplets are, for every object ``j``: ``(person, j, a)`` for each
attention label, ``(j, person, s)`` for each spatial label (**direction reversed**), ``(person, j, c)`` for each
contacting label; a label annotated twice is two triplets. Each predicted pair ``(sub, obj)`` yields candidates:

- ``with``: three per pair: argmax attention, argmax spatial on the reversed pair ``(obj, sub)``, argmax contacting;
- ``semi``: argmax attention, plus every spatial (reversed) and contacting predicate whose score is ``> 0.9``;
- ``no``: all 26 (pair, predicate) cells, of which the ``100`` best are kept.

A candidate's score is ``score[sub] * score[obj] * predicate score``; candidates are sorted by descending score,
equal scores keeping the generation order: attention candidates of pairs ``0..P-1``, then spatial, then
contacting, ascending predicate index within a pair. A candidate hits a GT triplet iff subject class, predicate and
object class are equal and the IoU is ``>= 0.5`` for the subject and for the object box; one candidate may hit
several GT triplets. Then

.. math::
    R_f@K = \frac{|\{\text{GT triplets of } f \text{ hit by the first } K \text{ candidates}\}|}
                 {|\{\text{GT triplets of } f\}|}, \qquad R@K = \operatorname{mean}_f R_f@K,

``mR@K`` (aggregated, the default) is the mean over the 26 predicates of ``sum_f hits_c / sum_f count_c`` and
``mR_per_frame@K`` the mean over the 26 predicates of the mean, over the frames containing ``c``, of
``hits_c / count_c``; a predicate that never occurs counts 0 in both. ``hmean@K = 2 R mR / (R + mR)``.
The IoU is torchvision's (``continuous``) or the two-stage papers' ``+1`` pixel one (``legacy``: both boxes get
``x2 + 1, y2 + 1``); it is never NaN: where the union of two degenerate (zero-area) boxes is empty it is 1 for equal
boxes and 0 otherwise (``docs/boxes.md``), so a prediction equal to the ground truth hits it. The task (SGDet /
SGCls / PredCls) only changes the input: in PredCls the predicted boxes and labels are the ground truth with score 1.
A frame without any GT triplet has no ``R_f`` and is skipped (the standard filtering never keeps one).

Implementation. Reversing the spatial direction on both sides means that a spatial candidate of pair ``(a, b)``
hits ``(j, person, s)`` exactly when ``(a, b)`` matches ``(person, j)``: every hit test reduces to one
pair-vs-GT-pair match (labels first, then the IoU of the label-matching entries only), computed once and shared
by the three constraints. A batch of frames is processed with whole-batch array operations (no Python loop over
frames or candidates): each constraint's candidates are laid out one row per frame in generation order, a partial
sort finds the top ``max(K)`` of every row, and only the ranks of the cells that can hit a GT triplet are looked
up. "no" first drops every cell scoring below the ``cut``-th best "with" candidate of its frame (the "with"
candidates are ``no`` cells, so no cell ranked within the cut is dropped; ties at the cut are kept), which leaves
about 7 % of the cells of a 100-pair frame to rank. Candidate scores are computed in float64.

Accumulation is exact and order-free, so that any split of the frames over processes sums to the single-process
state bit for bit: per-frame recalls are summed as fixed-point integers (``round(hits / count * 2**32)``, an error
below ``1.2e-10`` per frame) and all counts are integers.

Input contract, per frame (``ARCHITECTURE.md`` section 4; tensors on any device, numpy arrays or lists):

- prediction: see :mod:`arn_lightning.metrics.predictions` (``boxes [R, 4]`` xyxy, ``labels [R]``,
  ``scores [R]``, ``pairs [P, 2]``, ``attention [P, 3]``, ``spatial [P, 6]``, ``contacting [P, 17]``);
- target: ``boxes`` float ``[N+1, 4]`` xyxy original pixels (row 0 the person), ``labels`` int ``[N+1]``,
  ``attention`` int ``[N, 3]``, ``spatial`` int ``[N, 6]``, ``contacting`` int ``[N, 17]`` (label counts);
  an optional ``frame`` key must then equal the prediction's;
- every box of both obeys the box rule of :mod:`arn_lightning.boxes` (finite, ``x2 >= x1``, ``y2 >= y1``; zero
  width or height allowed), checked with ``validate_args``.

Example (one object, the prediction is the ground truth):
    >>> import torch
    >>> target = {"boxes": torch.tensor([[0., 0., 50., 100.], [10., 10., 30., 30.]]), "labels": torch.tensor([1, 11]),
    ...           "attention": torch.tensor([[1, 0, 0]]), "spatial": torch.tensor([[0, 0, 1, 0, 0, 0]]),
    ...           "contacting": torch.nn.functional.one_hot(torch.tensor([5]), 17)}
    >>> pred = {"boxes": target["boxes"], "labels": target["labels"], "scores": torch.ones(2),
    ...         "pairs": torch.tensor([[0, 1]]), "attention": torch.tensor([[0.9, 0.05, 0.05]]),
    ...         "spatial": torch.tensor([[0.1, 0.2, 0.6, 0.1, 0.0, 0.0]]), "contacting": torch.full((1, 17), 0.01)}
    >>> results = scene_graph_recall([pred], [target], RecallConfig(k_values=(1, 2, 3)))
    >>> [round(results[f"with/R@{k}"].item(), 4) for k in (1, 2, 3)]
    [0.3333, 0.6667, 0.6667]
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from arn_lightning import vocab
from arn_lightning.boxes import InvalidBoxError, paired_iou
from arn_lightning.metrics.batching import Field, check_range, first_invalid_row, frame_of_row, stack_frames
from arn_lightning.metrics.predictions import PredictionBatch, prediction_arrays, stack_predictions
from arn_lightning.vocab import CONSTRAINTS

K_VALUES: tuple[int, ...] = (10, 20, 50, 100)
#: "semi": spatial and contacting predicates scoring strictly above this become candidates.
SEMI_THRESHOLD = 0.9
#: "no": candidates kept after sorting.
NO_CONSTRAINT_TOP = 100
IOU_THRESHOLD = 0.5
IOU_CONVENTIONS: tuple[str, ...] = ("continuous", "legacy")
#: Per-frame recalls are accumulated as integers in units of 2**-FIXED_POINT_BITS (exact, order-free sums).
FIXED_POINT_BITS = 32
NUM_PREDICATES = vocab.NUM_PREDICATES

_FIXED_ONE = 1 << FIXED_POINT_BITS
_SPATIAL = vocab.PREDICATE_TYPES.index("spatial")
#: Type index (attention 0, spatial 1, contacting 2) of each global predicate.
_TYPE = np.array([vocab.PREDICATE_TYPES.index(vocab.predicate_type(c)) for c in range(NUM_PREDICATES)])


@dataclass(frozen=True)
class RecallConfig:
    """Options of the protocol; the defaults are those of the literature.

    Args:
        constraints: any of ``"with"``, ``"semi"``, ``"no"``, in the order results are reported.
        k_values: strictly increasing positive K of R@K.
        semi_threshold: "semi" takes spatial/contacting predicates scoring strictly above this.
        no_constraint_top: "no" keeps this many candidates after sorting.
        iou_threshold: a box matches when its IoU is at least this.
        iou_convention: ``"continuous"`` (torchvision) or ``"legacy"`` (+1 pixel).
    """

    constraints: tuple[str, ...] = CONSTRAINTS
    k_values: tuple[int, ...] = K_VALUES
    semi_threshold: float = SEMI_THRESHOLD
    no_constraint_top: int = NO_CONSTRAINT_TOP
    iou_threshold: float = IOU_THRESHOLD
    iou_convention: str = "continuous"

    def __post_init__(self) -> None:
        object.__setattr__(self, "constraints", tuple(self.constraints))
        object.__setattr__(self, "k_values", tuple(int(k) for k in self.k_values))
        if (
            not self.constraints
            or len(set(self.constraints)) != len(self.constraints)
            or not set(self.constraints) <= set(CONSTRAINTS)
        ):
            raise ValueError(f"Expected distinct constraints among {CONSTRAINTS} but got {self.constraints}")
        if not self.k_values or self.k_values[0] < 1 or list(self.k_values) != sorted(set(self.k_values)):
            raise ValueError(f"Expected strictly increasing positive k_values but got {self.k_values}")
        if not 0.0 <= self.semi_threshold < 1.0:
            raise ValueError(f"Expected semi_threshold in [0, 1) but got {self.semi_threshold}")
        if self.no_constraint_top < 1:
            raise ValueError(f"Expected no_constraint_top >= 1 but got {self.no_constraint_top}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"Expected iou_threshold in (0, 1] but got {self.iou_threshold}")
        if self.iou_convention not in IOU_CONVENTIONS:
            raise ValueError(f"Expected iou_convention in {IOU_CONVENTIONS} but got {self.iou_convention!r}")

    @functools.cached_property
    def k_array(self) -> np.ndarray:
        """``k_values`` as an int64 array ``[nK]``."""
        return np.asarray(self.k_values, dtype=np.int64)

    def cut(self, constraint: str) -> int:
        """How many ranked candidates of ``constraint`` can matter (ranks beyond never hit)."""
        top = self.k_values[-1]
        return min(top, self.no_constraint_top) if constraint == "no" else top


#: The metric ground truth's keys; ``N+1`` box rows (row 0 the person), ``N`` objects.
GROUND_TRUTH_FIELDS: dict[str, Field] = {
    "boxes": Field("float", "N+1", 4),
    "labels": Field("int", "N+1"),
    **{kind: Field("int", "N", vocab.TYPE_SIZES[kind]) for kind in vocab.PREDICATE_TYPES},
}


class GroundTruthBatch(NamedTuple):
    """Validated metric ground truth of ``F`` frames, concatenated over the frames (``N_f`` objects)."""

    boxes: np.ndarray  #: float [sum (N_f + 1), 4] xyxy; each frame's person row first, then its objects
    labels: np.ndarray  #: int64 [sum (N_f + 1)]
    counts: np.ndarray  #: int64 [sum N_f, 26] label counts per object, global predicate index
    num_objects: np.ndarray  #: int64 [F] N_f


class FrameHits(NamedTuple):
    """Per-frame matching result of ``F`` frames (``C`` constraints, ``nK`` K values)."""

    gt_counts: np.ndarray  #: int64 [F, 26] GT triplets per predicate
    hits: np.ndarray  #: int64 [F, C, nK, 26] GT triplets per predicate hit by the first K candidates


def stack_ground_truth(
    targets: Sequence[Mapping[str, Any]],
    name_of: Callable[[int], str] = "targets[{}]".format,
    check_values: bool = True,
) -> GroundTruthBatch:
    """Validate the metric ground truth of several frames (module docstring) and concatenate it key by key.

    Raises:
        ValueError: "Expected ... but got ..." naming the frame and the key.

    Example:
        >>> gt = stack_ground_truth([{"boxes": [[0, 0, 9, 9]], "labels": [1], "attention": [], "spatial": [],
        ...                           "contacting": []}])
        >>> gt.counts.shape, gt.num_objects.tolist()
        ((0, 26), [0])
    """
    for index, target in enumerate(targets):
        boxes = target.get("boxes") if isinstance(target, Mapping) else None
        if boxes is not None and len(boxes) == 0:
            raise ValueError(f"Expected {name_of(index)}['boxes'] to have the person row 0 but got no row")
    arrays, sizes = stack_frames(targets, GROUND_TRUTH_FIELDS, name_of, derived={"N": ("N+1", -1)})
    counts = np.concatenate([arrays[kind] for kind in vocab.PREDICATE_TYPES], axis=1)  # [sum N_f, 26]
    batch = GroundTruthBatch(arrays["boxes"], arrays["labels"], counts, sizes.get("N", np.zeros(0, np.int64)))
    row = first_invalid_row(batch.boxes) if check_values else -1
    if row >= 0:  # the box rule of arn_lightning.boxes
        frame = frame_of_row(row, batch.num_objects + 1)
        local = row - int((batch.num_objects[:frame] + 1).sum())
        raise InvalidBoxError(f"{name_of(frame)}['boxes'][{local}]", batch.boxes[row].tolist())
    if check_values:
        check_range(
            batch.labels,
            batch.num_objects + 1,
            vocab.PERSON_LABEL,
            vocab.NUM_OBJECT_CLASSES,
            lambda frame: f"{name_of(frame)}['labels']",
        )
    if check_values and counts.size and counts.min() < 0:
        frame = frame_of_row(int(np.flatnonzero((counts < 0).any(axis=1))[0]), batch.num_objects)
        raise ValueError(f"Expected non-negative label counts in {name_of(frame)} but got {counts.min()}")
    return batch


def paired_box_iou(boxes1: np.ndarray, boxes2: np.ndarray, convention: str = "continuous") -> np.ndarray:
    """IoU of ``boxes1[i]`` with ``boxes2[i]`` (xyxy, ``[M, 4]`` each) -> float64 ``[M]`` in ``[0, 1]``, never NaN.

    ``continuous`` is torchvision's ``box_iou`` (the same numbers, in float64); ``legacy`` is the +1-pixel IoU of
    the two-stage papers (width ``x2 - x1 + 1``), i.e. the continuous IoU of the boxes with ``x2 + 1, y2 + 1``.
    Degenerate boxes (zero width or height, valid under the box rule of :mod:`arn_lightning.boxes`): where the
    union has zero area the IoU is 1 for two equal boxes and 0 otherwise, so a box always matches itself.

    Example:
        >>> a, b = np.array([[0., 0., 9., 9.]]), np.array([[0., 0., 9., 4.]])
        >>> paired_box_iou(a, b).round(4).tolist(), paired_box_iou(a, b, "legacy").tolist()
        ([0.4444], [0.5])
        >>> line = np.array([[5., 5., 5., 30.]])  # width 0: IoU 1 with itself under both conventions
        >>> paired_box_iou(line, line).tolist(), paired_box_iou(line, line, "legacy").tolist()
        ([1.0], [1.0])
    """
    if len(boxes1) == 0:
        return np.zeros(0)
    first = np.asarray(boxes1, dtype=np.float64)
    second = np.asarray(boxes2, dtype=np.float64)
    if convention == "legacy":
        shift = np.array([0.0, 0.0, 1.0, 1.0])
        first, second = first + shift, second + shift
    return paired_iou(first, second)


def _ragged(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For concatenated runs of the given lengths: the run of each element and its position within the run."""
    owner = np.repeat(np.arange(lengths.size), lengths)
    starts = np.cumsum(lengths) - lengths
    return owner, np.arange(owner.size) - starts[owner]


class _Index(NamedTuple):
    """Index arrays of a batch: the global rows of pairs and of GT objects."""

    pair_frame: np.ndarray  #: [sum P] frame of each pair
    pair_local: np.ndarray  #: [sum P] index of each pair within its frame
    subject_row: np.ndarray  #: [sum P] global predicted row of the subject
    object_row: np.ndarray  #: [sum P] global predicted row of the object
    person_row: np.ndarray  #: [F] global GT row of each frame's person
    object_gt_row: np.ndarray  #: [sum N] global GT row of each object
    object_start: np.ndarray  #: [F] first (global) object of each frame
    object_frame: np.ndarray  #: [sum N] frame of each object


def _build_index(pred: PredictionBatch, gt: GroundTruthBatch) -> _Index:
    pair_frame, pair_local = _ragged(pred.num_pairs)
    row_start = np.cumsum(pred.num_rows) - pred.num_rows  # [F]
    gt_rows = gt.num_objects + 1
    person_row = np.cumsum(gt_rows) - gt_rows  # [F]
    object_frame, object_local = _ragged(gt.num_objects)
    return _Index(
        pair_frame,
        pair_local,
        pred.pairs[:, 0] + row_start[pair_frame],
        pred.pairs[:, 1] + row_start[pair_frame],
        person_row,
        person_row[object_frame] + 1 + object_local,
        np.cumsum(gt.num_objects) - gt.num_objects,
        object_frame,
    )


def _label_entries(pred: PredictionBatch, gt: GroundTruthBatch, index: _Index) -> tuple[np.ndarray, np.ndarray]:
    """(pair, GT object) entries of the same frame whose subject label is the person's and object label the
    object's: ``[E]`` global pair and global object indices."""
    frame_has_label = np.zeros((len(gt.num_objects), vocab.NUM_OBJECT_CLASSES + 1), dtype=bool)  # [F, 37]
    frame_has_label[index.object_frame, gt.labels[index.object_gt_row].clip(0, vocab.NUM_OBJECT_CLASSES)] = True
    object_label = pred.labels[index.object_row].clip(0, vocab.NUM_OBJECT_CLASSES)
    pairs = np.flatnonzero(
        (pred.labels[index.subject_row] == gt.labels[index.person_row[index.pair_frame]])
        & frame_has_label[index.pair_frame, object_label]
    )  # [sum P] worth pairing
    owner, within = _ragged(gt.num_objects[index.pair_frame[pairs]])  # every object of the pair's frame
    entry_pair = pairs[owner]
    entry_object = index.object_start[index.pair_frame[entry_pair]] + within
    same = pred.labels[index.object_row[entry_pair]] == gt.labels[index.object_gt_row[entry_object]]
    return entry_pair[same], entry_object[same]


def _box_entries(
    pred: PredictionBatch,
    gt: GroundTruthBatch,
    index: _Index,
    entry_pair: np.ndarray,
    entry_object: np.ndarray,
    config: RecallConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the entries whose subject and object boxes both reach the IoU threshold (one IoU call)."""
    predicted = np.concatenate((pred.boxes[index.subject_row[entry_pair]], pred.boxes[index.object_row[entry_pair]]))
    truth = np.concatenate(
        (gt.boxes[index.person_row[index.pair_frame[entry_pair]]], gt.boxes[index.object_gt_row[entry_object]])
    )
    iou_ok = (paired_box_iou(predicted, truth, config.iou_convention) >= config.iou_threshold).reshape(2, -1)
    keep = iou_ok[0] & iou_ok[1]
    return entry_pair[keep], entry_object[keep]


def _pair_scores(pred: PredictionBatch, subject_row: np.ndarray, object_row: np.ndarray) -> np.ndarray:
    """float64 ``[sum P]``: ``score[sub] * score[obj]`` of every pair."""
    return pred.scores[subject_row].astype(np.float64) * pred.scores[object_row]


def _scores_of(pred: PredictionBatch, pair_scores: np.ndarray, kind: str, cells: np.ndarray) -> np.ndarray:
    """float64: candidate score ``score[sub] * score[obj] * predicate score`` of global ``cells`` of one type."""
    pair, predicate = np.divmod(cells, NUM_PREDICATES)
    return getattr(pred, kind)[pair, predicate - vocab.TYPE_OFFSETS[kind]] * pair_scores[pair]


def _candidate_cells(constraint: str, pred: PredictionBatch, config: RecallConfig) -> list[np.ndarray]:
    """Per predicate type, the ascending global cells ``pair * 26 + predicate`` that are candidates under
    ``constraint`` (argmax: the first maximum on ties). Types in order, pairs ascending within a type: together
    the candidate-generation order of every frame."""
    first_cell = np.arange(len(pred.pairs), dtype=np.int64) * NUM_PREDICATES  # [sum P]
    cells = []
    for kind in vocab.PREDICATE_TYPES:
        offset, size = vocab.TYPE_OFFSETS[kind], vocab.TYPE_SIZES[kind]
        if constraint == "no":
            cells.append((first_cell[:, None] + np.arange(offset, offset + size)).reshape(-1))
        elif constraint == "with" or kind == "attention":
            cells.append(first_cell + offset + getattr(pred, kind).argmax(axis=1))
        else:  # "semi": spatial and contacting predicates above the threshold
            pair, local = np.divmod(np.flatnonzero(getattr(pred, kind) > config.semi_threshold), size)
            cells.append(first_cell[pair] + offset + local)
    return cells


class _Candidates(NamedTuple):
    """The candidates of one constraint, one row per frame in generation order, padded to ``W`` columns."""

    scores: np.ndarray  #: float64 [F, W]; padding holds distinct values below ``floor``
    cells: np.ndarray  #: int64 [F, W] cell of each column, global once ``row_offset`` is added
    row_offset: np.ndarray  #: int64 [F, 1]
    floor: float  #: every real candidate scores above it


@functools.lru_cache(maxsize=64)
def _generation_cells(num_pairs: int) -> np.ndarray:
    """int64 ``[P * 26]``: the cell ``pair * 26 + predicate`` at each generation position of a frame with ``P``
    pairs (type-major: attention cells of pairs ``0..P-1``, then spatial, then contacting). Cached read-only."""
    cells = np.concatenate(
        [
            (
                np.arange(num_pairs)[:, None] * NUM_PREDICATES
                + vocab.TYPE_OFFSETS[kind]
                + np.arange(vocab.TYPE_SIZES[kind])
            ).reshape(-1)
            for kind in vocab.PREDICATE_TYPES
        ]
    )
    cells.flags.writeable = False
    return cells


def _full_grid(pred: PredictionBatch, pair_scores: np.ndarray, index: _Index) -> _Candidates:
    """Every cell ("no" constraint): the frames' score matrices written type block after type block, each frame
    padded to the largest number of pairs."""
    num_frames, max_pairs = len(pred.num_pairs), int(pred.num_pairs.max())
    width = max_pairs * NUM_PREDICATES
    uniform = len(pair_scores) == num_frames * max_pairs  # every frame has max P pairs: no padding
    products = None if uniform else [getattr(pred, k) * pair_scores[:, None] for k in vocab.PREDICATE_TYPES]
    floor = None if uniform else min([0.0] + [float(p.min()) for p in products if p.size]) - 1.0
    # padding (ragged frames only) gets distinct values below the floor: the partial sort is slow on equal values
    grid = (
        np.empty((num_frames, width))
        if uniform
        else floor - np.arange(num_frames * width, dtype=np.float64).reshape(num_frames, width)
    )
    start = 0
    for position, kind in enumerate(vocab.PREDICATE_TYPES):
        size = vocab.TYPE_SIZES[kind]
        block = grid[:, start : start + max_pairs * size].reshape(num_frames, max_pairs, size)  # a view
        if uniform:
            np.multiply(
                getattr(pred, kind).reshape(block.shape), pair_scores.reshape(num_frames, max_pairs, 1), out=block
            )
        else:
            block[index.pair_frame, index.pair_local] = products[position]
        start += max_pairs * size
    floor = min(0.0, float(grid.min())) - 1.0 if uniform else floor
    first_cell = (np.cumsum(pred.num_pairs) - pred.num_pairs) * NUM_PREDICATES  # [F] cell of each frame's pair 0
    return _Candidates(
        grid, np.broadcast_to(_generation_cells(max_pairs), (num_frames, width)), first_cell[:, None], floor
    )


def _candidate_grid(
    pred: PredictionBatch,
    pair_scores: np.ndarray,
    cells: list[np.ndarray],
    index: _Index,
    num_frames: int,
    one_per_pair: bool = False,
) -> _Candidates:
    """Gather every frame's candidate cells (per type, from :func:`_candidate_cells`) into one padded row per
    frame, in generation order. ``one_per_pair``: every type has exactly one cell per pair, pairs ascending
    ("with"), so that the columns are known without counting."""
    scores = [_scores_of(pred, pair_scores, kind, type_cells) for kind, type_cells in zip(vocab.PREDICATE_TYPES, cells)]
    floor = min([0.0] + [float(type_scores.min()) for type_scores in scores if type_scores.size]) - 1.0
    if one_per_pair:
        width = max(3 * int(pred.num_pairs.max(initial=0)), 1)
        first = index.pair_frame * width + index.pair_local  # [sum P] slot of each pair's first-type cell
        slots = [first + position * pred.num_pairs[index.pair_frame] for position in range(len(cells))]
    else:
        frames = [index.pair_frame[type_cells // NUM_PREDICATES] for type_cells in cells]
        counts = np.stack([np.bincount(frame, minlength=num_frames) for frame in frames])  # [3, F]
        starts = np.cumsum(counts, axis=0) - counts  # column where each type's block starts, per frame
        width = max(int(counts.sum(axis=0).max(initial=0)), 1)
        slots = [
            frame * width + type_starts[frame] + _ragged(type_counts)[1]
            for frame, type_starts, type_counts in zip(frames, starts, counts)
        ]
    # distinct padding values below the floor: the partial sort is slow on many equal values
    grid_scores = floor - np.arange(num_frames * width, dtype=np.float64)
    grid_cells = np.zeros(num_frames * width, dtype=np.int64)
    for type_cells, type_scores, slot in zip(cells, scores, slots):
        grid_scores[slot], grid_cells[slot] = type_scores, type_cells
    shape = (num_frames, width)
    return _Candidates(
        grid_scores.reshape(shape), grid_cells.reshape(shape), np.zeros((num_frames, 1), np.int64), floor
    )


def _top_ranks(candidates: _Candidates, cut: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``cut`` candidates of every frame (descending score, ties in generation order, i.e. by column),
    as ``(global cells [M], ranks [M])``."""
    dense, floor = candidates.scores, candidates.floor
    num_frames, width = dense.shape
    cut = min(cut, width)
    if width > cut:  # partial sort: `cut` best columns (ties unordered), after them the best column left out
        part = np.argpartition(dense, width - cut - 1, axis=1)
        top, left_out = np.sort(part[:, width - cut :], axis=1), dense[np.arange(num_frames), part[:, width - cut - 1]]
    else:
        top, left_out = np.tile(np.arange(width), (num_frames, 1)), np.full(num_frames, floor)
    top_scores = np.take_along_axis(dense, top, axis=1)  # [F, cut], columns ascending
    order = np.argsort(-top_scores, axis=1, kind="stable")  # descending score, ties by column
    top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
    for row in np.flatnonzero((left_out == top_scores[:, -1]) & (left_out > floor)):
        top[row] = np.argsort(-dense[row], kind="stable")[:cut]  # rare: a tie across the cut, full sort
        top_scores[row] = dense[row, top[row]]
    ranked = top_scores > floor  # [F, cut]
    cells = np.take_along_axis(candidates.cells, top, axis=1) + candidates.row_offset
    return cells[ranked], np.nonzero(ranked)[1]


def _prune(candidates: _Candidates, bound: np.ndarray) -> _Candidates:
    """The candidates scoring at least ``bound [F]`` (a lower bound of each frame's cut-th best score), packed to
    the left of every row in generation order: the same first ranks as ``candidates`` (ties across the cut
    included, since every candidate equal to the cut score is kept), on a much narrower grid."""
    num_frames, width = candidates.scores.shape
    floor = candidates.floor
    # x >= bound  <=>  x > nextafter(bound, -inf); rows without a usable bound keep every real candidate
    strict = np.where(bound > floor, np.nextafter(bound, -np.inf), floor)
    flat = np.flatnonzero(candidates.scores > strict[:, None])  # row-major: generation order within a row
    rows = flat // width
    kept = np.bincount(rows, minlength=num_frames)
    new_width = max(int(kept.max(initial=0)), 1)
    slot = rows * new_width + (np.arange(flat.size) - (np.cumsum(kept) - kept)[rows])
    scores = floor - np.arange(num_frames * new_width, dtype=np.float64)  # distinct padding below the floor
    cells = np.zeros(num_frames * new_width, dtype=np.int64)
    scores[slot] = candidates.scores.reshape(-1)[flat]
    cells[slot] = candidates.cells[rows, flat - rows * width]
    shape = (num_frames, new_width)
    return _Candidates(scores.reshape(shape), cells.reshape(shape), candidates.row_offset, floor)


def _kth_best(candidates: _Candidates, k: int) -> np.ndarray | None:
    """float64 ``[F]``: every row's ``k``-th best score (``-inf`` where a row has fewer than ``k`` real
    candidates); ``None`` when the grid is narrower than ``k``."""
    width = candidates.scores.shape[1]
    if width < k:
        return None
    kth = np.partition(candidates.scores, width - k, axis=1)[:, width - k]
    return np.where(kth > candidates.floor, kth, -np.inf)


def _hit_cell_ranks(pred: PredictionBatch, index: _Index, hit_cells: np.ndarray, config: RecallConfig) -> np.ndarray:
    """int64 ``[C, V]``: the rank of each of the ``hit_cells`` (global cells ``pair * 26 + predicate``) under each
    constraint, ``max(K)`` where it is no candidate or ranked beyond the cut.

    "no" ranks only the cells scoring at least the cut-th best "with" candidate of their frame: the "with"
    candidates are distinct "no" cells, so at least ``cut`` "no" cells score that much, and every cell ranked
    within the cut does too (about 7 % of the cells of 100-pair frames)."""
    pair_scores = _pair_scores(pred, index.subject_row, index.object_row)
    num_frames, sentinel = len(pred.num_pairs), config.k_values[-1]
    # cell -> rank, reused; ranks are below the sentinel max(K): the narrowest integer type holding it
    table = np.full(len(pair_scores) * NUM_PREDICATES, sentinel, dtype=np.min_scalar_type(sentinel))
    ranks = np.empty((len(config.constraints), hit_cells.size), dtype=np.int64)
    grids: dict[str, _Candidates] = {}

    def grid_of(constraint: str) -> _Candidates:
        if constraint not in grids:
            cells = _candidate_cells(constraint, pred, config)
            grids[constraint] = _candidate_grid(pred, pair_scores, cells, index, num_frames, constraint == "with")
        return grids[constraint]

    for row, constraint in zip(ranks, config.constraints):
        if constraint == "no":
            candidates = _full_grid(pred, pair_scores, index)
            bound = _kth_best(grid_of("with"), config.cut("no"))
            if bound is not None:
                candidates = _prune(candidates, bound)
        else:
            candidates = grid_of(constraint)
        cells, cell_ranks = _top_ranks(candidates, config.cut(constraint))
        table[cells] = cell_ranks
        row[:] = table[hit_cells]
        table[cells] = sentinel
    return ranks


def _group_entries(
    counts: np.ndarray, entry_pair: np.ndarray, entry_object: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pair every GT triplet group (object, predicate with count > 0, numbered in ``np.nonzero(counts)`` order)
    with the matched entries of its object: ``[V]`` pair and group indices, groups ascending."""
    order = np.argsort(entry_object, kind="stable")
    entry_pair, entry_object = entry_pair[order], entry_object[order]
    per_object = np.bincount(entry_object, minlength=len(counts))  # [sum N] matched entries of each object
    first_entry = np.cumsum(per_object) - per_object
    group_object = np.nonzero(counts)[0]  # [G]
    group, within = _ragged(per_object[group_object])
    return entry_pair[first_entry[group_object[group]] + within], group


def _first_ranks(
    pred: PredictionBatch,
    gt: GroundTruthBatch,
    index: _Index,
    entry_pair: np.ndarray,
    entry_object: np.ndarray,
    config: RecallConfig,
) -> np.ndarray:
    """int64 ``[C, G]``: for each GT triplet group, the best rank among the candidates hitting it (the cell of
    a matched pair and the group's predicate), ``max(K)`` if none."""
    group_predicate = np.nonzero(gt.counts)[1]  # [G]
    first = np.full((len(config.constraints), group_predicate.size), config.k_values[-1], dtype=np.int64)
    pair, group = _group_entries(gt.counts, entry_pair, entry_object)  # [V], groups ascending
    if group.size == 0:  # nothing can hit: no candidate needs ranking
        return first
    hit_ranks = _hit_cell_ranks(pred, index, pair * NUM_PREDICATES + group_predicate[group], config)  # [C, V]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    first[:, group[starts]] = np.minimum.reduceat(hit_ranks, starts, axis=1)
    return first


def _count_hits(first: np.ndarray, gt: GroundTruthBatch, index: _Index, config: RecallConfig) -> FrameHits:
    """Weight the per-group first-hit ranks ``[C, G]`` by the group counts into per-frame, per-predicate hits."""
    group_object, group_predicate = np.nonzero(gt.counts)
    weights = gt.counts[group_object, group_predicate]  # [G]
    num_frames, grid = len(gt.num_objects), (len(config.constraints), len(config.k_values))
    cell = index.object_frame[group_object] * NUM_PREDICATES + group_predicate  # [G] (frame, predicate)
    gt_counts = np.bincount(cell, weights, minlength=num_frames * NUM_PREDICATES)
    hit = first[:, None, :] < config.k_array[None, :, None]  # [C, nK, G]
    blocks = np.arange(grid[0] * grid[1]).reshape(*grid, 1) * (num_frames * NUM_PREDICATES)
    hits = np.bincount(
        (blocks + cell).ravel(), (hit * weights).ravel(), minlength=grid[0] * grid[1] * num_frames * NUM_PREDICATES
    )
    hits = hits.reshape(*grid, num_frames, NUM_PREDICATES).transpose(2, 0, 1, 3)  # [F, C, nK, 26]
    return FrameHits(
        gt_counts.reshape(num_frames, NUM_PREDICATES).astype(np.int64), np.ascontiguousarray(hits).astype(np.int64)
    )


def _stack_inputs(
    preds: Sequence[Mapping[str, Any]] | PredictionBatch, targets: Sequence[Mapping[str, Any]], validate_args: bool
) -> tuple[PredictionBatch, GroundTruthBatch]:
    if isinstance(preds, PredictionBatch):  # already validated (a prediction file's batch): no frame keys to compare
        if len(preds.num_rows) != len(targets):
            raise ValueError(f"Expected as many targets as preds ({len(preds.num_rows)}) but got {len(targets)}")
        return preds, stack_ground_truth(targets, "targets[{}]".format, check_values=validate_args)
    if len(preds) != len(targets):
        raise ValueError(f"Expected as many targets as preds ({len(preds)}) but got {len(targets)}")
    pred = stack_predictions(preds, "preds[{}]".format, check_values=validate_args)
    gt = stack_ground_truth(targets, "targets[{}]".format, check_values=validate_args)
    for index, (p, t) in enumerate(zip(preds, targets)):
        if "frame" in p and "frame" in t and p["frame"] != t["frame"]:
            raise ValueError(
                f"Expected preds[{index}]['frame'] to be the target's {t['frame']!r} but got {p['frame']!r}"
            )
    return pred, gt


def frame_hits(
    preds: Sequence[Mapping[str, Any]] | PredictionBatch,
    targets: Sequence[Mapping[str, Any]],
    config: RecallConfig | None = None,
    validate_args: bool = True,
) -> FrameHits:
    """Match the predictions of ``F`` frames against their ground truth (the per-frame part of the protocol).

    The whole batch is processed with array operations: labels are compared first, the IoU is computed (in one
    call) only for label-matching (pair, GT object) entries, the cells that can hit a GT triplet are collected
    once for the three constraints, and each constraint ranks its candidates per frame with a partial sort to the
    top ``max(K)``.

    Args:
        preds: per-frame predictions (module docstring), or a validated
            :class:`~arn_lightning.metrics.predictions.PredictionBatch` of them (used as it is).
        targets: per-frame metric ground truth, same length and order.
        config: protocol options, default :class:`RecallConfig`.
        validate_args: also check values (finite, ranges, NaN, pair rows), not only keys, dtypes and shapes.

    Returns:
        :class:`FrameHits` with ``gt_counts [F, 26]`` and ``hits [F, C, nK, 26]``.

    Raises:
        ValueError: "Expected ... but got ..." naming the frame index and key.
    """
    config = config or RecallConfig()
    pred, gt = _stack_inputs(preds, targets, validate_args)
    index = _build_index(pred, gt)
    entry_pair, entry_object = _box_entries(pred, gt, index, *_label_entries(pred, gt, index), config)
    return _count_hits(_first_ranks(pred, gt, index, entry_pair, entry_object, config), gt, index, config)


def ranked_triplets(
    pred: Mapping[str, Any], constraint: str = "with", config: RecallConfig | None = None
) -> dict[str, Tensor]:
    """The candidate triplets of one frame in ranking order, as R@K cuts them (``no``: the kept top ones).

    Returns:
        ``{"subject": LongTensor [M], "object": LongTensor [M]`` (box rows; spatial candidates are reversed pairs),
        ``"predicate": LongTensor [M]`` (global index), ``"score": DoubleTensor [M]``, ``"pair": LongTensor [M]}``.

    Example:
        >>> pred = {"boxes": torch.zeros(2, 4), "labels": torch.tensor([1, 8]), "scores": torch.ones(2),
        ...         "pairs": torch.tensor([[0, 1]]), "attention": torch.tensor([[0.1, 0.8, 0.1]]),
        ...         "spatial": torch.tensor([[0.0, 0.9, 0.1, 0.0, 0.0, 0.0]]), "contacting": torch.zeros(1, 17)}
        >>> triplets = ranked_triplets(pred, "with")
        >>> triplets["subject"].tolist(), triplets["object"].tolist(), triplets["predicate"].tolist()
        ([1, 0, 0], [0, 1, 1], [4, 1, 9])
    """
    config = config or RecallConfig()
    if constraint not in CONSTRAINTS:
        raise ValueError(f"Expected a constraint in {CONSTRAINTS} but got {constraint!r}")
    arrays = prediction_arrays(pred)
    pair_scores = _pair_scores(arrays, arrays.pairs[:, 0], arrays.pairs[:, 1])
    per_type = _candidate_cells(constraint, arrays, config)
    cells = np.concatenate(per_type)  # generation order
    scores = np.concatenate(
        [_scores_of(arrays, pair_scores, kind, type_cells) for kind, type_cells in zip(vocab.PREDICATE_TYPES, per_type)]
    )
    order = np.argsort(-scores, kind="stable")[: config.no_constraint_top if constraint == "no" else cells.size]
    cells, scores = cells[order], scores[order]
    pair, predicate = np.divmod(cells, NUM_PREDICATES)
    reverse = _TYPE[predicate] == _SPATIAL
    subject = np.where(reverse, arrays.pairs[pair, 1], arrays.pairs[pair, 0])
    obj = np.where(reverse, arrays.pairs[pair, 0], arrays.pairs[pair, 1])
    return {
        "subject": torch.from_numpy(subject),
        "object": torch.from_numpy(obj),
        "predicate": torch.from_numpy(predicate),
        "score": torch.from_numpy(scores),
        "pair": torch.from_numpy(pair),
    }


# ----------------------------------------------------------------------------------------------- accumulation
def state_shapes(config: RecallConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of the accumulated int64 states.

    - ``frames []``: frames with at least one GT triplet;
    - ``recall_sum [C, nK]``: sum over frames of ``R_f@K`` in fixed point (units of ``2**-32``);
    - ``hits [C, nK, 26]`` / ``gt_counts [26]``: GT triplets hit / present, per predicate, summed over frames;
    - ``per_frame_recall_sum [C, nK, 26]``: sum over frames containing ``c`` of ``hits_c / count_c`` (fixed point);
    - ``per_frame_frames [26]``: frames containing ``c``.
    """
    grid = (len(config.constraints), len(config.k_values))
    return {
        "frames": (),
        "recall_sum": grid,
        "hits": (*grid, NUM_PREDICATES),
        "gt_counts": (NUM_PREDICATES,),
        "per_frame_recall_sum": (*grid, NUM_PREDICATES),
        "per_frame_frames": (NUM_PREDICATES,),
    }


def _fixed_point_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``round(numerator / denominator * 2**32)`` (half up) in exact integer arithmetic; 0 where the
    denominator is 0."""
    safe = np.maximum(denominator, 1)
    return np.where(denominator > 0, (numerator * (2 * _FIXED_ONE) + safe) // (2 * safe), 0)


def state_increment(result: FrameHits) -> dict[str, np.ndarray]:
    """The state (:func:`state_shapes`) of the frames in ``result``, to be added to a running state."""
    counts, hits = result.gt_counts, result.hits  # [F, 26], [F, C, nK, 26]
    totals = counts.sum(axis=1)  # [F]
    recall = _fixed_point_ratio(hits.sum(axis=3), totals[:, None, None])  # [F, C, nK]
    per_frame = _fixed_point_ratio(hits, counts[:, None, None, :])  # [F, C, nK, 26]
    return {
        "frames": np.asarray((totals > 0).sum(), dtype=np.int64),
        "recall_sum": recall.sum(axis=0),
        "hits": hits.sum(axis=0),
        "gt_counts": counts.sum(axis=0),
        "per_frame_recall_sum": per_frame.sum(axis=0),
        "per_frame_frames": (counts > 0).sum(axis=0),
    }


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    return torch.where(denominator > 0, numerator / torch.where(denominator > 0, denominator, 1), 0.0)


def result_key(constraint: str, name: str, k: int, predicate: str | None = None) -> str:
    """Key of a result: ``"with/R@20"``, ``"no/mR_per_frame@50"`` or ``"per_predicate/no/R@50/holding"``.

    ``name`` is one of ``R``, ``mR`` (aggregated), ``mR_per_frame``, ``hmean`` (of R and mR).
    """
    if predicate is not None:
        return f"per_predicate/{constraint}/{name}@{k}/{predicate}"
    return f"{constraint}/{name}@{k}"


def recall_from_state(
    state: Mapping[str, Tensor], config: RecallConfig, per_predicate: bool = True
) -> dict[str, Tensor]:
    """Turn an accumulated state into the results: float64 scalars keyed by :func:`result_key`.

    For each constraint (in ``config`` order): ``R@K``, ``mR@K``, ``mR_per_frame@K`` and ``hmean@K`` for every K,
    then, with ``per_predicate``, ``per_predicate/<constraint>/R@K/<predicate>`` (0 for an unseen predicate).
    """
    recall = state["recall_sum"].double() / _FIXED_ONE / state["frames"].double().clamp(min=1)  # [C, nK]
    predicate_recall = _safe_divide(state["hits"].double(), state["gt_counts"].double())  # [C, nK, 26]
    mean_recall = predicate_recall.mean(dim=-1)
    per_frame = _safe_divide(
        state["per_frame_recall_sum"].double() / _FIXED_ONE, state["per_frame_frames"].double()
    ).mean(dim=-1)
    values = {
        "R": recall,
        "mR": mean_recall,
        "mR_per_frame": per_frame,
        "hmean": _safe_divide(2 * recall * mean_recall, recall + mean_recall),
    }
    results: dict[str, Tensor] = {}
    for ci, constraint in enumerate(config.constraints):
        for name, value in values.items():
            results.update({result_key(constraint, name, k): value[ci, ki] for ki, k in enumerate(config.k_values)})
    if per_predicate:
        for ci, constraint in enumerate(config.constraints):
            for ki, k in enumerate(config.k_values):
                results.update(
                    {
                        result_key(constraint, "R", k, name): predicate_recall[ci, ki, c]
                        for c, name in enumerate(vocab.PREDICATES)
                    }
                )
    return results


def scene_graph_recall(
    preds: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    config: RecallConfig | None = None,
    per_predicate: bool = True,
    validate_args: bool = True,
) -> dict[str, Tensor]:
    """R@K, mR@K (aggregated and per-frame), hmean@K and per-predicate recall of a set of frames.

    The one-shot form of :class:`arn_lightning.metrics.recall.SceneGraphRecall`; see the module docstring for the
    definition and the input contract, :func:`recall_from_state` for the keys.
    """
    config = config or RecallConfig()
    increment = state_increment(frame_hits(preds, targets, config, validate_args))
    return recall_from_state(
        {name: torch.from_numpy(np.asarray(value)) for name, value in increment.items()}, config, per_predicate
    )
