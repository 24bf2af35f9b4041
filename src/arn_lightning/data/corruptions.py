"""Image and video corruptions of evaluation frames for the robustness benchmark (docs/robustness.md).

Two groups, five severities each (1 mild .. 5 strong):

- **image** corruptions, one frame at a time: the ImageNet-C family (Hendrycks & Dietterich, ICLR 2019) and the
  weather corruptions sun glare and rain, all from ``albumentations`` (the ``robustness`` extra) with the severity
  constants of the ImageNet-C reference code (``imagecorruptions`` 1.1.2) where the two parametrise alike;
- **video** corruptions of a live source, on the whole clip: dropped frames, a frozen frame, and low-bit-rate H.264
  (an encode / decode round trip through PyAV).

Every draw is deterministic: the random generator of a frame is seeded from ``(seed, frame key, corruption,
severity)`` only (:func:`frame_seed`), so a corrupted frame is the same whatever the process, worker, batch or clip
order; a clip-level draw is seeded from its frames' keys. :class:`ClipCorruption` is what the data module applies to
the decoded ``uint8`` frames of an evaluation clip, before the resize (as a camera would deliver them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch import Tensor

SEVERITIES = (1, 2, 3, 4, 5)
#: Bits per pixel per frame of ``low_bitrate`` per severity (a 25 fps stream: 0.05 bpp at 320x240 is 96 kbit/s).
BITRATE_BPP = (0.1, 0.05, 0.03, 0.02, 0.01)
#: Frame rate the ``low_bitrate`` encoder is told (its rate control spends ``bpp * W * H * fps`` bits a second).
BITRATE_FPS = 25
#: Probability that a frame is not delivered (``frame_drop``) per severity.
DROP_PROBABILITY = (0.1, 0.2, 0.3, 0.4, 0.5)
#: Probability that a clip freezes (``frozen_frame``) per severity.
FREEZE_PROBABILITY = (0.1, 0.25, 0.4, 0.55, 0.7)


def require_albumentations() -> Any:
    """The ``albumentations`` module.

    Raises:
        ImportError: it is not installed, with the install command.
    """
    try:
        import albumentations
    except ImportError as exc:
        raise ImportError(
            "Expected the package albumentations for the image corruptions but it is not installed: "
            "pip install 'arn-lightning[robustness]' (or pip install 'albumentations==2.0.8')"
        ) from exc
    return albumentations


def _pick(values: Sequence[Any], severity: int) -> Any:
    return values[severity - 1]


# Each factory: (albumentations module, severity, image height, image width) -> a transform applied with p=1.
# Constants marked IN-C are those of the ImageNet-C reference code (imagecorruptions 1.1.2, corruptions.py).
_ImageFactory = Callable[[Any, int, int, int], Any]


def _gaussian_noise(A: Any, s: int, h: int, w: int) -> Any:
    std = _pick((0.08, 0.12, 0.18, 0.26, 0.38), s)  # IN-C: std of the noise on [0, 1] pixels
    return A.GaussNoise(std_range=(std, std), mean_range=(0.0, 0.0), per_channel=True, p=1.0)


def _shot_noise(A: Any, s: int, h: int, w: int) -> Any:
    scale = 1.0 / _pick((60, 25, 12, 5, 3), s)  # IN-C: photons per unit intensity; albumentations: its reciprocal
    return A.ShotNoise(scale_range=(scale, scale), p=1.0)


def _impulse_noise(A: Any, s: int, h: int, w: int) -> Any:
    amount = _pick((0.03, 0.06, 0.09, 0.17, 0.27), s)  # IN-C: fraction of pixels hit
    return A.SaltAndPepper(amount=(amount, amount), salt_vs_pepper=(0.5, 0.5), p=1.0)


def _defocus_blur(A: Any, s: int, h: int, w: int) -> Any:
    radius, alias = _pick(((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)), s)  # IN-C
    return A.Defocus(radius=(radius, radius), alias_blur=(alias, alias), p=1.0)


def _glass_blur(A: Any, s: int, h: int, w: int) -> Any:
    sigma, delta, iterations = _pick(((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)), s)  # IN-C
    return A.GlassBlur(sigma=sigma, max_delta=delta, iterations=iterations, mode="fast", p=1.0)


def _motion_blur(A: Any, s: int, h: int, w: int) -> Any:
    size = 2 * _pick((3, 5, 8, 12, 15), s) + 1  # IN-C kernel sigma -> odd line of 2 sigma + 1 px, any angle
    return A.MotionBlur(blur_limit=(size, size), angle_range=(0, 360), allow_shifted=False, p=1.0)


def _zoom_blur(A: Any, s: int, h: int, w: int) -> Any:
    top, step = _pick(((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)), s)  # IN-C's ranges
    return A.ZoomBlur(max_factor=(top, top), step_factor=(step, step), p=1.0)


def _snow(A: Any, s: int, h: int, w: int) -> Any:
    # At most 0.3: above it albumentations 2.0.8's texture snow overflows bright pixels (uint8 wrap-around to black).
    points = _pick((0.1, 0.15, 0.2, 0.25, 0.3), s)
    return A.RandomSnow(snow_point_range=(points, points), brightness_coeff=2.5, method="texture", p=1.0)


def _fog(A: Any, s: int, h: int, w: int) -> Any:
    coef = _pick((0.2, 0.35, 0.5, 0.65, 0.8), s)
    return A.RandomFog(fog_coef_range=(coef, coef), alpha_coef=0.08, p=1.0)


def _brightness(A: Any, s: int, h: int, w: int) -> Any:
    shift = _pick((0.1, 0.2, 0.3, 0.4, 0.5), s)  # IN-C (added to the value channel there, to every channel here)
    return A.RandomBrightnessContrast(brightness_limit=(shift, shift), contrast_limit=(0.0, 0.0), p=1.0)


def _contrast(A: Any, s: int, h: int, w: int) -> Any:
    factor = _pick((0.4, 0.3, 0.2, 0.1, 0.05), s)  # IN-C: blend towards the mean grey
    return A.ColorJitter(brightness=(1, 1), contrast=(factor, factor), saturation=(1, 1), hue=(0, 0), p=1.0)


def _elastic_transform(A: Any, s: int, h: int, w: int) -> Any:
    # IN-C: a uniform field of +-0.005 H pixels smoothed with sigma 0.01 H, times alpha; albumentations draws the field
    # in +-1, so its alpha is IN-C's alpha times 0.005 H (its sigma at least 1 pixel, albumentations' minimum).
    alpha = _pick((250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12), s) * 0.005 * h
    return A.ElasticTransform(alpha=alpha, sigma=max(1.0, 0.01 * h), noise_distribution="uniform", border_mode=4, p=1.0)


def _pixelate(A: Any, s: int, h: int, w: int) -> Any:
    scale = _pick((0.6, 0.5, 0.4, 0.3, 0.25), s)  # IN-C: box-downscale then nearest-upscale
    pair = {"downscale": 3, "upscale": 0}  # cv2.INTER_AREA, cv2.INTER_NEAREST
    return A.Downscale(scale_range=(scale, scale), interpolation_pair=pair, p=1.0)


def _jpeg_compression(A: Any, s: int, h: int, w: int) -> Any:
    quality = _pick((25, 18, 15, 10, 7), s)  # IN-C
    return A.ImageCompression(compression_type="jpeg", quality_range=(quality, quality), p=1.0)


def _sun_glare(A: Any, s: int, h: int, w: int) -> Any:
    radius = int(round(_pick((0.15, 0.2, 0.25, 0.3, 0.35), s) * max(h, w)))
    circles = _pick((2, 4, 6, 8, 10), s)
    return A.RandomSunFlare(
        flare_roi=(0.0, 0.0, 1.0, 0.5),
        src_radius=radius,
        num_flare_circles_range=(circles, circles),
        method="physics_based",
        p=1.0,
    )


def _rain(A: Any, s: int, h: int, w: int) -> Any:
    kind, brightness, blur = _pick(
        (("drizzle", 0.9, 3), ("default", 0.8, 3), ("heavy", 0.75, 5), ("heavy", 0.65, 5), ("torrential", 0.55, 7)), s
    )
    return A.RandomRain(rain_type=kind, brightness_coefficient=brightness, blur_value=blur, p=1.0)


#: The image corruptions: the 15 of ImageNet-C but frost (albumentations has none), then sun glare and rain.
IMAGE_CORRUPTIONS: dict[str, _ImageFactory] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
    "sun_glare": _sun_glare,
    "rain": _rain,
}
#: The video corruptions (a live source's faults), applied to the clip.
VIDEO_CORRUPTIONS = ("frame_drop", "frozen_frame", "low_bitrate")
CORRUPTIONS = (*IMAGE_CORRUPTIONS, *VIDEO_CORRUPTIONS)


def check_corruption(name: str, severity: int) -> None:
    """Check a corruption name and severity (cheap: imports nothing).

    Raises:
        ValueError: an unknown name or a severity outside 1..5, naming the allowed values.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"Expected a corruption in {', '.join(CORRUPTIONS)} but got {name!r}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"Expected a corruption severity in {list(SEVERITIES)} but got {severity!r}")


