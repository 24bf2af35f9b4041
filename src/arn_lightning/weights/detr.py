"""Initialise ARN from an official DETR-R50 COCO checkpoint (paper Sec. 4.1): a local ``.pth`` or a registry name.

``detr_checkpoint`` is either a path (an existing file, or a value with a path separator or a ``.pth`` / ``.pt``
suffix) or a name of :mod:`arn_lightning.weights.registry` (``detr-r50-coco``: the official ``detr-r50-e632da11.pth``,
found in the weights folder and checked against its published hash, downloaded there when absent and online); anything
else is an error naming the setting and the registered names (:func:`resolve_detr_checkpoint`).

Key mapping (DETR -> ARN), with ``E`` = ``entity_layers`` and ``P`` = ``standard_predicate_layers`` (the
predicate branch's layers before its PAP + HA layer); layer names are identical below the prefixes because
:class:`~arn_lightning.models.transformer.TransformerLayer` uses DETR's names:

==========================================  ==================================================================
``backbone.0.body.*``                        ``backbone.body.*`` (ResNet with frozen-BN buffers)
``input_proj.*``                             ``input_proj.*``
``transformer.encoder.layers.{i}.*``         ``encoder.layers.{i}.*`` (i < enc_layers)
``transformer.decoder.layers.{i}.*``         ``entity.decoder.layers.{i}.*`` (i < E) and
                                             ``predicate.decoders.{branch}.layers.{i}.*`` for each of the three
                                             branches (i < P)
``transformer.decoder.norm.*``               ``entity.decoder.norm.*`` and ``predicate.decoders.{branch}.norm.*``
``query_embed.weight``                       ``entity.subject_pos.weight`` and ``entity.object_pos.weight``
``bbox_embed.layers.{i}.*``                  ``entity.sub_box_head.layers.{i}.*`` and ``entity.obj_box_head.*``
==========================================  ==================================================================

Both decoders start from the bottom of DETR's decoder, by the same index (GEN-VLKT's conversion script, which
HOICLIP reuses): DETR's layer 0 was trained on zero content queries, which is where every content query starts under
``content_queries: zeros``, and layer i keeps receiving what layer i - 1 of its own stack gives it. With the paper's
3 / 3 layers, DETR layers 0-2 initialise the entity decoder and layers 0-1 every branch's two standard layers; the
PAP + HA layer has no DETR counterpart and starts fresh, and DETR layers 3-5 are unused (unexpected). The rules
depend on the depths, so they are built per model
(:func:`detr_key_rules`). For the paper configs the load gives 523 tensors: backbone 265,
input projection 2, encoder 72, entity decoder 56, positions 2, box heads 12, predicate branches 114.
``query_embed`` (DETR's object-query positions) initialises both the subject and the object positions: pair n starts
from DETR slot n's spatial prior, and the distinct content queries ``Q^s``, ``Q^o`` break the symmetry (DETR's own
content queries are zeros, ``ARNConfig.content_queries``). ``class_embed`` (91 COCO classes + no-object, linear) has
no counterpart in the cosine classifiers and is reported as unexpected, like every key whose target does not exist
in the model at hand (e.g. DETR's decoder layers 3-5 with 3 / 3 layers, or the box heads in SGCls / PredCls). Shape
mismatches (another ResNet, ``backbone_stride`` 16, another ``hidden_dim`` or ``num_queries``) are skipped and
reported.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from arn_lightning.models.config import ARNConfig
from arn_lightning.models.outputs import BRANCHES
from arn_lightning.weights import registry

if TYPE_CHECKING:
    from arn_lightning.models.arn import ARN

log = logging.getLogger(__name__)

#: The official DETR-R50 COCO checkpoint (paper Sec. 4.1), registered as ``detr-r50-coco`` (``docs/weights.md``).
DETR_R50_FILE = "detr-r50-e632da11.pth"
DETR_R50_URL = f"https://dl.fbaipublicfiles.com/detr/{DETR_R50_FILE}"
#: The registry name of the official checkpoint.
DETR_R50_NAME = "detr-r50-coco"
#: The config setting, named in errors.
SETTING = "detr_checkpoint"
#: Suffixes that make a ``detr_checkpoint`` value a path even when the file does not exist.
PATH_SUFFIXES = (".pth", ".pt")
#: A mapping rule: (DETR key pattern, ARN key templates filled with the pattern's groups).
Rule = tuple[str, tuple[str, ...]]
#: The rules that do not depend on the model's depth; :func:`detr_key_rules` adds the decoder layers'.
DETR_KEY_RULES: tuple[Rule, ...] = (
    (r"backbone\.0\.body\.(.+)", ("backbone.body.{0}",)),
    (r"input_proj\.(.+)", ("input_proj.{0}",)),
    (r"transformer\.encoder\.layers\.(\d+)\.(.+)", ("encoder.layers.{0}.{1}",)),
    (
        r"transformer\.decoder\.norm\.(.+)",
        ("entity.decoder.norm.{0}", *(f"predicate.decoders.{kind}.norm.{{0}}" for kind in BRANCHES)),
    ),
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
    "predicate.decoders.",
)


def detr_key_rules(config: ARNConfig) -> tuple[Rule, ...]:
    """The mapping rules for a model of ``config``'s depth: :data:`DETR_KEY_RULES` plus DETR's decoder layers.

    DETR decoder layer ``i`` -> entity decoder layer ``i`` (``i < entity_layers``) and layer ``i`` of every predicate
    branch (``i < standard_predicate_layers``; the PAP + HA layer has no counterpart). Both decoders start from the
    bottom of DETR's decoder, whose first layer was trained on zero content queries, the regime every content query
    starts in under ``content_queries: zeros`` (GEN-VLKT's ``convert_parameters.py`` copies DETR's decoder into both
    of its decoders by the same index). DETR layers past both stay unmapped (reported as unexpected).
    """
    layer = r"transformer\.decoder\.layers\.{}\.(.+)"
    rules = []
    for i in range(max(config.entity_layers, config.standard_predicate_layers)):
        targets = (f"entity.decoder.layers.{i}.{{0}}",) if i < config.entity_layers else ()
        if i < config.standard_predicate_layers:
            targets += tuple(f"predicate.decoders.{kind}.layers.{i}.{{0}}" for kind in BRANCHES)
        rules.append((layer.format(i), targets))
    return DETR_KEY_RULES + tuple(rules)


def detr_target_keys(detr_key: str, config: ARNConfig | None = None) -> list[str]:
    """The ARN state-dict keys that a DETR key initialises in a model of ``config`` (None: the paper's
    :class:`~arn_lightning.models.config.ARNConfig`); empty when the key has no counterpart."""
    for pattern, templates in detr_key_rules(ARNConfig() if config is None else config):
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
        source: the file the tensors came from (empty when not loaded from a file).
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    source: str = ""

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
            f"Expected a DETR checkpoint file at {file} (detr_checkpoint) but it does not exist. A path is never "
            f"downloaded: fetch {DETR_R50_FILE} from {DETR_R50_URL} on a machine with network, place it anywhere "
            f"(e.g. {file.parent}) and set detr_checkpoint to its path, or set detr_checkpoint: {DETR_R50_NAME} "
            f"(the weights folder, downloaded there when online: `arn-lightning weights fetch {DETR_R50_NAME}`)"
        )
    # Training checkpoints of the DETR repository also pickle their argparse Namespace.
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = registry.load_torch_file(
            file,
            "a DETR checkpoint saved with torch.save",
            "detr_checkpoint",
            f"; the official file is {DETR_R50_FILE} from {DETR_R50_URL}",
        )
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(detr_target_keys(k) for k in state):
        raise ValueError(f"Expected a DETR checkpoint (keys like 'transformer.encoder.layers.0.*') in {file}")
    return state


def map_detr_state_dict(model: ARN, detr_state: dict[str, Tensor]) -> tuple[dict[str, Tensor], DetrLoadReport]:
    """Translate a DETR state dict into the keys of ``model`` (an ARN: its ``config`` sets the decoder mapping,
    :func:`detr_key_rules`); returns the loadable part and the report."""
    own = model.state_dict()
    mapped: dict[str, Tensor] = {}
    report = DetrLoadReport()
    for key, value in detr_state.items():
        targets = [t for t in detr_target_keys(key, model.config) if t in own]
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


def resolve_detr_checkpoint(value: str | os.PathLike[str], setting: str = SETTING) -> Path:
    """The file a ``detr_checkpoint`` value names: a path as it is, a registry name resolved and verified.

    A value is a path when it is an existing file, a :class:`os.PathLike`, or contains a path separator or ends in
    ``.pth`` / ``.pt`` (a missing file then fails in :func:`read_detr_state_dict`, naming it); a registered name of
    :mod:`arn_lightning.weights.registry` for this setting is resolved there
    (:func:`arn_lightning.weights.registry.resolve`).

    Args:
        value: the setting's value.
        setting: the setting's name, for messages.

    Raises:
        ValueError: neither a path nor a registered name (the message lists the names), or a name of weights meant
            for another setting.
        WeightsUnavailable: a registered name whose file is absent and cannot be downloaded (offline, timeout), or
            present with another hash (:class:`~arn_lightning.weights.registry.WeightsMismatch`).
    """
    if not isinstance(value, str):
        return Path(value).expanduser()
    path = Path(value).expanduser()
    if path.is_file() or "/" in value or os.sep in value or path.suffix in PATH_SUFFIXES:
        return path
    candidates = [e.name for e in registry.list_entries() if e.setting == SETTING]
    if not registry.is_registered(value):
        raise ValueError(
            f"Expected {setting} to be a path to a DETR .pth file or a registered weights name "
            f"({', '.join(candidates)}; `arn-lightning weights list`) but got {value!r}, which is neither an "
            f"existing file nor a name"
        )
    entry = registry.get_entry(value)
    if entry.setting != SETTING:
        raise ValueError(
            f"Expected {setting} to name DETR weights ({', '.join(candidates)}) but got {value!r}, which are "
            f"weights for {entry.setting}"
        )
    return registry.resolve(value)


def _group_keys(keys: list[str]) -> str:
    """``"class_embed.* (2), transformer.decoder.layers.{3-5}.* (78)"``: keys counted by module, layers merged."""
    counts: Counter[str] = Counter()
    for key in keys:
        match = re.match(r"(.*?\.layers\.\d+)\.", key) or re.match(r"(.*?\.layer\d+)\.", key)
        counts[match.group(1) if match else key.rsplit(".", 1)[0]] += 1
    merged: dict[str, tuple[list[int], int]] = {}
    for group, count in counts.items():
        match = re.fullmatch(r"(.*\.layers\.)(\d+)", group)
        base, index = (match.group(1), int(match.group(2))) if match else (group, -1)
        indices, total = merged.get(base, ([], 0))
        merged[base] = (indices + [index], total + count)
    parts = []
    for base, (indices, total) in merged.items():
        layers = sorted(i for i in indices if i >= 0)
        if not layers:
            parts.append(f"{base}.* ({total})")
            continue
        contiguous = layers == list(range(layers[0], layers[-1] + 1))
        span = f"{layers[0]}-{layers[-1]}" if contiguous and len(layers) > 1 else ",".join(map(str, layers))
        parts.append(f"{base}{span}.* ({total})")
    return ", ".join(parts) if parts else "none"


def format_detr_report(report: DetrLoadReport) -> str:
    """A few readable lines for the start of training: what was loaded from where, what was skipped and why.

    Keys are counted per module (decoder layers merged into ranges) instead of listed one by one; ``str(report)``
    keeps the complete list. Example (the paper's SGDet config)::

        DETR weights from /cache/detr-r50-e632da11.pth: 523 tensors loaded (backbone.body 265, encoder 72, ...,
        predicate.decoders 114)
          not in this model, skipped (20): transformer.decoder.layers.5.* (18), class_embed.* (2)
          kept their own initialisation (0): none
          shape mismatch, skipped (0): none
    """
    loaded: Counter[str] = Counter()
    for key in report.loaded:
        prefix = next((p for p in MAPPED_PREFIXES if key.startswith(p)), key)
        loaded[prefix.rstrip(".")] += 1
    summary = ", ".join(f"{prefix} {count}" for prefix, count in loaded.items())
    source = f" from {report.source}" if report.source else ""
    mismatched = ", ".join(f"{s} {tuple(a)} -> {t} {tuple(b)}" for s, t, a, b in report.mismatched) or "none"
    return "\n".join(
        [
            f"DETR weights{source}: {len(report.loaded)} tensors loaded ({summary or 'none'})",
            f"  not in this model, skipped ({len(report.unexpected)}): {_group_keys(report.unexpected)}",
            f"  kept their own initialisation ({len(report.missing)}): {_group_keys(report.missing)}",
            f"  shape mismatch, skipped ({len(report.mismatched)}): {mismatched}",
        ]
    )


def load_detr_checkpoint(model: ARN, path: str | os.PathLike[str]) -> DetrLoadReport:
    """Load a DETR checkpoint into ``model`` (an :class:`~arn_lightning.models.arn.ARN`) and log the report.

    Args:
        model: the ARN model; only the modules of :data:`MAPPED_PREFIXES` change.
        path: the ``.pth`` file (e.g. the official ``detr-r50-e632da11.pth``) or a registry name
            (``detr-r50-coco``), see :func:`resolve_detr_checkpoint`.

    Returns:
        The :class:`DetrLoadReport` (``str(report)`` lists every skipped key, :func:`format_detr_report` sums them
        up); the summary is logged at INFO, the complete list at DEBUG.

    Raises:
        ValueError: ``path`` is neither a path nor a registered DETR name, or the file holds no DETR state dict.
        FileNotFoundError: a path that does not exist; :class:`~arn_lightning.weights.download.WeightsUnavailable` for a
            name whose file is absent offline or mismatches its hash.
    """
    file = resolve_detr_checkpoint(path)
    mapped, report = map_detr_state_dict(model, read_detr_state_dict(file))
    report.source = str(file)
    result = model.load_state_dict(mapped, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # mapped only holds keys of the model
    log.info("%s", format_detr_report(report))
    log.debug("%s", report)
    return report
