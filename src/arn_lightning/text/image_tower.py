"""The frozen CLIP image tower, the distillation target (``docs/model.md`` section 4).

:class:`FrozenClipImageEncoder` embeds the frames of a batch for the distillation loss; it is invisible to
``state_dict()``, ``parameters()`` and the optimizer, stays in eval mode, and can cache the frames' embeddings on
disk (``ClipConfig.image_cache``), keyed by what determines them: the frame's values as fed (so an image changed under
the same frame key, or another view of it, gets its own entry), the preprocessing and the CLIP model and weights
(:func:`arn_lightning.text.clip.model_identity`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD
from torch import Tensor, nn

from arn_lightning.text.cache import atomic_save, cache_root, stable_hash
from arn_lightning.text.clip import create_clip, model_identity
from arn_lightning.text.config import ClipConfig

log = logging.getLogger(__name__)


def _valid_extent(mask: Tensor) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (exclusive ends) of the True pixels of a ``[H, W]`` mask."""
    rows = mask.any(dim=1).nonzero().flatten()
    cols = mask.any(dim=0).nonzero().flatten()
    if rows.numel() == 0:
        raise ValueError("Expected every frame's pixel_mask to have valid (True) pixels but got an empty mask")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _fit(image: Tensor, size: tuple[int, int], mode: str, fill: Tensor | None = None) -> Tensor:
    """Resize a ``[3, h, w]`` image in [0, 1] to ``[3, *size]``: shorter side + centre crop (``center_crop``), the
    whole frame stretched (``squash``), or the whole frame with its aspect ratio, longer side to the size and the rest
    filled with ``fill`` ``[3, 1, 1]`` (``letterbox``; default 0.5 grey), centred."""
    height, width = image.shape[-2:]
    if mode == "squash":
        target = size
    elif mode == "letterbox":
        scale = min(size[0] / height, size[1] / width)
        target = (max(1, min(size[0], round(height * scale))), max(1, min(size[1], round(width * scale))))
    else:
        scale = max(size[0] / height, size[1] / width)
        target = (max(size[0], round(height * scale)), max(size[1], round(width * scale)))
    resized = F.interpolate(image[None], size=target, mode="bicubic", align_corners=False, antialias=True)[0]
    if mode == "letterbox":
        canvas = (image.new_full((3, 1, 1), 0.5) if fill is None else fill.to(image)).expand(3, *size).clone()
        top, left = (size[0] - target[0]) // 2, (size[1] - target[1]) // 2
        canvas[:, top : top + target[0], left : left + target[1]] = resized
        return canvas.clamp(0.0, 1.0)  # [3, *size]
    top, left = (target[0] - size[0]) // 2, (target[1] - size[1]) // 2
    return resized[:, top : top + size[0], left : left + size[1]].clamp(0.0, 1.0)  # [3, *size]


def _read_entry(path: Path) -> Tensor | None:
    """The cached embedding in ``path``; None when absent, or unreadable (a damaged file is warned about, naming it,
    and computed again)."""
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... on a damaged file
        log.warning(
            "%s: Expected a cached CLIP image embedding but it cannot be read (%s); computing it again", path, error
        )
        return None
    if not isinstance(entry, Tensor) or entry.dim() != 1:
        log.warning("%s: Expected a cached CLIP image embedding [E] but got %s; computing it again", path, type(entry))
        return None
    return entry


