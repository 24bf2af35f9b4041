"""Statistics of a filtered AG root: counts per split, objects per class, predicates head to tail and the
association strength between object classes and predicates (ARN's premise, paper Fig. 1).

The JSON layout is documented in ``docs/stats.md``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import permutations
from typing import Any

import numpy as np

from arn_lightning import vocab
from arn_lightning.data.ag import AGAnnotations, FrameAnnotation, FrameList

#: Rows of the objects / predicates tables in the text output.
TEXT_ROWS = 40


def entropy(counts: Counter) -> float:
    """Shannon entropy in bits of the empirical distribution given by ``counts`` (0 for no observations)."""
    values = np.array([c for c in counts.values() if c > 0], dtype=np.float64)
    if values.size == 0:
        return 0.0
    p = values / values.sum()
    return float(-(p * np.log2(p)).sum())


def uncertainty_coefficient(pairs: list[tuple[Any, Any]]) -> float | None:
    """Theil's uncertainty coefficient ``U(Y|X) = I(X; Y) / H(Y) = 1 - H(Y|X) / H(Y)`` of observed ``(x, y)`` pairs.

    0: knowing ``x`` tells nothing about ``y``; 1: ``x`` determines ``y``. Empirical (plug-in) entropies, so a
    small sample reads somewhat high.

    Args:
        pairs: the observations (hashable ``x`` and ``y``).

    Returns:
        The coefficient in [0, 1], or None when ``y`` never varies (``H(Y) = 0``, nothing to predict).
    """
    h_y = entropy(Counter(y for _, y in pairs))
    if h_y <= 0.0:
        return None
    h_xy = entropy(Counter(pairs))
    h_x = entropy(Counter(x for x, _ in pairs))
    return float(min(1.0, max(0.0, (h_y - (h_xy - h_x)) / h_y)))


def _mean(values: list[float | None]) -> float | None:
    """Mean of the defined values (None if none is)."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def object_rows(frames: Sequence[FrameAnnotation]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every kept object of ``frames`` in frame order: its AG label ``int64 [M]`` and, per predicate type, its label
    counts ``[M, K]`` (read from the arrays of a :class:`~arn_lightning.data.ag.FrameList`, without building frames).
    """
    if isinstance(frames, FrameList):
        columns = frames.columns
        starts, ends = columns.object_offsets[frames.index], columns.object_offsets[frames.index + 1]
        sizes = ends - starts
        objects = np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(int(sizes.sum()))
        box_rows = objects + np.repeat(frames.index, sizes) + 1  # the person row of each frame comes first
        labels = columns.labels[box_rows].astype(np.int64)
        return labels, {kind: columns.counts[kind][objects].astype(np.int64) for kind in vocab.PREDICATE_TYPES}
    labels = np.concatenate([f.labels[1:] for f in frames] or [np.zeros(0, np.int64)])
    counts = {
        kind: np.concatenate([getattr(f, kind) for f in frames] or [np.zeros((0, vocab.TYPE_SIZES[kind]), np.int64)])
        for kind in vocab.PREDICATE_TYPES
    }
    return labels, counts


def association_stats(frames: Sequence[FrameAnnotation]) -> dict[str, Any]:
    """How predictable each predicate type is from the object class and from the other types (``docs/stats.md``).

    Each kept object contributes one observation: its class and, per type, the set of its labels of that type (a
    multi-label set is one category; an empty set is a category too). Only annotation counts are used, so this works
    on the real AG as on the synthetic one.

    Args:
        frames: the kept frames of one split.

    Returns:
        ``{"objects": N, "object_to_predicate": {type: U, "mean": U}, "predicate_to_predicate":
        {"<given>-><predicted>": U, "mean": U}}`` with ``U`` = :func:`uncertainty_coefficient` (None: undefined).
    """
    labels, counts = object_rows(frames)
    # a label set as the bit mask of its columns: one category per set, in the order objects are met
    sets = {kind: ((counts[kind] > 0) << np.arange(counts[kind].shape[1])).sum(axis=1).tolist() for kind in counts}
    label_list = labels.tolist()
    objects = {kind: uncertainty_coefficient(list(zip(label_list, sets[kind]))) for kind in vocab.PREDICATE_TYPES}
    predicates = {
        f"{given}->{predicted}": uncertainty_coefficient(list(zip(sets[given], sets[predicted])))
        for given, predicted in permutations(vocab.PREDICATE_TYPES, 2)
    }
    return {
        "objects": len(label_list),
        "object_to_predicate": {**objects, "mean": _mean(list(objects.values()))},
        "predicate_to_predicate": {**predicates, "mean": _mean(list(predicates.values()))},
    }


def _split_stats(frames: Sequence[FrameAnnotation]) -> dict[str, Any]:
    """Objects per class and predicates per class (head to tail) of the kept frames of one split."""
    labels, counts = object_rows(frames)
    object_counts = np.bincount(labels, minlength=vocab.NUM_OBJECT_CLASSES + 1)  # index = AG object index
    predicate_counts = np.concatenate([counts[kind].sum(axis=0) for kind in vocab.PREDICATE_TYPES])  # global index
    objects = [
        {"name": name, "count": int(object_counts[i + 1])}
        for i, name in enumerate(vocab.OBJECT_CLASSES)
        if i + 1 != vocab.PERSON_LABEL
    ]
    predicates = [
        {"name": name, "type": vocab.predicate_type(i), "count": int(predicate_counts[i])}
        for i, name in enumerate(vocab.PREDICATES)
    ]
    return {
        "objects_per_class": sorted(objects, key=lambda row: -row["count"]),
        "predicates": sorted(predicates, key=lambda row: -row["count"]),
        "relationships": int(predicate_counts.sum()),
        "association": association_stats(frames),
    }


def dataset_stats(annotations: AGAnnotations) -> dict[str, Any]:
    """The statistics of ``annotations`` as a JSON-friendly dict (see ``docs/stats.md``)."""
    report = annotations.report.to_dict()
    splits = {}
    for name, counts in report["splits"].items():
        splits[name] = {**counts, **_split_stats(annotations.frames(name))}
    return {
        "root": str(annotations.root),
        "task": report["task"],
        "min_frames": report["min_frames"],
        "filter_small": report["filter_small"],
        "splits": splits,
    }


def _table(rows: list[dict[str, Any]], label: str) -> list[str]:
    """Text lines of a name / count table, largest first, zero rows summarised."""
    shown = [r for r in rows if r["count"] > 0][:TEXT_ROWS]
    lines = [f"    {label}:"]
    lines += [f"      {r['name']:<22} {r.get('type', ''):<11} {r['count']:>9,}" for r in shown]
    absent = [r["name"] for r in rows if r["count"] == 0]
    if absent:
        lines.append(f"      (none of: {', '.join(absent)})")
    return lines


def _association_line(association: dict[str, Any]) -> str:
    """One text line of :func:`association_stats`'s output."""

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    objects, predicates = association["object_to_predicate"], association["predicate_to_predicate"]
    return (
        "    association (uncertainty coefficient, 0 none .. 1 determined): object -> "
        + ", ".join(f"{kind} {cell(objects[kind])}" for kind in vocab.PREDICATE_TYPES)
        + f" (mean {cell(objects['mean'])}); predicate -> predicate mean {cell(predicates['mean'])}"
    )


