"""A trained model as a folder you can share: ``model.safetensors`` + ``config.json`` + ``README.md`` (the model
card), written by ``arn-lightning export --format safetensors`` (:mod:`arn_lightning.training.model_folder`) and
read by the builder (:func:`arn_lightning.build.read_model_source`) wherever a checkpoint is taken.

* ``model.safetensors``: the weights of the model and its postprocess under the keys of the ``ARNLitModule``
  ``state_dict`` (``model.*``, ``postprocess.*``), in the safetensors format: tensors and a JSON header, nothing
  that runs when it is read (a checkpoint is a pickle).
* ``config.json``: everything the model and its postprocess need (:data:`FORMAT`, :data:`FORMAT_VERSION`): the
  architecture (``arch``), the postprocess (``post``), the triplet vocabulary (``triplet_categories``) with the
  class names of :mod:`arn_lightning.vocab`, the input transform (``transform``), the remaining training settings
  (``training``, with the data module's ``data_settings``, so that ``validate`` / ``test`` rebuild the same
  Lightning module) and the source checkpoint's
  name, epoch, step and SHA-256.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from arn_lightning.checkpoint_file import CheckpointError
from arn_lightning.vocab import OBJECT_CLASSES, PREDICATES

#: ``config.json``'s ``format`` and ``format_version`` (another version is refused with a clear message).
FORMAT = "arn-lightning-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
#: Hyperparameters stored at the top of ``config.json`` (the rest goes under ``training``).
MODEL_KEYS = ("arch", "post", "triplet_categories")
#: Keys ``config.json`` must hold.
REQUIRED_KEYS = ("format", "format_version", *MODEL_KEYS, "transform", "training", "checkpoint")


def to_json(value: Any) -> Any:
    """``value`` with tuples as lists (JSON's types), refused if it holds anything JSON cannot store exactly.

    Raises:
        TypeError: a value that is not a JSON scalar, list, tuple or string-keyed mapping.
    """
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f"Expected string keys but got {sorted(map(repr, value))[:5]}")
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"Expected a JSON value but got a {type(value).__name__}: {value!r}")


def folder_config(hparams: Mapping[str, Any], transform: Mapping[str, Any], checkpoint: Mapping[str, Any]) -> dict:
    """``config.json``'s contents for a module's (plain) hyperparameters, its resolved input ``transform`` and the
    source ``checkpoint``'s identity (``name``, ``sha256``, ``epoch``, ``global_step``)."""
    training = {key: value for key, value in hparams.items() if key not in MODEL_KEYS}
    return to_json(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **{key: hparams.get(key) for key in MODEL_KEYS},
            "vocabulary": {"predicates": list(PREDICATES), "objects": list(OBJECT_CLASSES)},
            "transform": dict(transform),
            "training": training,
            "checkpoint": dict(checkpoint),
        }
    )


def read_config(folder: Path) -> dict[str, Any]:
    """The checked ``config.json`` of a model folder.

    Raises:
        CheckpointError: the file is missing, unreadable, of another format or version, or lacks a key.
    """
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"Expected a checkpoint file or a model folder of arn-lightning export (with {CONFIG_FILE} and "
            f"{WEIGHTS_FILE}) but {folder} is a directory without {CONFIG_FILE}"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{path}: Expected the JSON settings of a model folder but reading failed: {error}"
        ) from error
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{path}: Expected format {FORMAT!r} but got {got!r}")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: Expected format version {FORMAT_VERSION} but got {config.get('format_version')!r}; export the "
            "model again with this version of arn-lightning"
        )
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise CheckpointError(f"{path}: Expected {list(REQUIRED_KEYS)} but {missing} are missing")
    return config


def read_model_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(hyperparameters, state dict)`` of a model folder: the module's hyperparameters rebuilt from
    ``config.json`` (``data_settings``, when the module stored none, is its ``transform``) and the tensors of
    ``model.safetensors`` (CPU).

    Raises:
        CheckpointError: a missing or unreadable ``config.json`` (:func:`read_config`) or weights file.
    """
    config = read_config(folder)
    hparams = {"data_settings": config["transform"], **config["training"], **{key: config[key] for key in MODEL_KEYS}}
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"Expected the weights of the model folder {folder} in {path} but there is no such file")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: Expected safetensors weights but reading failed: {error}") from error
    return hparams, state


__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "folder_config",
    "read_config",
    "read_model_folder",
    "to_json",
]