def frame_seed(seed: int, key: str, name: str, severity: int) -> int:
    """The 64-bit seed of one frame's corruption: SHA-256 of ``"seed|key|name|severity"`` (stable across processes,
    platforms and Python's hash randomisation)."""
    digest = hashlib.sha256(f"{seed}|{key}|{name}|{severity}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def codec_round_trip(frames: Sequence[np.ndarray], bits_per_second: int, fps: int = BITRATE_FPS) -> list[np.ndarray]:
    """Encode RGB frames with H.264 (libx264, one thread, no look-ahead) at ``bits_per_second`` and decode them.

    Args:
        frames: ``uint8 [H, W, 3]`` frames of one size.
        bits_per_second: target bit rate of the encoder's rate control.
        fps: frame rate the encoder budgets for.

    Returns:
        The decoded ``uint8 [H, W, 3]`` frames (odd sizes are edge-padded to even for 4:2:0 and cropped back).
    """
    import av

    height, width = frames[0].shape[:2]
    pad = ((0, height % 2), (0, width % 2), (0, 0))
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, fps), Fraction(fps)
    encoder.bit_rate = int(bits_per_second)
    encoder.options = {"threads": "1", "tune": "zerolatency"}
    packets = []
    for index, frame in enumerate(frames):
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.pad(frame, pad, mode="edge")), format="rgb24")
        picture.pts = index
        packets += encoder.encode(picture)
    packets += encoder.encode(None)
    decoder = av.CodecContext.create("h264", "r")
    decoded = [picture for packet in [*packets, None] for picture in decoder.decode(packet)]
    if len(decoded) != len(frames):
        raise RuntimeError(f"Expected {len(frames)} frames back from the H.264 round trip but got {len(decoded)}")
    return [picture.to_ndarray(format="rgb24")[:height, :width] for picture in decoded]


