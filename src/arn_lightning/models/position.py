"""Fixed 2-D sine position encoding of a padded feature map (paper Sec. 3.1, ``p_e``).

The encoding follows DETR's normalised variant (idea credited to DETR, Carion et al. 2020): the running count of
real pixels along each axis is rescaled to ``[0, 2*pi]`` inside the real region of every image, so that padding does
not shift the encoding of real pixels, then mapped through sines and cosines of geometrically spaced frequencies.
Keeping DETR's exact formula lets a DETR checkpoint's encoder see the positions it was trained with.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

#: Guards the normalisation against a row or column without a real pixel.
_EPS = 1e-6


#: Temperature of the sine encoding (DETR's value; the paper does not change it).
TEMPERATURE = 10000.0


class SinePositionEncoding(nn.Module):
    """2-D sine / cosine position encoding of width ``hidden_dim`` (half for y, half for x).

    Args:
        hidden_dim: output width ``D``; a multiple of 4 (each axis gets ``D/2`` channels of sine / cosine pairs).
        temperature: base of the geometric frequency progression.
        normalize: rescale coordinates to ``[0, 2*pi]`` inside the real region of each image.
    """

    def __init__(self, hidden_dim: int, temperature: float = TEMPERATURE, normalize: bool = True) -> None:
        super().__init__()
        if hidden_dim <= 0 or hidden_dim % 4 != 0:
            raise ValueError(f"Expected hidden_dim to be a positive multiple of 4 but got {hidden_dim}")
        if temperature <= 1.0:
            raise ValueError(f"Expected temperature > 1 but got {temperature}")
        self.num_feats = hidden_dim // 2
        self.temperature = temperature
        self.normalize = normalize

    def forward(self, pixel_mask: Tensor) -> Tensor:
        """Encode every position of a padded feature map.

        Args:
            pixel_mask: ``[N, H, W]`` bool, True on real pixels, False on padding.

        Returns:
            ``[N, H, W, D]`` float32 encoding; channels ``[:D/2]`` encode y, ``[D/2:]`` encode x.
        """
        if pixel_mask.dim() != 3 or pixel_mask.dtype != torch.bool:
            raise ValueError(
                f"Expected a bool pixel_mask [N, H, W] but got {tuple(pixel_mask.shape)} of {pixel_mask.dtype}"
            )
        real = pixel_mask.to(torch.float32)
        y = real.cumsum(dim=1)  # [N, H, W]
        x = real.cumsum(dim=2)  # [N, H, W]
        if self.normalize:
            y = y / (y[:, -1:, :] + _EPS) * (2 * math.pi)
            x = x / (x[:, :, -1:] + _EPS) * (2 * math.pi)
        exponent = 2 * torch.div(torch.arange(self.num_feats, device=pixel_mask.device), 2, rounding_mode="floor")
        freqs = self.temperature ** (exponent.to(torch.float32) / self.num_feats)  # [D/2]
        pos_y = self._sin_cos(y[..., None] / freqs)  # [N, H, W, D/2]
        pos_x = self._sin_cos(x[..., None] / freqs)  # [N, H, W, D/2]
        return torch.cat((pos_y, pos_x), dim=-1)  # [N, H, W, D]

    @staticmethod
    def _sin_cos(angles: Tensor) -> Tensor:
        """Interleave sin of the even and cos of the odd channels: ``[..., F]`` -> ``[..., F]``."""
        return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)
