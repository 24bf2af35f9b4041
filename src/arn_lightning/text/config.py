"""Which CLIP to use and where its by-products are cached (:class:`ClipConfig`), importable without open_clip.

The loading of the weights is :mod:`arn_lightning.text.clip`, the text embeddings :mod:`arn_lightning.text.embeddings`
and the frozen image tower :mod:`arn_lightning.text.image_tower`; all three take a :class:`ClipConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Values of ``ClipConfig.image_resize`` (see :class:`arn_lightning.text.image_tower.FrozenClipImageEncoder`).
_IMAGE_RESIZE_MODES = ("center_crop", "letterbox", "squash")


@dataclass
class ClipConfig:
    """Which CLIP to load and where its by-products are cached.

    Attributes:
        clip_model: open_clip architecture name (``open_clip.list_models()``; ``"arn-tiny-clip"`` once
            :func:`arn_lightning.text.clip.register_tiny_clip` ran).
        clip_pretrained: an open_clip pretrained tag (``"openai"``), a local checkpoint file, or ``None`` for random
            weights (initialised with ``random_init_seed``, so that they are reproducible and cacheable).
        cache_dir: directory of the text / image embedding caches (``None``: ``~/.cache/arn_lightning/clip``).
        weights_dir: download cache of open_clip / Hugging Face hub for pretrained tags (``None``: their defaults).
        quick_gelu: force QuickGELU activations; ``None`` takes the pretrained tag's setting (OpenAI weights need
            QuickGELU: set it to true when ``clip_pretrained`` is a local OpenAI checkpoint file).
        random_init_seed: seed of the random weights when ``clip_pretrained`` is ``None``.
        image_cache: cache per-frame CLIP image embeddings on disk, keyed by the frame's values as fed to the
            tower (a flipped view is an entry of its own; an image changed under the same key is never served the
            old embedding), the preprocessing, and the CLIP model and weights.
        image_resize: fit of a frame's valid region to the tower's input: ``"center_crop"`` (CLIP's own
            preprocessing: shorter side to the input size, then a centre crop, which drops 44 % of a 16:9 frame),
            ``"letterbox"`` (the whole frame, aspect kept, longer side to the input size, the rest CLIP's mean
            colour; the paper configs) or ``"squash"`` (resize to the input size, aspect ratio not kept).
        text_batch_size: prompts encoded per forward pass of the text tower.
        network_timeout_s: seconds allowed to reach the hub (or the proxy) and for each answer of a download
            before declaring it unreachable.
    """

    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"
    cache_dir: str | None = None
    weights_dir: str | None = None
    quick_gelu: bool | None = None
    random_init_seed: int = 0
    image_cache: bool = False
    image_resize: str = "center_crop"
    text_batch_size: int = 256
    network_timeout_s: float = 3.0

    def __post_init__(self) -> None:
        if self.image_resize not in _IMAGE_RESIZE_MODES:
            raise ValueError(f"Expected image_resize in {_IMAGE_RESIZE_MODES} but got {self.image_resize!r}")
        if self.text_batch_size < 1:
            raise ValueError(f"Expected text_batch_size >= 1 but got {self.text_batch_size}")
        if self.network_timeout_s <= 0:
            raise ValueError(f"Expected network_timeout_s > 0 but got {self.network_timeout_s}")
