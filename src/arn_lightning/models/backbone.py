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

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

#: Supported torchvision ResNets.
BACKBONES = ("resnet18", "resnet34", "resnet50")
#: Normalisation layers of the trunk: DETR's frozen BatchNorm (pretrained trunks) or trainable BatchNorm (from scratch).
NORMS = {"frozen": FrozenBatchNorm2d, "batch": nn.BatchNorm2d}
#: Output stride -> the last stage kept.
STRIDE_STAGES: dict[int, str] = {32: "layer4", 16: "layer3"}
#: Stages in order; ``freeze_layers = k`` freezes the first k (the stem is ``conv1`` + ``bn1``).
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


class Backbone(nn.Module):
    """ResNet trunk returning one feature map and the downsampled pixel mask, with random weights: pretrained ones
    are loaded afterwards by the builder (:func:`arn_lightning.weights.resnet.load_backbone_weights`), so that
    building a model reads no file and opens no connection.

    Args:
        name: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
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
        self.name = name
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
