"""The clip dataset: reads the frames of a clip, transforms them, and builds the per-frame targets.

An item is a list of ``T`` frame samples ``{"image": uint8 [3, h, w], "target": dict}``; the collate
(:mod:`arn_lightning.data.collate`) pads them into the batch of ARCHITECTURE.md section 2 (``uint8`` from the data
module's loaders, normalised on the device).

Unreadable frames with ``on_bad_frame="skip"`` (docs/runs.md): a slot whose frame cannot be read borrows the
nearest readable frame of its clip, is not trained on as itself and is not scored as itself. A training clip with no
readable frame at all is replaced by the next readable clip. In an evaluation split, a frame that should have been
scored but could not be read still counts, as a frame with no prediction (recall 0), exactly as ``arn-lightning
evaluate`` counts a frame missing from a prediction file: its slot's target carries ``"unreadable": {"reason": str,
"ground_truth": dict}`` (the metric ground truth of the frame); a clip with no readable frame is fed as black frames
of the annotated size, every slot unscored.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.ops import box_convert, clip_boxes_to_image

from arn_lightning import vocab
from arn_lightning.data.ag import FrameAnnotation
from arn_lightning.data.clips import Clip
from arn_lightning.data.frames import FrameError, frame_path, read_frame
from arn_lightning.data.transforms import ClipTransform, flip_boxes_xyxy

BAD_FRAME_MODES = ("error", "skip")


def build_target(
    frame: FrameAnnotation, boxes_xyxy: Tensor, size_hw: Sequence[int], flipped: bool, evaluate: bool
) -> dict[str, Any]:
    """Target dict of one frame (ARCHITECTURE.md section 2).

    Args:
        frame: the frame's ground truth.
        boxes_xyxy: ``[N+1, 4]`` the frame's boxes (person first) in the transformed image's pixels.
        size_hw: ``(h, w)`` of the transformed image, before padding.
        flipped: whether the image was flipped (the original-pixel boxes are flipped the same way).
        evaluate: whether this slot is scored.

    Returns:
        ``frame`` str, ``orig_size`` / ``size`` LongTensor [2] (h, w), ``evaluate`` bool, ``sub_boxes`` /
        ``obj_boxes`` FloatTensor [N, 4] normalised cxcywh, ``obj_labels`` LongTensor [N], ``attention`` [N, 3],
        ``spatial`` [N, 6], ``contacting`` [N, 17] LongTensor counts, ``boxes`` FloatTensor [N+1, 4] xyxy in
        original pixels, ``labels`` LongTensor [N+1].
    """
    h, w = int(size_hw[0]), int(size_hw[1])
    n = frame.num_objects
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    cxcywh = box_convert(clip_boxes_to_image(boxes_xyxy.float(), (h, w)), "xyxy", "cxcywh") / scale  # [N+1, 4]
    boxes = torch.from_numpy(frame.boxes_xyxy.copy())
    if flipped:
        boxes = flip_boxes_xyxy(boxes, frame.width, frame.height)
    return {
        "frame": frame.key,
        "orig_size": torch.tensor([frame.height, frame.width], dtype=torch.long),
        "size": torch.tensor([h, w], dtype=torch.long),
        "evaluate": bool(evaluate),
        "sub_boxes": cxcywh[:1].expand(n, 4).clone(),
        "obj_boxes": cxcywh[1:].clone(),
        "obj_labels": torch.from_numpy(frame.labels[1:].copy()),
        **{
            kind: torch.from_numpy(getattr(frame, kind).copy()).reshape(n, vocab.TYPE_SIZES[kind])  # [N, K]
            for kind in vocab.PREDICATE_TYPES
        },
        "boxes": boxes,
        "labels": torch.from_numpy(frame.labels.copy()),
    }


class AGClipDataset(Dataset):
    """Clips of AG frames.

    Args:
        frames: the frame annotations that clip indices point to.
        clips: the clips (see :mod:`arn_lightning.data.clips`).
        frames_dir: folder holding ``<VID>.mp4/<NNNNNN>.png``.
        transform: the clip transform (resize, flip).
        on_bad_frame: ``"error"`` raises :class:`FrameError` on an unreadable frame; ``"skip"`` warns, counts it in
            :attr:`bad_frames` (of this process) and handles it as the module docstring says.
        train: a training split (a clip with no readable frame is replaced by another clip instead of being fed as
            black frames).
        corrupt: applied to the decoded ``uint8 [3, H, W]`` frames of every clip with their frame keys, before the
            transform (the robustness benchmark, :class:`arn_lightning.data.corruptions.ClipCorruption`); None: off.
    """

    def __init__(
        self,
        frames: Sequence[FrameAnnotation],
        clips: Sequence[Clip],
        frames_dir: str | Path,
        transform: ClipTransform,
        on_bad_frame: str = "error",
        train: bool = False,
        corrupt: Callable[[list[Tensor], list[str]], list[Tensor]] | None = None,
    ) -> None:
        if on_bad_frame not in BAD_FRAME_MODES:
            raise ValueError(f"Expected on_bad_frame in {list(BAD_FRAME_MODES)} but got {on_bad_frame!r}")
        self.frames = list(frames)
        self.clips = list(clips)
        self.frames_dir = Path(frames_dir)
        self.transform = transform
        self.on_bad_frame = on_bad_frame
        self.train = train
        self.corrupt = corrupt
        self.bad_frames: list[str] = []
        self._reasons: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def _read(self, index: int) -> Tensor | None:
        """Decode frame ``index`` (None for a bad frame in "skip" mode)."""
        frame = self.frames[index]
        try:
            return read_frame(frame_path(self.frames_dir, frame.key), (frame.width, frame.height))
        except FrameError as exc:
            if self.on_bad_frame == "error":
                raise
            if index not in self._reasons:
                self.bad_frames.append(frame.key)
                warnings.warn(f"Skipping a bad frame: {exc}", RuntimeWarning, stacklevel=2)
            self._reasons[index] = str(exc)
            return None

    def _load_clip(self, clip: Clip) -> tuple | None:
        """Images, frame indices, evaluate flags and unreadable scored slots of a clip (a bad frame's slot borrows
        the nearest good one); None when no frame of the clip is readable."""
        decoded = {index: self._read(index) for index in dict.fromkeys(clip.frames)}
        good = [slot for slot, index in enumerate(clip.frames) if decoded[index] is not None]
        if not good:
            return None
        indices, flags, unreadable = [], [], {}
        for slot, index in enumerate(clip.frames):
            usable = decoded[index] is not None
            indices.append(index if usable else clip.frames[min(good, key=lambda g: abs(g - slot))])
            flags.append(clip.evaluate[slot] and usable)
            if clip.evaluate[slot] and not usable:
                unreadable[slot] = index
        return [decoded[i] for i in indices], indices, flags, unreadable, clip.key

    def _blank_clip(self, clip: Clip) -> tuple:
        """An evaluation clip none of whose frames is readable: black frames of the annotated size, none scored."""
        images = [torch.zeros(3, self.frames[i].height, self.frames[i].width, dtype=torch.uint8) for i in clip.frames]
        unreadable = {slot: index for slot, index in enumerate(clip.frames) if clip.evaluate[slot]}
        return images, list(clip.frames), [False] * len(clip.frames), unreadable, clip.key

    def _readable_clip(self, index: int) -> tuple:
        """The loaded clip ``index``; in a training split a clip with no readable frame is replaced by the next
        readable one (in clip order, wrapping), in an evaluation split fed as :meth:`_blank_clip`.

        Raises:
            FrameError: a training split none of whose clips has a readable frame.
        """
        loaded = self._load_clip(self.clips[index])
        if loaded is not None:
            return loaded
        if not self.train:
            return self._blank_clip(self.clips[index])
        for offset in range(1, len(self.clips)):
            loaded = self._load_clip(self.clips[(index + offset) % len(self.clips)])
            if loaded is not None:
                return loaded
        raise FrameError(
            f"Expected at least one readable frame among the {len(self.clips)} training clips under "
            f"{self.frames_dir} but none could be decoded (first: {self.bad_frames[:3]})"
        )

    def __getitem__(self, item: int | tuple[int, int]) -> list[dict[str, Any]]:
        """The ``T`` frame samples ``{"image": uint8 [3, h, w], "target": dict}`` of a clip.

        ``item`` is a clip index, or a training draw ``(clip index, augmentation seed)``
        (:class:`~arn_lightning.data.samplers.EpochSampler`) whose seed alone decides the random augmentation.
        """
        index, seed = item if isinstance(item, tuple) else (item, None)
        images, indices, flags, unreadable, key = self._readable_clip(index)
        boxes = [torch.from_numpy(self.frames[i].boxes_xyxy.copy()) for i in indices]
        if self.corrupt is not None:
            images = self.corrupt(images, [self.frames[i].key for i in indices])
        images, boxes, flipped = self.transform(images, boxes, flip=self.transform.draw_flip(seed))
        samples = [
            {"image": image, "target": build_target(self.frames[i], box, image.shape[-2:], flipped, flag)}
            for image, box, i, flag in zip(images, boxes, indices, flags)
        ]
        stream = self.clips[index].stream
        if stream is not None:  # causal evaluation: the frame's video and window (the model's streaming cache)
            samples[0]["target"]["stream"] = stream
        if key is not None:  # a training clip: its key frame (the loss may be restricted to it, loss.frames: key)
            for slot, sample in enumerate(samples):
                sample["target"]["key"] = slot == key
        for slot, frame_index in ({} if self.train else unreadable).items():
            samples[slot]["target"]["unreadable"] = {
                "reason": self._reasons.get(frame_index, "no readable frame in its clip"),
                "ground_truth": self.frames[frame_index].eval_target(),
            }
        return samples
