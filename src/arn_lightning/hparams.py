"""``ARNLitModule``'s configuration arguments as typed dataclasses, and the settings earlier versions stored.

Lightning-free, so that training (:mod:`arn_lightning.training.lit_module`) and inference
(:mod:`arn_lightning.inference.loading`) read a checkpoint's ``hyper_parameters`` with the same rules: a config is
a dataclass or a plain mapping, unknown keys are refused, and a key an earlier version stored and this one fixes
(:data:`RETIRED_HPARAMS`, ``docs/model.md`` section 6) is dropped when it holds the fixed value, refused otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from arn_lightning.models.config import ANY_VALUE, RETIRED_SETTINGS, drop_retired_settings

#: AdamW's betas (torch's and DETR's defaults).
ADAMW_BETAS = (0.9, 0.999)
#: Factor of the step decay of every learning rate after ``optim.lr_drop_epoch`` (DETR's).
LR_DROP_GAMMA = 0.1
#: Settings of earlier versions that are now constants or stored once (config name -> key -> the value it may hold).
RETIRED_HPARAMS: dict[str, dict[str, Any]] = {
    "arch": RETIRED_SETTINGS,
    "loss": {"distill": ANY_VALUE},  # followed arch.distill
    "post": {"task": ANY_VALUE},  # None, or arch.task
    "optim": {"lr_drop_gamma": LR_DROP_GAMMA, "betas": list(ADAMW_BETAS)},
}


def drop_retired_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """A module's hyperparameters (e.g. a checkpoint's) without the settings an earlier version stored and this one
    fixes (:data:`RETIRED_HPARAMS`); raises ``ValueError`` naming ``model.<config>.<key>`` where a retired key holds
    a value this version cannot reproduce."""
    result = dict(hparams)
    for name, retired in RETIRED_HPARAMS.items():
        if isinstance(result.get(name), Mapping):
            result[name] = drop_retired_settings(result[name], retired, f"model.{name}")
    return result


def as_config(cls: type, value: Any, name: str) -> Any:
    """``value`` as a ``cls`` dataclass: kept if it is one, built from a mapping (keys an earlier version stored are
    dropped, :data:`RETIRED_HPARAMS`).

    Raises:
        ValueError: a mapping with unknown keys, a retired key with a value this version cannot reproduce, or a value
            the dataclass refuses (the message names ``model.<name>``).
        TypeError: neither a ``cls`` nor a mapping.
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        value = drop_retired_settings(value, RETIRED_HPARAMS.get(name, {}), f"model.{name}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"Expected {name} keys among {sorted(known)} but got unknown {unknown}")
        try:
            return cls(**value)
        except (ValueError, TypeError) as error:  # name the setting: the message itself names the field
            raise ValueError(f"model.{name}: {error}") from error
    raise TypeError(f"Expected {name} as a {cls.__name__} or a mapping but got {type(value).__name__}")
