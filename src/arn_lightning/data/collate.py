"""Collate clips into the batch of ARCHITECTURE.md section 2: padded, normalised pixels plus an explicit mask."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import get_worker_info

from arn_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_into


def new_batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; inside a DataLoader worker it is allocated in shared memory directly, as
    ``default_collate`` does, so that sending the batch to the main process copies nothing."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=dtype).new(storage).view(shape)


class ClipCollator:
    """Pad every frame of a batch of clips to the largest frame and normalise it.

    Args:
        mean: per-channel mean of [0, 1] images (ImageNet by default).
        std: per-channel standard deviation of [0, 1] images.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"Expected 3 means and 3 positive stds but got mean={mean}, std={std}")
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, clips: Sequence[Sequence[dict[str, Any]]]) -> dict[str, Any]:
        """Build a batch.

        Args:
            clips: ``B`` clips, each a list of ``T`` samples ``{"image": uint8 [3, h, w], "target": dict}``.

        Returns:
            ``pixel_values`` FloatTensor [B, T, 3, H, W] (normalised, zero padded), ``pixel_mask``
            BoolTensor [B, T, H, W] (True on real pixels), ``targets``: list of ``B*T`` target dicts, frame-major
            (clip b frame t at ``b*T + t``).
        """
        if not clips:
            raise ValueError("Expected at least one clip but got an empty batch")
        clip_len = len(clips[0])
        if clip_len == 0 or any(len(clip) != clip_len for clip in clips):
            raise ValueError(f"Expected every clip to have {clip_len} > 0 frames but got {[len(c) for c in clips]}")
        samples = [sample for clip in clips for sample in clip]
        height = max(int(s["image"].shape[-2]) for s in samples)
        width = max(int(s["image"].shape[-1]) for s in samples)
        pixel_values = new_batch_tensor((len(samples), 3, height, width), torch.float32)  # [BT, 3, H, W]
        pixel_mask = new_batch_tensor((len(samples), height, width), torch.bool)  # [BT, H, W]
        for index, sample in enumerate(samples):
            image = sample["image"]
            if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(
                    f"Expected sample {index} to hold a uint8 [3, h, w] image but got "
                    f"{image.dtype} {tuple(image.shape)}"
                )
            h, w = image.shape[-2:]
            # Each pixel is written once: the image region normalised, the padding strips zeroed.
            normalize_into(pixel_values[index, :, :h, :w], image, self.mean, self.std)
            pixel_values[index, :, h:].zero_()
            pixel_values[index, :, :h, w:].zero_()
            pixel_mask[index].zero_()
            pixel_mask[index, :h, :w] = True
        batch, frames = len(clips), clip_len
        return {
            "pixel_values": pixel_values.view(batch, frames, 3, height, width),  # [B, T, 3, H, W]
            "pixel_mask": pixel_mask.view(batch, frames, height, width),  # [B, T, H, W]
            "targets": [s["target"] for s in samples],
        }


def collate_clips(clips: Sequence[Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """:class:`ClipCollator` with ImageNet statistics."""
    return ClipCollator()(clips)
