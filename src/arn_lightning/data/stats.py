"""Statistics of a filtered AG root: counts per split, objects per class and predicates head to tail.

The JSON layout is documented in ``docs/stats.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from arn_lightning import vocab
from arn_lightning.data.ag import AGAnnotations, FrameAnnotation

#: Rows of the objects / predicates tables in the text output.
TEXT_ROWS = 40


def _split_stats(frames: list[FrameAnnotation]) -> dict[str, Any]:
    """Objects per class and predicates per class (head to tail) of the kept frames of one split."""
    object_counts = np.zeros(vocab.NUM_OBJECT_CLASSES + 1, dtype=np.int64)  # index = AG object index
    predicate_counts = np.zeros(vocab.NUM_PREDICATES, dtype=np.int64)  # index = global predicate index
    for frame in frames:
        object_counts += np.bincount(frame.labels[1:], minlength=object_counts.size)
        for kind in vocab.PREDICATE_TYPES:
            offset = vocab.TYPE_OFFSETS[kind]
            predicate_counts[offset : offset + vocab.TYPE_SIZES[kind]] += getattr(frame, kind).sum(axis=0)
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
        lines += _table(split["objects_per_class"], "objects per class")
        lines += _table(split["predicates"], "predicates, head to tail")
    return "\n".join(lines)
