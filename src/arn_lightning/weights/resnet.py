"""Pretrained ResNet weights for the backbone (:class:`~arn_lightning.models.backbone.Backbone`), loaded after the
model is built (:func:`arn_lightning.build.load_pretrained`): torchvision's ImageNet weights from torch's hub cache
(downloaded there by :func:`arn_lightning.weights.download.fetch_weights` when absent and online), a registry name
(:mod:`arn_lightning.weights.registry`) or a local state-dict file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from arn_lightning.weights import registry
from arn_lightning.weights.download import fetch_weights

log = logging.getLogger(__name__)
#: ResNet stages after the one a backbone stops at (``backbone_stride`` 16 drops ``layer4``), by last kept stage.
DROPPED_STAGES: dict[str, tuple[str, ...]] = {"layer4": (), "layer3": ("layer4.",)}


def imagenet_weights_file(name: str) -> tuple[str, Path]:
    """``(url, local path)`` of torchvision's ``IMAGENET1K_V1`` weights of ``name``.

    The local path is where torchvision itself caches them, ``torch.hub.get_dir()/checkpoints/<file name>``
    (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), e.g. ``resnet50-0676ba61.pth``
    for ``resnet50``. A file placed there by hand is used without any network access.
    """
    url = torchvision.models.get_model_weights(name).IMAGENET1K_V1.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _load_imagenet_state(name: str, timeout_s: float | None = None) -> dict[str, Tensor]:
    """torchvision's ImageNet weights of ``name``: the hub-cache file, downloaded first if absent.

    The download honours ``ARN_OFFLINE`` / ``HF_HUB_OFFLINE``, ``ARN_DOWNLOAD_TIMEOUT`` and ``ARN_WEIGHTS_URL``
    (:func:`arn_lightning.weights.download.fetch_weights`) and checks the sha256 prefix of the file name.

    Raises:
        WeightsUnavailable: the file is absent and cannot be downloaded (offline, no answer in time, bad hash).
        ValueError: the file on disk is not a readable torch file.
    """
    url, path = imagenet_weights_file(name)
    file = fetch_weights(
        url,
        path.parent,
        path.name,
        what=f"the ImageNet weights of {name}",
        timeout_s=timeout_s,
        hint=", or set backbone_weights to a local torchvision state-dict file",
    )
    hint = f"; delete it to download it again, or replace it with the file from {url}"
    return registry.load_torch_file(file, f"a torchvision {name} state dict", hint=hint)


def _registered_file(name: str, weights: str) -> Path:
    """The verified file of the registry name ``weights`` (:mod:`arn_lightning.weights.registry`) for the ResNet
    ``name``.

    Raises:
        ValueError: the name is registered for another setting or another architecture.
        WeightsUnavailable: the file is absent and cannot be downloaded, or mismatches its hash.
    """
    entry = registry.get_entry(weights)
    if entry.setting != "backbone_weights" or entry.architecture != name:
        raise ValueError(
            f"Expected backbone_weights to name ImageNet weights of {name} but got {weights!r}, which are weights "
            f"of {entry.architecture} for {entry.setting}"
        )
    return registry.resolve(weights)


def _load_local_state(path: str | Path) -> dict[str, Tensor]:
    """A torchvision-layout ResNet state dict saved with ``torch.save`` (optionally under a ``state_dict`` key)."""
    file = Path(path).expanduser()
    if not file.is_file():
        names = [e.name for e in registry.list_entries() if e.setting == "backbone_weights"]
        raise FileNotFoundError(
            f"Expected backbone_weights to be None, 'imagenet', a registered name ({', '.join(names)}) or an "
            f"existing file but got {path}"
        )
    state = registry.load_torch_file(file, "a ResNet state dict saved with torch.save", "backbone_weights")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"Expected a state dict in {path} but got {type(state).__name__}")
    return state


def _read_state(name: str, weights: str) -> dict[str, Tensor]:
    """The state dict ``weights`` names for the ResNet ``name`` (``"imagenet"``, a registry name or a file)."""
    if weights == "imagenet":
        return _load_imagenet_state(name)
    if registry.is_registered(weights) and not Path(weights).expanduser().is_file():
        return _load_local_state(_registered_file(name, weights))
    return _load_local_state(weights)


def load_backbone_weights(backbone: nn.Module, weights: str | None) -> None:
    """Load ``weights`` (None: keep the random ones, ``"imagenet"``, a registry name such as
    ``"resnet50-imagenet"``, or a local ``.pth``) into a built :class:`~arn_lightning.models.backbone.Backbone`.

    ``"imagenet"`` uses the hub-cache file as torchvision does (a file placed there is trusted); a registry name
    (:mod:`arn_lightning.weights.registry`) uses the weights folder and checks the file against its published hash.
    The classifier (``fc.*``) and the stages the backbone drops (``layer4`` at stride 16) are ignored; any other
    missing, unexpected or mis-shaped key is an error. Draws no random number.

    Raises:
        WeightsUnavailable: ``"imagenet"`` whose file (:func:`imagenet_weights_file`) is absent and cannot be
            downloaded; the message names the file and the folder to place it in.
        FileNotFoundError: a local path that does not exist.
        ValueError: a file that is not a state dict of the backbone's ResNet (missing / unexpected / mis-shaped keys).
    """
    if weights is None:
        return
    name, body = backbone.name, backbone.body
    ignored = ("fc.", *DROPPED_STAGES[next(reversed(body.return_layers))])
    state = _read_state(name, weights)
    state = {k: v for k, v in state.items() if not k.startswith(ignored) and not k.endswith("num_batches_tracked")}
    own = {k: v for k, v in body.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(
            f"Expected a torchvision {name} state dict in {weights} but got missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]} and shape mismatches {mismatched[:5]}"
        )
    body.load_state_dict(state, strict=False)  # strict apart from the ignored keys
    log.info("loaded %s weights from %s", name, weights)


__all__ = ["imagenet_weights_file", "load_backbone_weights"]
