"""ResNet backbone with frozen BatchNorm (paper Sec. 3.1, "Backbone"; DETR's recipe).

A torchvision ResNet built with :class:`torchvision.ops.FrozenBatchNorm2d` (batch statistics and affine parameters
are buffers: with clips of a few frames per GPU, batch statistics would be noise), truncated by
:class:`torchvision.models._utils.IntermediateLayerGetter` after the stage that gives the requested stride:

- ``stride=32``: the C5 features of ``layer4`` (the paper's setting);
- ``stride=16``: the C4 features of ``layer3``; ``layer4`` is dropped. This works for every ResNet (torchvision's
  basic-block ResNets cannot dilate ``layer4``), doubles the token grid for tiny inputs and halves the backbone's
  parameters; a DETR checkpoint then loads everything up to ``layer3`` (its ``layer4`` and ``input_proj`` are
  reported as unexpected / shape-mismatched).

The module is named ``body`` so that the parameter names equal DETR's ``backbone.0.body.*`` after one prefix swap.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

from arn_lightning.weights.download import fetch_weights

log = logging.getLogger(__name__)

#: Supported torchvision ResNets.
BACKBONES = ("resnet18", "resnet34", "resnet50")
#: Normalisation layers of the trunk: DETR's frozen BatchNorm (pretrained trunks) or trainable BatchNorm (from scratch).
NORMS = {"frozen": FrozenBatchNorm2d, "batch": nn.BatchNorm2d}
#: Output stride -> the last stage kept.
STRIDE_STAGES: dict[int, str] = {32: "layer4", 16: "layer3"}
#: Stages in order; ``freeze_layers = k`` freezes the first k (the stem is ``conv1`` + ``bn1``).
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


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
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file under the expected name
        raise ValueError(
            f"Expected a torchvision {name} state dict in {file} but it cannot be read ({type(err).__name__}: "
            f"{err}); delete it to download it again, or replace it with the file from {url}"
        ) from err


def _registered_file(name: str, weights: str) -> Path:
    """The verified file of the registry name ``weights`` (:mod:`arn_lightning.weights.registry`) for the ResNet
    ``name``.

    Raises:
        ValueError: the name is registered for another setting or another architecture.
        WeightsUnavailable: the file is absent and cannot be downloaded, or mismatches its hash.
    """
    from arn_lightning.weights import registry

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
        from arn_lightning.weights import registry

        names = [e.name for e in registry.list_entries() if e.setting == "backbone_weights"]
        raise FileNotFoundError(
            f"Expected backbone_weights to be None, 'imagenet', a registered name ({', '.join(names)}) or an "
            f"existing file but got {path}"
        )
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"Expected a state dict in {path} but got {type(state).__name__}")
    return state


def _is_registered(value: str) -> bool:
    from arn_lightning.weights import registry

    return registry.is_registered(value)


def load_resnet_weights(resnet: nn.Module, name: str, weights: str | None) -> None:
    """Load ``weights`` (None: keep random, ``"imagenet"``, a registry name such as ``"resnet50-imagenet"``, or a
    local ``.pth``) into a torchvision ResNet.

    ``"imagenet"`` uses the hub-cache file as torchvision does (a file placed there is trusted); a registry name
    (:mod:`arn_lightning.weights.registry`) uses the weights folder and checks the file against its published hash.

    The classifier (``fc.*``) is ignored; any other missing, unexpected or mis-shaped key is an error.

    Raises:
        WeightsUnavailable: ``"imagenet"`` whose file (:func:`imagenet_weights_file`) is absent and cannot be
            downloaded; the message names the file and the folder to place it in.
        FileNotFoundError: a local path that does not exist.
        ValueError: a file that is not a state dict of ``name`` (missing / unexpected / mis-shaped keys).
    """
    if weights is None:
        return
    if weights == "imagenet":
        state = _load_imagenet_state(name)
    elif _is_registered(weights) and not Path(weights).expanduser().is_file():
        state = _load_local_state(_registered_file(name, weights))
    else:
        state = _load_local_state(weights)
    state = {k: v for k, v in state.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    own = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(
            f"Expected a torchvision {name} state dict in {weights} but got missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]} and shape mismatches {mismatched[:5]}"
        )
    resnet.load_state_dict(state, strict=False)  # strict apart from the ignored fc.*
    log.info("loaded %s weights from %s", name, weights)


class Backbone(nn.Module):
    """ResNet trunk returning one feature map and the downsampled pixel mask.

    Args:
        name: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        weights: None (random), ``"imagenet"`` (torchvision ``IMAGENET1K_V1`` from torch's hub cache, downloaded
            there when absent and online: see :func:`imagenet_weights_file`, ``docs/weights.md``), a registry name
            (``"resnet50-imagenet"``: the same file, checked against its hash) or a local state-dict path.
        stride: output stride, 32 (``layer4``) or 16 (``layer3``).
        train_backbone: False freezes every backbone parameter.
        freeze_layers: number of leading stages of :data:`STAGES` frozen (2 = stem + ``layer1``, as DETR).
        norm: ``"frozen"`` (DETR: BatchNorm statistics and affine fixed, for pretrained weights) or ``"batch"``
            (trainable BatchNorm, for a trunk trained from random weights, where frozen BatchNorm is the identity
            and the residual activations grow unnormalised).
    """

    def __init__(
        self,
        name: str,
        weights: str | None,
        stride: int,
        train_backbone: bool,
        freeze_layers: int,
        norm: str = "frozen",
    ) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"Expected a backbone in {BACKBONES} but got {name!r}")
        if stride not in STRIDE_STAGES:
            raise ValueError(f"Expected backbone stride in {tuple(STRIDE_STAGES)} but got {stride}")
        if not 0 <= freeze_layers <= len(STAGES):
            raise ValueError(f"Expected freeze_layers in [0, {len(STAGES)}] but got {freeze_layers}")
        if norm not in NORMS:
            raise ValueError(f"Expected backbone norm in {tuple(NORMS)} but got {norm!r}")
        resnet = getattr(torchvision.models, name)(weights=None, norm_layer=NORMS[norm])
        load_resnet_weights(resnet, name, weights)
        last = STRIDE_STAGES[stride]
        # The channel count of the last kept stage: fc reads layer4; layer3 has half of it.
        self.num_channels = resnet.fc.in_features // (1 if last == "layer4" else 2)
        self.stride = stride
        self.body = IntermediateLayerGetter(resnet, return_layers={last: "features"})
        frozen = STAGES if not train_backbone else STAGES[:freeze_layers]
        for param_name, param in self.body.named_parameters():
            stage = param_name.split(".")[0]
            param.requires_grad_(("stem" if stage in ("conv1", "bn1") else stage) not in frozen)
        self.channels_last = False

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of the feature map of an ``height x width`` image: every stride-2 stage of the trunk rounds
        up (``ceil(size / 2)``, padding 1 / 3 with kernels 3 / 7), so ``h = ceil(height / stride)`` stage by stage."""
        for _ in range(self.stride.bit_length() - 1):  # log2(stride) halvings
            height, width = -(-height // 2), -(-width // 2)
        return height, width

    def use_channels_last(self) -> None:
        """Run the trunk in ``torch.channels_last`` memory format (NHWC: faster convolutions with cuDNN / oneDNN,
        notably under bf16 / fp16); the parameters keep their shapes and state-dict keys. Idempotent."""
        self.body.to(memory_format=torch.channels_last)
        self.channels_last = True

    def forward(self, images: Tensor, pixel_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Features of a batch of frames.

        Args:
            images: ``[N, 3, H, W]`` normalised images.
            pixel_mask: ``[N, H, W]`` bool, True on real pixels.

        Returns:
            ``(features [N, C, H/stride, W/stride], mask [N, H/stride, W/stride])``, mask True on real cells
            (nearest-neighbour downsampling of ``pixel_mask``).
        """
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.body(images)["features"]
        mask = F.interpolate(pixel_mask[:, None].float(), size=features.shape[-2:])  # [N, 1, h, w]
        return features, mask[:, 0].to(torch.bool)