class FrozenClipImageEncoder(nn.Module):
    """The CLIP image tower, frozen, for the distillation target (``docs/model.md`` section 4).

    The tower is held outside PyTorch's module registry: it has no entry in ``state_dict()`` (so Lightning
    checkpoints of a parent module neither contain nor expect it), in ``parameters()`` (so no optimizer sees it) or
    in ``train()`` (it stays in eval mode). ``.to()`` / ``.cuda()`` / ``.half()`` still move it.

    Args:
        config: which CLIP (weights loaded by :func:`arn_lightning.text.clip.create_clip`).
        cache_dir: overrides ``config.cache_dir`` for the per-frame embedding cache (used when
            ``config.image_cache`` is on).
        input_mean: per-channel mean that normalised ``pixel_values`` (ImageNet by default).
        input_std: per-channel std that normalised ``pixel_values``.
    """

    def __init__(
        self,
        config: ClipConfig,
        cache_dir: str | None = None,
        input_mean: Sequence[float] = IMAGENET_MEAN,
        input_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.config = config
        clip_model = create_clip(config)
        preprocess = open_clip.get_model_preprocess_cfg(clip_model)
        size = preprocess["size"]
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        object.__setattr__(self, "_tower", clip_model.visual)  # not a registered submodule, on purpose
        self.register_buffer("input_mean", torch.tensor(input_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(input_std).view(3, 1, 1), persistent=False)
        self.register_buffer("clip_mean", torch.tensor(preprocess["mean"]).view(3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(preprocess["std"]).view(3, 1, 1), persistent=False)
        identity = {
            "clip": model_identity(config),
            "resize": config.image_resize,
            "size": self.image_size,
            "input_mean": [float(v) for v in input_mean],  # how pixel_values map back to the image
            "input_std": [float(v) for v in input_std],
        }
        self.cache_path = cache_root(config, cache_dir) / "image" / stable_hash(identity)

    @property
    def tower(self) -> nn.Module:
        """The frozen open_clip image tower (read only)."""
        return self._tower

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> FrozenClipImageEncoder:
        self._tower._apply(fn)
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True) -> FrozenClipImageEncoder:
        """Set this module's flag; the tower itself always stays in eval mode."""
        super().train(mode)
        self._tower.eval()
        return self

    def preprocess(self, pixel_values: Tensor, pixel_mask: Tensor) -> Tensor:
        """CLIP input ``[BT, 3, S, S]``: undo the input normalisation, crop the valid region, resize, normalise."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"Expected pixel_values [BT, 3, H, W] but got {tuple(pixel_values.shape)}")
        expected = (pixel_values.shape[0], *pixel_values.shape[2:])
        if tuple(pixel_mask.shape) != expected:
            raise ValueError(f"Expected pixel_mask {expected} but got {tuple(pixel_mask.shape)}")
        images = pixel_values.float() * self.input_std + self.input_mean  # [BT, 3, H, W] in [0, 1]
        crops = []
        for image, mask in zip(images, pixel_mask):
            top, bottom, left, right = _valid_extent(mask)
            fitted = _fit(image[:, top:bottom, left:right], self.image_size, self.config.image_resize, self.clip_mean)
            crops.append(fitted)  # a letterbox is filled with CLIP's mean colour: 0 after normalisation
        return (torch.stack(crops) - self.clip_mean) / self.clip_std  # [BT, 3, S, S]

    @torch.no_grad()
    def forward(self, pixel_values: Tensor, pixel_mask: Tensor) -> Tensor:
        """L2-normalised float32 CLIP image embeddings ``[BT, E]`` of ImageNet-normalised, padded frames.

        Args:
            pixel_values: ``[BT, 3, H, W]`` ImageNet-normalised, zero padded.
            pixel_mask: ``[BT, H, W]`` True on real pixels.
        """
        images = self.preprocess(pixel_values, pixel_mask)
        dtype = next(self._tower.parameters()).dtype
        features = self._tower(images.to(dtype))  # [BT, E]
        return F.normalize(features.float(), dim=-1)

    def _frame_file(self, pixels: Tensor, mask: Tensor) -> Path:
        """The cache file of one frame ``[3, H, W]`` / ``[H, W]``: named by the SHA-256 of its valid region's
        values and size (what the tower is fed, flips and resizing included) in a folder named by the CLIP model,
        its weights and the preprocessing (:attr:`cache_path`)."""
        top, bottom, left, right = _valid_extent(mask)
        crop = pixels[:, top:bottom, left:right].detach().to("cpu", torch.float32).contiguous()
        digest = hashlib.sha256(str(tuple(crop.shape)).encode() + crop.numpy().tobytes()).hexdigest()
        return self.cache_path / digest[:2] / f"{digest}.pt"

    @torch.no_grad()
    def embed(self, pixel_values: Tensor, pixel_mask: Tensor, frame_keys: Sequence[str]) -> Tensor:
        """Like :meth:`forward`, reading / writing the per-frame disk cache when ``config.image_cache`` is on.

        Args:
            pixel_values: ``[BT, 3, H, W]``.
            pixel_mask: ``[BT, H, W]``.
            frame_keys: ``BT`` frame keys (``"<VID>.mp4/<NNNNNN>.png"``), named in the log when entries are added.
                The cache is keyed by content, not by key: an image changed under the same key gets a new entry.

        Returns:
            ``[BT, E]`` float32 embeddings on ``pixel_values``' device.
        """
        if len(frame_keys) != pixel_values.shape[0]:
            raise ValueError(f"Expected {pixel_values.shape[0]} frame keys but got {len(frame_keys)}")
        if not self.config.image_cache:
            return self(pixel_values, pixel_mask)
        files = [self._frame_file(pixels, mask) for pixels, mask in zip(pixel_values, pixel_mask)]
        found = {i: entry for i, f in enumerate(files) if (entry := _read_entry(f)) is not None}
        missing = [i for i in range(len(files)) if i not in found]
        if missing:
            fresh = self(pixel_values[missing], pixel_mask[missing]).cpu()  # [M, E]
            for i, embedding in zip(missing, fresh):
                atomic_save(embedding.clone(), files[i])
                found[i] = embedding
            log.debug("cached the CLIP image embeddings of %s", [frame_keys[i] for i in missing])
        return torch.stack([found[i] for i in range(len(files))]).to(pixel_values.device)
