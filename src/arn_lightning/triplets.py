"""The triplet vocabulary: which (predicate, object) category each classifier column of a branch stands for.

ARN classifies each pair query per predicate type (branch) over *triplet categories*: the (global predicate index,
AG object index) pairs of that type seen in the training split (``docs/ARCHITECTURE.md`` section 3,
``docs/model.md`` section 3). With ``clip_triplets`` off the columns are the branch's plain predicates, with any
object (:data:`ANY_OBJECT`).

One :class:`TripletVocabulary` is built from the data module's ``triplet_categories`` and handed to the model
(:class:`~arn_lightning.models.arn.ARN`, which keeps it as checkpointed buffers), the criterion (training targets,
:func:`triplet_targets`) and the postprocess (eq. 15: triplet scores back to predicate scores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from arn_lightning.vocab import NUM_OBJECT_CLASSES, PREDICATE_TYPES, TYPE_OFFSETS, TYPE_SIZES

#: ``triplet_objects`` value of a column that stands for a predicate with any object (``clip_triplets`` off).
ANY_OBJECT = -1

#: ``triplet_categories`` as they travel in hyperparameters: per branch a list of ``[predicate, object]`` pairs.
TripletCategories = Mapping[str, Sequence[Sequence[int]]]


@dataclass(frozen=True)
class TripletVocabulary:
    """The categories behind each branch's classifier columns.

    Attributes:
        triplet_predicates: per branch ``[K]`` LongTensor, global predicate index of column k
            (``docs/action_genome.md`` section 1.3).
        triplet_objects: per branch ``[K]`` LongTensor, AG object index of column k, or :data:`ANY_OBJECT` (-1) when
            the columns are plain predicates (``clip_triplets`` off).
    """

    triplet_predicates: dict[str, Tensor]
    triplet_objects: dict[str, Tensor]

    @classmethod
    def from_categories(
        cls, triplet_categories: TripletCategories | None, clip_triplets: bool = True
    ) -> TripletVocabulary:
        """The columns of ``triplet_categories`` (``docs/ARCHITECTURE.md`` section 3), or the plain predicates of
        each branch when ``clip_triplets`` is off (``triplet_categories`` is then ignored and may be None).

        Raises:
            ValueError: a branch is missing, or a pair is not ``[predicate of that branch, AG object in 1..36]``,
                or a pair is repeated; the message names the branch and the first bad pairs.
        """
        predicates, objects = {}, {}
        for kind in PREDICATE_TYPES:
            low, size = TYPE_OFFSETS[kind], TYPE_SIZES[kind]
            if not clip_triplets:
                predicates[kind] = torch.arange(low, low + size)
                objects[kind] = torch.full((size,), ANY_OBJECT, dtype=torch.long)
                continue
            if triplet_categories is None or kind not in triplet_categories:
                raise ValueError(f"Expected triplet_categories with a {kind!r} list but got {triplet_categories!r:.80}")
            pairs = [tuple(int(v) for v in pair) for pair in triplet_categories[kind]]
            bad = [
                p for p in pairs if len(p) != 2 or not low <= p[0] < low + size or not 1 <= p[1] <= NUM_OBJECT_CLASSES
            ]
            if bad or len(set(pairs)) != len(pairs):
                raise ValueError(
                    f"Expected a list of unique [predicate in [{low}, {low + size}), object in "
                    f"[1, {NUM_OBJECT_CLASSES}]] pairs for {kind!r} but got {len(pairs)} pairs, invalid: {bad[:5]}"
                )
            table = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)  # [K, 2]
            predicates[kind], objects[kind] = table[:, 0].contiguous(), table[:, 1].contiguous()
        return cls(predicates, objects)

    def num_classes(self, kind: str) -> int:
        """``K``: the number of classifier columns of branch ``kind``."""
        return int(self.triplet_predicates[kind].numel())

    def to(self, device: Any) -> TripletVocabulary:
        """A copy with every index tensor on ``device``."""
        return TripletVocabulary(
            {kind: value.to(device) for kind, value in self.triplet_predicates.items()},
            {kind: value.to(device) for kind, value in self.triplet_objects.items()},
        )


def triplet_targets(target: Mapping[str, Any], vocab: TripletVocabulary) -> dict[str, Tensor]:
    """Multi-hot triplet targets of one frame's ground-truth pairs, per branch (the criterion's and the matcher's).

    Pair n (object label o, predicates {p} of branch k) is positive for column c of branch k iff
    ``triplet_predicates[k][c]`` is in {p} and ``triplet_objects[k][c]`` is o or ``-1`` (any object). A ground-truth
    (p, o) that is not a category of the training split has no positive column.

    Args:
        target: ``obj_labels`` ``[N]`` (AG index), ``attention`` ``[N, 3]``, ``spatial`` ``[N, 6]``,
            ``contacting`` ``[N, 17]`` (counts, ``docs/ARCHITECTURE.md`` section 2).
        vocab: the classifier columns.

    Returns:
        ``{kind: FloatTensor [N, K_kind]}`` of 0 / 1 on ``obj_labels``' device.

    Raises:
        ValueError: a label outside the AG object range, or counts of the wrong shape.
    """
    labels = target["obj_labels"]  # [N]
    if labels.numel() and not bool(((labels >= 1) & (labels <= NUM_OBJECT_CLASSES)).all()):
        raise ValueError(f"Expected obj_labels in [1, {NUM_OBJECT_CLASSES}] (AG index) but got {labels.tolist()}")
    result = {}
    for kind in PREDICATE_TYPES:
        counts = target[kind]
        if counts.dim() != 2 or counts.shape != (labels.shape[0], TYPE_SIZES[kind]):
            raise ValueError(
                f"Expected {kind} counts of shape {(labels.shape[0], TYPE_SIZES[kind])} but got {tuple(counts.shape)}"
            )
        columns = vocab.triplet_predicates[kind].to(labels.device) - TYPE_OFFSETS[kind]  # [K] local index
        objects = vocab.triplet_objects[kind].to(labels.device)  # [K]
        has_predicate = counts[:, columns] > 0  # [N, K]
        object_ok = (objects[None, :] == labels[:, None]) | (objects[None, :] == ANY_OBJECT)  # [N, K]
        result[kind] = (has_predicate & object_ok).float()
    return result