def delivered_slots(name: str, severity: int, seed: int, keys: Sequence[str]) -> list[int]:
    """Which slot's frame each slot of a clip shows under ``frame_drop`` or ``frozen_frame``.

    ``frame_drop``: every slot but the first is dropped with :data:`DROP_PROBABILITY` (a draw seeded by its own
    frame key) and shows the last delivered frame before it. ``frozen_frame``: with :data:`FREEZE_PROBABILITY` (a
    draw seeded by the clip's first key) the clip freezes at a slot drawn in ``0 .. T-2`` and every later slot shows
    that frame.

    Returns:
        ``T`` slot indices (``i`` itself for a delivered frame).
    """
    slots = list(range(len(keys)))
    if name == "frame_drop":
        probability = _pick(DROP_PROBABILITY, severity)
        for slot in slots[1:]:
            if np.random.default_rng(frame_seed(seed, keys[slot], name, severity)).random() < probability:
                slots[slot] = slots[slot - 1]
    elif name == "frozen_frame" and len(keys) > 1:
        rng = np.random.default_rng(frame_seed(seed, keys[0], name, severity))
        if rng.random() < _pick(FREEZE_PROBABILITY, severity):
            start = int(rng.integers(0, len(keys) - 1))
            slots[start + 1 :] = [start] * (len(keys) - start - 1)
    return slots


