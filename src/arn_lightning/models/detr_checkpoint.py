"""Initialise ARN from an official DETR-R50 COCO checkpoint (a local ``.pth``; paper Sec. 4.1).

Key mapping (DETR -> ARN); layer names are identical below the prefixes because
:class:`~arn_lightning.models.transformer.TransformerLayer` uses DETR's names:

==========================================  ==============================================================
``backbone.0.body.*``                        ``backbone.body.*`` (ResNet with frozen-BN buffers)
``input_proj.*``                             ``input_proj.*``
``transformer.encoder.layers.{i}.*``         ``encoder.layers.{i}.*`` (i < enc_layers)
``transformer.decoder.layers.{i}.*``         ``entity.decoder.layers.{i}.*`` (the first entity_layers layers)
``transformer.decoder.norm.*``               ``entity.decoder.norm.*``
``query_embed.weight``                       ``entity.subject_pos.weight`` and ``entity.object_pos.weight``
``bbox_embed.layers.{i}.*``                  ``entity.sub_box_head.layers.{i}.*`` and ``entity.obj_box_head.*``
==========================================  ==============================================================

DETR's 6 decoder layers form a chain, so the first ``entity_layers`` of them (not the last) are kept: layer i keeps
receiving what it was trained on. ``query_embed`` (DETR's object-query positions) initialises both the subject and
the object positions: pair n starts from DETR slot n's spatial prior, and the distinct content queries ``Q^s``,
``Q^o`` break the symmetry. ``class_embed`` (91 COCO classes + no-object, linear) has no counterpart in the cosine
classifiers and is reported as unexpected, like every key whose target does not exist in the model at hand (e.g.
DETR's decoder layers 3-5, or the box heads in SGCls / PredCls). Shape mismatches (another ResNet,
``backbone_stride`` 16, another ``hidden_dim`` or ``num_queries``) are skipped and reported.
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

#: The official DETR-R50 COCO checkpoint (paper Sec. 4.1); the project reads it from a local path only, never
#: downloading it (``docs/weights.md``).
DETR_R50_FILE = "detr-r50-e632da11.pth"
DETR_R50_URL = f"https://dl.fbaipublicfiles.com/detr/{DETR_R50_FILE}"
#: (DETR key pattern, ARN key templates filled with the pattern's groups).
DETR_KEY_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"backbone\.0\.body\.(.+)", ("backbone.body.{0}",)),
    (r"input_proj\.(.+)", ("input_proj.{0}",)),
    (r"transformer\.encoder\.layers\.(\d+)\.(.+)", ("encoder.layers.{0}.{1}",)),
    (r"transformer\.decoder\.layers\.(\d+)\.(.+)", ("entity.decoder.layers.{0}.{1}",)),
    (r"transformer\.decoder\.norm\.(.+)", ("entity.decoder.norm.{0}",)),
    (r"query_embed\.weight", ("entity.subject_pos.weight", "entity.object_pos.weight")),
    (r"bbox_embed\.layers\.(\d+)\.(.+)", ("entity.sub_box_head.layers.{0}.{1}", "entity.obj_box_head.layers.{0}.{1}")),
)
#: ARN modules that the mapping initialises; their keys that receive nothing are reported as missing.
MAPPED_PREFIXES = (
    "backbone.body.",
    "input_proj.",
    "encoder.",
    "entity.decoder.",
    "entity.subject_pos.",
    "entity.object_pos.",
    "entity.sub_box_head.",
    "entity.obj_box_head.",
)


def detr_target_keys(detr_key: str) -> list[str]:
    """The ARN state-dict keys that a DETR key initialises (empty when the key has no counterpart)."""
    for pattern, templates in DETR_KEY_RULES:
        match = re.fullmatch(pattern, detr_key)
        if match:
            return [template.format(*match.groups()) for template in templates]
    return []


@dataclass
class DetrLoadReport:
    """What :func:`load_detr_checkpoint` did.

    Attributes:
        loaded: ARN keys that received a DETR tensor.
        missing: ARN keys of the mapped modules that received nothing.
        unexpected: DETR keys with no target in this model.
        mismatched: ``(detr key, arn key, detr shape, arn shape)`` skipped for a shape mismatch.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"DETR checkpoint: {len(self.loaded)} tensors loaded, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape-mismatched"
        ]
        lines += [f"  missing: {k}" for k in self.missing]
        lines += [f"  unexpected: {k}" for k in self.unexpected]
        lines += [f"  shape mismatch: {s} {tuple(a)} -> {t} {tuple(b)}" for s, t, a, b in self.mismatched]
        return "\n".join(lines)


def read_detr_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The model state dict of a DETR ``.pth`` (``{"model": ...}`` as released, or a bare state dict).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names the official file and its URL).
        ValueError: the file holds no DETR state dict.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"Expected a DETR checkpoint file at {file} (detr_checkpoint) but it does not exist. It is never "
            f"downloaded: fetch {DETR_R50_FILE} from {DETR_R50_URL} on a machine with network, place it anywhere "
            f"(e.g. {file.parent}) and set detr_checkpoint to its path"
        )
    # Training checkpoints of the DETR repository also pickle their argparse Namespace.
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(detr_target_keys(k) for k in state):
        raise ValueError(f"Expected a DETR checkpoint (keys like 'transformer.encoder.layers.0.*') in {file}")
    return state


def map_detr_state_dict(model: nn.Module, detr_state: dict[str, Tensor]) -> tuple[dict[str, Tensor], DetrLoadReport]:
    """Translate a DETR state dict into ``model``'s keys; returns the loadable part and the report."""
    own = model.state_dict()
    mapped: dict[str, Tensor] = {}
    report = DetrLoadReport()
    for key, value in detr_state.items():
        targets = [t for t in detr_target_keys(key) if t in own]
        if not targets:
            report.unexpected.append(key)
        for target in targets:
            if own[target].shape == value.shape:
                mapped[target] = value
            else:
                report.mismatched.append((key, target, tuple(value.shape), tuple(own[target].shape)))
    report.loaded = sorted(mapped)
    report.missing = sorted(k for k in own if k.startswith(MAPPED_PREFIXES) and k not in mapped)
    return mapped, report


def load_detr_checkpoint(model: nn.Module, path: str | Path) -> DetrLoadReport:
    """Load a local DETR checkpoint into ``model`` (an :class:`~arn_lightning.models.arn.ARN`) and log the report.

    Args:
        model: the ARN model; only the modules of :data:`MAPPED_PREFIXES` change.
        path: the ``.pth`` file (e.g. the official ``detr-r50-e632da11.pth``).

    Returns:
        The :class:`DetrLoadReport` (``str(report)`` lists every skipped key).
    """
    mapped, report = map_detr_state_dict(model, read_detr_state_dict(path))
    result = model.load_state_dict(mapped, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # mapped only holds keys of the model
    log.info("%s", report)
    return report
