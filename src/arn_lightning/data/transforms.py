"""DETR-style clip transforms on ``uint8`` tensors: resize (shorter / longer side), horizontal flip, normalisation.

Everything stays ``uint8`` until the collate writes the padded batch: resizing ``uint8`` tensors uses torchvision's
vectorised ``uint8`` path and moves four times fewer bytes than ``float32``. A clip is flipped as a whole (all its
frames and boxes, one decision). Action Genome's spatial predicates (above, beneath, in front of, behind, on the
side of, in) do not depend on left and right, so a flip changes no label.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
DEFAULT_SHORTER = 600
DEFAULT_LONGER = 1000
#: Largest value of a uint8 pixel, the scale between uint8 images and [0, 1] floats.
UINT8_MAX = 255.0


def resized_hw(height: int, width: int, shorter: int, longer: int) -> tuple[int, int]:
    """Output ``(height, width)``: the shorter side becomes ``shorter`` unless the longer side would exceed
    ``longer``, in which case the longer side becomes ``longer`` (aspect ratio kept, DETR's rule)."""
    if shorter < 1 or longer < shorter:
        raise ValueError(f"Expected 1 <= shorter <= longer but got shorter={shorter}, longer={longer}")
    scale = min(shorter / min(height, width), longer / max(height, width))
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def flip_boxes_xyxy(boxes_xyxy: Tensor, width: int, height: int) -> Tensor:
    """Mirror ``xyxy`` boxes of a ``width`` x ``height`` image left-right (``x -> width - x``)."""
    boxes = tv_tensors.BoundingBoxes(boxes_xyxy, format="XYXY", canvas_size=(height, width))
    return F.horizontal_flip(boxes).as_subclass(Tensor)


class ClipTransform:
    """Resize every frame of a clip and flip the whole clip with probability ``flip_prob``.

    Args:
        shorter: target length of the shorter image side (DETR: 800; ours: 600).
        longer: maximum length of the longer side.
        flip_prob: probability of a horizontal flip of the clip (0 for evaluation).
        generator: random generator of the flip decision (default: torch's global generator, seeded per
            DataLoader worker).
    """

    def __init__(
        self,
        shorter: int = DEFAULT_SHORTER,
        longer: int = DEFAULT_LONGER,
        flip_prob: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        resized_hw(1, 1, shorter, longer)
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"Expected flip_prob in [0, 1] but got {flip_prob}")
        self.shorter, self.longer, self.flip_prob = shorter, longer, flip_prob
        self.generator = generator

    def draw_flip(self, seed: int | None = None) -> bool:
        """Decide whether the next clip is flipped (``seed``: decide from this seed alone, reproducibly)."""
        if self.flip_prob <= 0.0:
            return False
        generator = torch.Generator().manual_seed(seed) if seed is not None else self.generator
        return bool(torch.rand(1, generator=generator).item() < self.flip_prob)

    def __call__(
        self, images: Sequence[Tensor], boxes_xyxy: Sequence[Tensor], flip: bool | None = None
    ) -> tuple[list[Tensor], list[Tensor], bool]:
        """Transform a clip.

        Args:
            images: per frame ``uint8 [3, H, W]``.
            boxes_xyxy: per frame ``float [K, 4]`` boxes in the frame's pixels.
            flip: force the flip decision (None: draw it with ``flip_prob``).

        Returns:
            ``(images, boxes_xyxy, flipped)``: resized (and flipped) ``uint8 [3, h, w]`` images, boxes in the
            resized pixels, and whether the clip was flipped.
        """
        if len(images) != len(boxes_xyxy):
            raise ValueError(
                f"Expected one box tensor per image but got {len(images)} images and {len(boxes_xyxy)} box tensors"
            )
        flipped = self.draw_flip() if flip is None else flip
        out_images, out_boxes = [], []
        for image, boxes in zip(images, boxes_xyxy):
            height, width = image.shape[-2:]
            size = list(resized_hw(height, width, self.shorter, self.longer))
            boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))
            if size != [height, width]:
                image, boxes = F.resize(image, size, antialias=True), F.resize(boxes, size)
            if flipped:
                image, boxes = F.horizontal_flip(image), F.horizontal_flip(boxes)
            out_images.append(image)
            out_boxes.append(boxes.as_subclass(Tensor))
        return out_images, out_boxes, flipped


def normalize_into(
    dst: Tensor, image: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> None:
    """Write ``(image / 255 - mean) / std`` into ``dst`` in place (two passes, no temporary).

    The only home of the normalisation arithmetic: the collate runs it per image on the CPU, and
    :func:`arn_lightning.data.collate.normalize_batch` on a whole uint8 batch on its device. The two per-channel
    constants are computed on the CPU and copied to ``dst``'s device, so every device does the same three float ops
    (convert, subtract, multiply; each exactly rounded) and the result is bit-identical everywhere.

    Args:
        dst: ``float [..., 3, h, w]`` destination (typically a view into a padded batch), on any device.
        image: ``uint8 [..., 3, h, w]`` on ``dst``'s device.
        mean: per-channel mean of [0, 1] images.
        std: per-channel standard deviation of [0, 1] images.
    """
    shift = torch.tensor(mean, dtype=dst.dtype).mul_(UINT8_MAX).view(-1, 1, 1)  # [3, 1, 1]
    scale = torch.tensor(std, dtype=dst.dtype).mul_(UINT8_MAX).reciprocal_().view(-1, 1, 1)  # [3, 1, 1]
    if dst.device.type != "cpu":
        shift, scale = shift.to(dst.device), scale.to(dst.device)
    dst.copy_(image)
    dst.sub_(shift).mul_(scale)
