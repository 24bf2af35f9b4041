"""torchmetrics wrapper of the scene-graph recall protocol (:mod:`arn_lightning.metrics.functional`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from arn_lightning.metrics.functional import (
    CONSTRAINTS,
    IOU_THRESHOLD,
    K_VALUES,
    NO_CONSTRAINT_TOP,
    SEMI_THRESHOLD,
    RecallConfig,
    frame_hits,
    recall_from_state,
    state_increment,
    state_shapes,
)
from arn_lightning.metrics.predictions import PredictionBatch


class SceneGraphRecall(Metric):
    r"""Recall@K and mean Recall@K of dynamic scene graphs on Action Genome, for with / semi / no constraint.

    Definition (``docs/action_genome.md`` section 3, details in :mod:`arn_lightning.metrics.functional`):
    per frame, ``R_f@K`` is the fraction of GT triplets (``(person, j, attention)``, ``(j, person, spatial)``,
    ``(person, j, contacting)``) hit by the first K ranked candidates, a hit needing equal classes and predicate
    and IoU ``>= iou_threshold`` on both boxes; ``R@K`` is the mean of ``R_f@K`` over frames; ``mR@K`` the mean over
    the 26 predicates of the recall aggregated over all frames; ``mR_per_frame@K`` the mean over the predicates of
    their mean per-frame recall; ``hmean@K`` the harmonic mean of ``R@K`` and ``mR@K``. The same class serves SGDet,
    SGCls and PredCls: only the input differs (PredCls boxes and labels are the ground truth with score 1).

    As input to ``forward`` and ``update`` the metric accepts:

    - ``preds`` (list of dicts, one per frame): ``boxes`` float ``[R, 4]`` xyxy original pixels, ``labels`` int
      ``[R]`` (AG object index 1..36), ``scores`` float ``[R]``, ``pairs`` int ``[P, 2]`` (subject row, object row),
      ``attention`` float ``[P, 3]``, ``spatial`` float ``[P, 6]``, ``contacting`` float ``[P, 17]`` (scores in
      ``[0, 1]``), optional ``frame`` str. Tensors (any device), numpy arrays or JSON-style lists.
    - ``target`` (list of dicts, same length and order): ``boxes`` float ``[N+1, 4]`` xyxy (row 0 the person),
      ``labels`` int ``[N+1]``, ``attention`` int ``[N, 3]``, ``spatial`` int ``[N, 6]``, ``contacting`` int
      ``[N, 17]`` (label counts), optional ``frame`` str that must equal the prediction's.

    As output of ``forward`` and ``compute`` the metric returns a flat dict of float64 scalar tensors:
    ``"<constraint>/R@K"``, ``"<constraint>/mR@K"``, ``"<constraint>/mR_per_frame@K"``, ``"<constraint>/hmean@K"``
    for every constraint and K, and with ``per_predicate`` also ``"per_predicate/<constraint>/R@K/<predicate>"``
    (0 for a predicate without GT triplet). A training system logs them as ``val/with/R@20`` etc.

    States are fixed-size int64 sums (per-frame recalls in fixed point, see ``FIXED_POINT_BITS``), so a
    distributed run reduces to exactly the single-process numbers whatever the split of the frames.

    Args:
        constraints: constraints to report, any of ``"with"``, ``"semi"``, ``"no"``.
        k_values: strictly increasing K of R@K.
        semi_threshold: "semi" candidates are spatial/contacting predicates scoring strictly above this.
        no_constraint_top: "no" keeps this many candidates after sorting.
        iou_threshold: minimum IoU of the subject and of the object box.
        iou_convention: ``"continuous"`` (torchvision) or ``"legacy"`` (+1 pixel, the two-stage papers).
        per_predicate: also return every predicate's recall.
        validate_args: check input values (finite boxes, score ranges, NaN, pair rows) besides keys and shapes.
        kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = SceneGraphRecall(k_values=(1, 3), per_predicate=False)
        >>> target = {"boxes": torch.tensor([[0., 0., 50., 100.], [10., 10., 30., 30.]]),
        ...           "labels": torch.tensor([1, 11]), "attention": torch.tensor([[1, 0, 0]]),
        ...           "spatial": torch.tensor([[0, 0, 1, 0, 0, 0]]), "contacting": torch.zeros(1, 17, dtype=torch.long)}
        >>> pred = {"boxes": target["boxes"], "labels": target["labels"], "scores": torch.ones(2),
        ...         "pairs": torch.tensor([[0, 1]]), "attention": torch.tensor([[0.8, 0.1, 0.1]]),
        ...         "spatial": torch.tensor([[0.1, 0.1, 0.95, 0.0, 0.0, 0.0]]), "contacting": torch.zeros(1, 17)}
        >>> metric.update([pred], [target])
        >>> results = metric.compute()
        >>> results["with/R@1"].item(), results["with/R@3"].item(), results["no/mR@1"].item()
        (0.5, 1.0, 0.038461538461538464)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        constraints: Sequence[str] = CONSTRAINTS,
        k_values: Sequence[int] = K_VALUES,
        semi_threshold: float = SEMI_THRESHOLD,
        no_constraint_top: int = NO_CONSTRAINT_TOP,
        iou_threshold: float = IOU_THRESHOLD,
        iou_convention: str = "continuous",
        per_predicate: bool = True,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = RecallConfig(
            tuple(constraints), tuple(k_values), semi_threshold, no_constraint_top, iou_threshold, iou_convention
        )
        self.per_predicate = per_predicate
        self.validate_args = validate_args
        for name, shape in state_shapes(self.config).items():
            self.add_state(name, default=torch.zeros(shape, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: Sequence[Mapping[str, Any]] | PredictionBatch, target: Sequence[Mapping[str, Any]]) -> None:
        """Match a batch of frames and add their counts to the state (input contract in the class docstring; a
        validated :class:`~arn_lightning.metrics.predictions.PredictionBatch` is accepted as ``preds`` too)."""
        increment = state_increment(frame_hits(preds, target, self.config, self.validate_args))
        for name, value in increment.items():
            state: Tensor = getattr(self, name)
            state += torch.as_tensor(value, dtype=torch.int64).to(state.device)

    def compute(self) -> dict[str, Tensor]:
        """The results dict (keys in the class docstring)."""
        return recall_from_state(
            {name: getattr(self, name) for name in state_shapes(self.config)}, self.config, self.per_predicate
        )

    @property
    def result_names(self) -> tuple[str, ...]:
        """Keys that :meth:`compute` returns, in order (without running it)."""
        shapes = state_shapes(self.config)
        zero = {name: torch.zeros(shape, dtype=torch.int64) for name, shape in shapes.items()}
        return tuple(recall_from_state(zero, self.config, self.per_predicate))
