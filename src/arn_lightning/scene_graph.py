"""Readable scene graphs of single frames: ranked triplets from a per-frame prediction (ARCHITECTURE.md section 4).

Triplets follow the "no constraint" protocol of ``docs/action_genome.md`` section 3: every (pair, predicate) cell of the
26 predicates is a candidate scored ``subject score x object score x predicate score``; candidates are sorted by
score exactly as the metric sorts them, the best ``top_k`` kept and, of those, the ones at or above a threshold.

Direction: attention and contacting triplets read ``person - predicate - object``; spatial predicates describe the
object relative to the person ("The cup is in front of the person"), so spatial triplets read
``object - predicate - person``, the direction in which AG annotates them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from arn_lightning.defaults import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from arn_lightning.metrics.functional import RecallConfig, ranked_triplets
from arn_lightning.metrics.predictions import encode_prediction
from arn_lightning.vocab import OBJECT_CLASSES, PREDICATES, predicate_type

#: Digits kept for the timestamps and triplet scores written to JSON.
JSON_FLOAT_DIGITS = 6


def object_name(label: int) -> str:
    """Class name of an AG object index (1 = ``person``); ``"object_<i>"`` outside the vocabulary."""
    return OBJECT_CLASSES[label - 1] if 1 <= label <= len(OBJECT_CLASSES) else f"object_{label}"


@dataclass(frozen=True)
class Triplet:
    """One ranked relation of a frame, in reading order (see the module docstring for spatial predicates).

    Attributes:
        subject_row: box row of the sentence's subject.
        predicate: global predicate index (0..25).
        object_row: box row of the sentence's object.
        score: subject score x object score x predicate score.
        subject: subject class name.
        object: object class name.
    """

    subject_row: int
    predicate: int
    object_row: int
    score: float
    subject: str
    object: str

    @property
    def predicate_name(self) -> str:
        """The predicate in pickle spelling (``looking_at``)."""
        return PREDICATES[self.predicate]

    @property
    def kind(self) -> str:
        """Predicate type: ``attention``, ``spatial`` or ``contacting``."""
        return predicate_type(self.predicate)

    def as_list(self) -> list[Any]:
        """``[subject, predicate, object, score]`` with readable names."""
        return [self.subject, self.predicate_name, self.object, round(self.score, JSON_FLOAT_DIGITS)]

    def text(self) -> str:
        """One line for a display: ``person holding cup/glass/bottle 0.63``."""
        return f"{self.subject} {self.predicate_name} {self.object} {self.score:.2f}"


def rank_triplets(
    prediction: Mapping[str, Any], top_k: int = DEFAULT_TOP_K, threshold: float = DEFAULT_THRESHOLD
) -> list[Triplet]:
    """The frame's best no-constraint triplets (see the module docstring), highest score first.

    The ranking is the metric's own (:func:`arn_lightning.metrics.functional.ranked_triplets` under "no
    constraint"), so the triplets shown are exactly the first candidates that R@K counts.

    Args:
        prediction: per-frame prediction (ARCHITECTURE.md section 4): tensors on any device, arrays or lists.
        top_k: most triplets returned.
        threshold: lowest score kept (inclusive).

    Raises:
        ValueError: ``top_k`` is negative, or the prediction does not follow the contract (keys, shapes, ranges).
    """
    if top_k < 0:
        raise ValueError(f"Expected top_k >= 0 but got {top_k}")
    if top_k == 0:
        return []
    try:
        ranked = ranked_triplets(prediction, "no", RecallConfig(no_constraint_top=top_k))
    except ValueError as error:
        raise ValueError(f"{error} (frame {prediction.get('frame')!r})") from None
    labels = torch.as_tensor(prediction["labels"]).tolist()
    triplets = []
    for subject_row, object_row, predicate, score in zip(
        *(ranked[key].tolist() for key in ("subject", "object", "predicate", "score"))
    ):
        if score < threshold:
            break
        names = object_name(int(labels[subject_row])), object_name(int(labels[object_row]))
        triplets.append(Triplet(subject_row, predicate, object_row, score, *names))
    return triplets


@dataclass
class FrameGraph:
    """The scene graph of one sampled frame.

    Attributes:
        index: position among the sampled frames.
        source_index: frame number in the source video (position in an image folder).
        timestamp: seconds from the start of the video (NaN for a dataset frame whose time is unknown; drawn
            without it).
        prediction: the per-frame prediction (ARCHITECTURE.md section 4) on the CPU; ``prediction["frame"]`` is
            the frame key.
        triplets: the ranked triplets (:func:`rank_triplets`).
    """

    index: int
    source_index: int
    timestamp: float
    prediction: dict[str, Any]
    triplets: list[Triplet]

    @property
    def frame(self) -> str:
        """The frame key ``"<video>/<NNNNNN>.png"``."""
        return self.prediction["frame"]

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: position, time, readable names and triplets, and the raw prediction-file fields.

        The raw fields are those of the prediction file, produced directly from the prediction
        (:func:`arn_lightning.metrics.predictions.encode_prediction`, lossless): a graph's prediction is a
        postprocess output, which checked it, or one read back from a file, which validated it. So a
        ``scene_graphs.jsonl`` can be read back with ``read_predictions``.
        """
        raw = encode_prediction(self.prediction)
        record: dict[str, Any] = {
            "index": self.index,
            "frame_index": self.source_index,
            "timestamp": round(self.timestamp, JSON_FLOAT_DIGITS),
            "label_names": [object_name(label) for label in raw["labels"]],
            "triplets": [t.as_list() for t in self.triplets],
            "triplet_rows": [[t.subject_row, t.predicate, t.object_row] for t in self.triplets],
        }
        record.update(raw)
        return record
