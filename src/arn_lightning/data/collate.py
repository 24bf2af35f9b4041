"""Collate clips into the batch of ARCHITECTURE.md section 2: padded pixels plus an explicit mask.

The data module's loaders send ``uint8`` pixels (a quarter of the bytes of ``float32`` through the workers' shared
memory, pinned memory and the host-to-device copy, and no float pass on the loader's CPU);
:func:`normalize_batch` turns them into the normalised ``float32`` batch on the device, bit-identical to the
collate's own normalisation (``ClipCollator(normalize=True)``, what inference uses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from arn_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_into

#: Batch keys holding pixels and their mask (ARCHITECTURE.md section 2).
PIXELS, MASK = "pixel_values", "pixel_mask"


def new_batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor of ``shape``, allocated where writing it first is cheapest.

    Inside a DataLoader worker it is allocated in shared memory directly, as ``default_collate`` does, so that
    sending the batch to the main process copies nothing. In the main process it is a numpy array seen as a tensor
    (no copy): numpy asks the kernel to back arrays of 4 MiB and more with transparent huge pages
    (``madvise(MADV_HUGEPAGE)``), so the first write into a fresh batch (tens to hundreds of MB at 600/1000) takes
    one page fault per 2 MiB instead of one per 4 KiB; with ``torch.empty`` those faults were the largest single
    cost of the input pipeline (docs/ARCHITECTURE.md, "Input pipeline throughput"). Values are unaffected.
    """
    if get_worker_info() is None:
        numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        return torch.from_numpy(np.empty(shape, dtype=numpy_dtype))
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=dtype).new(storage).view(shape)