class ImageCorruption:
    """One image corruption at one severity, applied to ``uint8 [H, W, 3]`` frames; picklable (DataLoader workers
    build their albumentations transforms on first use).

    Args:
        name: a key of :data:`IMAGE_CORRUPTIONS`.
        severity: 1..5.
        seed: the benchmark seed (with the frame key, the corruption and the severity, it seeds each frame's draw).

    Raises:
        ValueError: an unknown name or severity.
    """

    def __init__(self, name: str, severity: int, seed: int = 0) -> None:
        check_corruption(name, severity)
        if name not in IMAGE_CORRUPTIONS:
            raise ValueError(f"Expected an image corruption in {', '.join(IMAGE_CORRUPTIONS)} but got {name!r}")
        self.name, self.severity, self.seed = name, severity, seed
        self._transforms: dict[tuple[int, int], Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_transforms": {}}

    def __call__(self, image: np.ndarray, key: str) -> np.ndarray:
        """The corrupted copy of ``image`` (``uint8 [H, W, 3]``), drawn from the seed of ``key`` alone.

        Raises:
            ImportError: albumentations is not installed.
        """
        height, width = image.shape[:2]
        transform = self._transforms.get((height, width))
        if transform is None:
            transform = IMAGE_CORRUPTIONS[self.name](require_albumentations(), self.severity, height, width)
            self._transforms[(height, width)] = transform
        transform.set_random_seed(frame_seed(self.seed, key, self.name, self.severity))
        out = transform(image=np.ascontiguousarray(image))["image"]
        return np.asarray(out, dtype=np.uint8)


class ClipCorruption:
    """The corruption the data module applies to an evaluation clip's decoded frames (before the resize).

    Args:
        name: a corruption of :data:`CORRUPTIONS`.
        severity: 1..5.
        seed: the benchmark seed.

    Raises:
        ValueError: an unknown name or severity.
    """

    def __init__(self, name: str, severity: int, seed: int = 0) -> None:
        check_corruption(name, severity)
        self.name, self.severity, self.seed = name, severity, seed
        self.image = ImageCorruption(name, severity, seed) if name in IMAGE_CORRUPTIONS else None

    def __call__(self, images: Sequence[Tensor], keys: Sequence[str]) -> list[Tensor]:
        """Corrupt a clip.

        Args:
            images: ``T`` frames ``uint8 [3, H, W]``.
            keys: the ``T`` frame keys (``<video>/<frame>``), the seeds of the draws.

        Returns:
            ``T`` corrupted frames ``uint8 [3, H, W]`` (new tensors; the inputs are not changed).
        """
        if len(images) != len(keys):
            raise ValueError(f"Expected one key per frame but got {len(images)} frames and {len(keys)} keys")
        if self.image is not None:
            return [_to_chw(self.image(_to_hwc(image), key)) for image, key in zip(images, keys)]
        if self.name == "low_bitrate":
            return _low_bitrate(images, self.severity)
        return [images[slot].clone() for slot in delivered_slots(self.name, self.severity, self.seed, keys)]


def _to_hwc(image: Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).contiguous().numpy()


def _to_chw(image: np.ndarray) -> Tensor:
    """``uint8 [3, H, W]`` as a channels-last view, the layout :func:`arn_lightning.data.frames.read_frame` gives."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def _low_bitrate(images: Sequence[Tensor], severity: int) -> list[Tensor]:
    """The clip through :func:`codec_round_trip` at :data:`BITRATE_BPP` (frames of different sizes: one by one)."""
    sizes = {tuple(image.shape) for image in images}
    height, width = images[0].shape[-2:]
    bits = _pick(BITRATE_BPP, severity) * height * width * BITRATE_FPS
    if len(sizes) > 1:
        return [_low_bitrate([image], severity)[0] for image in images]
    return [_to_chw(frame) for frame in codec_round_trip([_to_hwc(image) for image in images], int(bits))]