def format_stats(stats: dict[str, Any]) -> str:
    """Human-readable text of :func:`dataset_stats`'s output."""
    lines = [
        f"Action Genome root {stats['root']}: task {stats['task']}, min_frames {stats['min_frames']}, "
        f"filter_small {stats['filter_small']:g} px"
    ]
    for name, split in stats["splits"].items():
        videos, frames, objects = split["videos"], split["frames"], split["objects"]
        lines.append(
            f"  {name}: {videos['kept']:,} / {videos['total']:,} videos kept (dropped: "
            + ", ".join(f"{k} {v:,}" for k, v in videos["dropped"].items())
            + ")"
        )
        lines.append(
            f"    frames {frames['kept']:,} / {frames['total']:,} kept (dropped: "
            + ", ".join(f"{k} {v:,}" for k, v in frames["dropped"].items())
            + ")"
        )
        lines.append(
            f"    objects {objects['kept']:,} kept of {objects['total']:,} entries ({objects['invisible']:,} "
            f"invisible, {objects['small']:,} small); {split['relationships']:,} relationship labels"
        )
        if split["boxes"]["invalid_ignored"]:  # docs/boxes.md: boxes breaking the rule in frames dropped anyway
            lines.append(f"    {split['boxes']['invalid_ignored']:,} invalid boxes in dropped frames (ignored)")
        lines.append(_association_line(split["association"]))
        lines += _table(split["objects_per_class"], "objects per class")
        lines += _table(split["predicates"], "predicates, head to tail")
    return "\n".join(lines)