class _TensorSlot:
    """Where a packed tensor goes back in the structure of :class:`BatchTargets` (index into its tensor list)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple:
        return _TensorSlot, (self.index,)


def _strip(value: Any, tensors: list[torch.Tensor]) -> Any:
    """``value`` with every plain dense CPU tensor inside (nested) dicts, lists and tuples replaced by a
    :class:`_TensorSlot`; anything else (subclasses of these containers included) is left to default pickling."""
    if (
        type(value) is torch.Tensor
        and value.device.type == "cpu"
        and value.layout == torch.strided
        and not value.requires_grad
    ):
        tensors.append(value)
        return _TensorSlot(len(tensors) - 1)
    if type(value) is dict:
        return {key: _strip(item, tensors) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_strip(item, tensors) for item in value)
    return value


def _fill(value: Any, tensors: Sequence[torch.Tensor]) -> Any:
    """Inverse of :func:`_strip`."""
    if isinstance(value, _TensorSlot):
        return tensors[value.index]
    if type(value) is dict:
        return {key: _fill(item, tensors) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_fill(item, tensors) for item in value)
    return value


def _unpack_targets(skeleton: list, packed: dict[torch.dtype, torch.Tensor], layout: list[tuple]) -> list:
    """Rebuild the target list pickled by :meth:`BatchTargets.__reduce__` (a plain ``list``; each tensor a view
    into the flat tensor of its dtype)."""
    tensors = [packed[dtype][start : start + math.prod(shape)].view(shape) for dtype, start, shape in layout]
    return _fill(skeleton, tensors)


class BatchTargets(list):
    """The ``targets`` list of a batch: a plain list, except when pickled.

    A DataLoader worker sends the batch to the main process by pickling it, and torch pickles every tensor through
    a shared-memory file of its own whose descriptor is handed over a socket: ~0.1-0.2 ms per tensor on each side,
    while a frame's target holds ten small tensors. Pickled, this list sends its tensors packed into one flat tensor
    per dtype (two or three per batch) and unpickles as a plain ``list`` of the same dicts, each tensor an equal
    (same dtype, shape and values) contiguous view into the flat tensor of its dtype.
    """

    def __copy__(self) -> BatchTargets:
        """A shallow copy (the same dicts), as for a list; ``copy.copy`` would otherwise go through pickling."""
        return BatchTargets(self)

    def __reduce__(self) -> tuple:
        tensors: list[torch.Tensor] = []
        skeleton = _strip(list(self), tensors)
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        sizes: dict[torch.dtype, int] = {}
        layout = []  # per tensor (dtype, offset in the flat tensor of its dtype, shape)
        for tensor in tensors:
            by_dtype.setdefault(tensor.dtype, []).append(tensor)
            layout.append((tensor.dtype, sizes.get(tensor.dtype, 0), tuple(tensor.shape)))
            sizes[tensor.dtype] = layout[-1][1] + tensor.numel()
        packed = {dtype: torch.cat([t.reshape(-1) for t in group]) for dtype, group in by_dtype.items()}
        return _unpack_targets, (skeleton, packed, layout)


class ClipCollator:
    """Pad every frame of a batch of clips to the largest frame and (by default) normalise it.

    Args:
        mean: per-channel mean of [0, 1] images (ImageNet by default); used when ``normalize`` is True.
        std: per-channel standard deviation of [0, 1] images.
        normalize: True: ``float32`` normalised pixels (inference, and anything that feeds the model directly).
            False: the ``uint8`` pixels, zero padded, for :func:`normalize_batch` to normalise on the device with
            the ImageNet statistics (the data module's loaders; ``ARNLitModule.on_after_batch_transfer``).
    """

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, normalize: bool = True
    ) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"Expected 3 means and 3 positive stds but got mean={mean}, std={std}")
        self.mean, self.std, self.normalize = tuple(mean), tuple(std), bool(normalize)

    def __call__(self, clips: Sequence[Sequence[dict[str, Any]]]) -> dict[str, Any]:
        """Build a batch.

        Args:
            clips: ``B`` clips, each a list of ``T`` samples ``{"image": uint8 [3, h, w], "target": dict}``.

        Returns:
            ``pixel_values`` [B, T, 3, H, W] (FloatTensor normalised, or ByteTensor with ``normalize=False``; zero
            padded), ``pixel_mask`` BoolTensor [B, T, H, W] (True on real pixels), ``targets``: list (a
            :class:`BatchTargets`) of ``B*T`` target dicts, frame-major (clip b frame t at ``b*T + t``).
        """
        pixel_values, pixel_mask = self.pixels([[sample["image"] for sample in clip] for clip in clips])
        return {
            PIXELS: pixel_values,  # [B, T, 3, H, W]
            MASK: pixel_mask,  # [B, T, H, W]
            "targets": BatchTargets(sample["target"] for clip in clips for sample in clip),
        }

    def pixels(self, clips: Sequence[Sequence[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The pixels of a batch without targets (what inference has): ``B`` clips of ``T`` uint8 ``[3, h, w]``
        images -> ``pixel_values`` [B, T, 3, H, W] (FloatTensor normalised, or with ``normalize=False`` the ByteTensor
        of the images; zero padded) and ``pixel_mask`` BoolTensor [B, T, H, W] (True on real pixels).

        The float pixels are contiguous. The ``uint8`` pixels are laid out channels-last in memory (strides
        ``(..., 1, 3W, 3)``), the layout the images are decoded and resized in, so that each image row is one
        contiguous copy (a channels-first batch made the copy a transposition, twice the CPU time);
        :func:`normalize_batch` writes contiguous floats, so the model's input is the same.

        Raises:
            ValueError: no clip, clips of different lengths, or an image that is not uint8 ``[3, h, w]``.
        """
        if not clips:
            raise ValueError("Expected at least one clip but got an empty batch")
        clip_len = len(clips[0])
        if clip_len == 0 or any(len(clip) != clip_len for clip in clips):
            raise ValueError(f"Expected every clip to have {clip_len} > 0 frames but got {[len(c) for c in clips]}")
        images = [image for clip in clips for image in clip]
        height = max(int(image.shape[-2]) for image in images)
        width = max(int(image.shape[-1]) for image in images)
        if self.normalize:
            pixel_values = new_batch_tensor((len(images), 3, height, width), torch.float32)  # [BT, 3, H, W]
        else:  # [BT, H, W, 3] in memory, seen as [BT, 3, H, W]
            pixel_values = new_batch_tensor((len(images), height, width, 3), torch.uint8).permute(0, 3, 1, 2)
        pixel_mask = new_batch_tensor((len(images), height, width), torch.bool)  # [BT, H, W]
        for index, image in enumerate(images):
            if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(
                    f"Expected sample {index} to hold a uint8 [3, h, w] image but got "
                    f"{image.dtype} {tuple(image.shape)}"
                )
            self._write_frame(pixel_values[index], pixel_mask[index], image)
        batch, frames = len(clips), clip_len
        return pixel_values.view(batch, frames, 3, height, width), pixel_mask.view(batch, frames, height, width)

    def _write_frame(self, values: torch.Tensor, mask: torch.Tensor, image: torch.Tensor) -> None:
        """Write one ``uint8 [3, h, w]`` image into its batch slot: ``values [3, H, W]`` and ``mask [H, W]``."""
        h, w = image.shape[-2:]
        # Each pixel is written once: the image region (normalised or copied), the padding strips zeroed.
        if self.normalize:
            normalize_into(values[:, :h, :w], image, self.mean, self.std)
        else:
            values[:, :h, :w].copy_(image)
        values[:, h:].zero_()
        values[:, :h, w:].zero_()
        mask[:h, :w] = True
        mask[h:] = False
        mask[:h, w:] = False


def normalize_batch(
    batch: dict[str, Any], mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> dict[str, Any]:
    """The batch with ``uint8`` pixels normalised to ``float32`` on their device, bit-identical to
    ``ClipCollator(mean, std)``'s batch: the same :func:`~arn_lightning.data.transforms.normalize_into` ops, then the
    padding (``pixel_mask`` False) set to exactly 0.0 (zero in normalised space, not the normalised value of a 0
    pixel).

    Args:
        batch: a batch of :class:`ClipCollator` (``pixel_values`` ``uint8 [..., 3, H, W]``, ``pixel_mask``
            ``bool [..., H, W]`` on the same device). A batch whose ``pixel_values`` are not ``uint8`` (already
            normalised) or that has none is returned as it is.
        mean: per-channel mean of [0, 1] images (ImageNet by default).
        std: per-channel standard deviation of [0, 1] images.

    Returns:
        A new dict with the same entries, ``pixel_values`` ``float32 [..., 3, H, W]`` on the input's device.

    Raises:
        ValueError: ``uint8`` pixels without a ``pixel_mask`` of their frame shape.
    """
    pixels = batch.get(PIXELS) if isinstance(batch, dict) else None
    if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8:
        return batch
    mask = batch.get(MASK)
    if not isinstance(mask, torch.Tensor) or pixels.dim() < 3 or mask.shape != pixels.shape[:-3] + pixels.shape[-2:]:
        shape = None if not isinstance(mask, torch.Tensor) else tuple(mask.shape)
        raise ValueError(
            f"Expected a pixel_mask of shape [..., H, W] for pixel_values {tuple(pixels.shape)} but got {shape}"
        )
    on_cpu = pixels.device.type == "cpu"
    if on_cpu:  # training on the CPU: huge-page memory, as the collate's (new_batch_tensor)
        values = new_batch_tensor(tuple(pixels.shape), torch.float32)  # [..., 3, H, W]
    else:
        values = torch.empty(pixels.shape, dtype=torch.float32, device=pixels.device)
    normalize_into(values, pixels, mean, std)
    # The padding: 0.0 after normalising, as the collate writes it. A CPU skips the pass when there is no padding
    # (asking would make a GPU wait for the batch).
    if not on_cpu or not bool(mask.all()):
        values.masked_fill_(~mask.unsqueeze(-3), 0.0)
    return {**batch, PIXELS: values}


def collate_clips(clips: Sequence[Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """:class:`ClipCollator` with ImageNet statistics."""
    return ClipCollator()(clips)
