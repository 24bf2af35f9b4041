"""``AGDataModule``: Action Genome (or the synthetic AG) as a LightningDataModule of clips."""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from arn_lightning import vocab
from arn_lightning.data import ag
from arn_lightning.data.ag import AGAnnotations, FrameAnnotation, FrameList, load_annotations
from arn_lightning.data.clips import (
    EVAL_SCHEMES,
    WINDOWS,
    evaluation_clips,
    stream_steps,
    subsample_clips,
    subsample_videos,
    training_clips,
)
from arn_lightning.data.collate import ClipCollator
from arn_lightning.data.dataset import BAD_FRAME_MODES, AGClipDataset
from arn_lightning.data.frames import FrameError, find_missing_frames
from arn_lightning.data.samplers import (
    EpochSampler,
    ResumableLoader,
    StreamBatches,
    UnpaddedSampler,
    UnscoredPadding,
)
from arn_lightning.data.transforms import ClipTransform, resized_hw

log = logging.getLogger(__name__)
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
#: How many missing frame names a warning lists.
LISTED_FRAMES = 5


class AGDataModule(L.LightningDataModule):
    """Clips of an Action Genome root (docs/action_genome.md format) for training and evaluation.

    Args:
        root: dataset root with ``annotations/`` and ``frames/``.
        task: ``sgdet``, ``sgcls`` or ``predcls`` (sets the "filter small" default).
        clip_len: frames per clip ``T``.
        window: ``causal`` (key frame last) or ``centred`` (key frame in the middle) training windows.
        eval_scheme: ``tiled`` (non-overlapping windows, each frame scored once), ``causal`` (every frame the last
            of its own causal window, through the model's streaming step: ``eval_batch_size`` videos side by side,
            one frame of each per batch; the geometry of ``window: causal`` with ``loss.frames: key``) or
            ``keyframe`` (one clip per frame with the training window, only the key frame scored, each window
            recomputed).
        min_frames: keep a video only if at least this many frames survive the filtering.
        filter_small: drop object boxes with a short side below this (pixels); None: 16 for SGDet/SGCls, 0 PredCls.
        resize_shorter: shorter image side after resizing.
        resize_longer: maximum longer image side after resizing.
        flip_prob: probability of a horizontal flip of a training clip.
        batch_size: training clips per batch.
        eval_batch_size: evaluation clips per batch.
        num_workers: DataLoader worker processes.
        pin_memory: pin batches in page-locked memory.
        persistent_workers: keep workers alive between epochs (needs num_workers > 0).
        on_bad_frame: ``error``: a missing or corrupt frame image raises; ``skip``: warn, count, and leave it out.
        val_split: annotation split used for validation (AG has no separate val split: ``test``).
        predict_split: annotation split used by ``predict``.
        max_train_frames: train on at most this many key frames (seeded subset), None for all.
        max_eval_frames: evaluate at most this many frames (whole videos in a seeded order), None for all.
        seed: seed of the subsets.
        frames_dir: folder of the frames (default ``<root>/frames``).
        synthetic: if ``root`` has no annotations, generate the synthetic AG there first.
        synthetic_videos: videos of the generated synthetic AG.
        synthetic_frames: frames per video of the generated synthetic AG.
        corruption: corrupt every evaluation frame (``val``, ``test``, ``predict``) with this corruption of
            :mod:`arn_lightning.data.corruptions` (docs/robustness.md), its draws seeded by ``seed`` and the frame
            key; None (default): frames unchanged.
        corruption_severity: the corruption's severity, 1..5.
    """

    def __init__(
        self,
        root: str,
        task: str = "sgdet",
        clip_len: int = 3,
        window: str = "causal",
        eval_scheme: str = "tiled",
        min_frames: int = ag.DEFAULT_MIN_FRAMES,
        filter_small: float | None = None,
        resize_shorter: int = 600,
        resize_longer: int = 1000,
        flip_prob: float = 0.5,
        batch_size: int = 8,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        on_bad_frame: str = "error",
        val_split: str = "test",
        predict_split: str = "test",
        max_train_frames: int | None = None,
        max_eval_frames: int | None = None,
        seed: int = 0,
        frames_dir: str | None = None,
        synthetic: bool = False,
        synthetic_videos: int = 200,
        synthetic_frames: int = 8,
        corruption: str | None = None,
        corruption_severity: int = 3,
    ) -> None:
        super().__init__()
        if corruption is not None:
            from arn_lightning.data.corruptions import check_corruption

            check_corruption(corruption, corruption_severity)
        validate_data_options(
            task, clip_len, window, eval_scheme, on_bad_frame, batch_size, eval_batch_size, num_workers
        )
        resized_hw(1, 1, resize_shorter, resize_longer)  # raises on an invalid resize setting
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"Expected flip_prob in [0, 1] but got {flip_prob}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.frames_dir = Path(frames_dir) if frames_dir is not None else self.root / ag.FRAMES_DIR
        self._annotations: AGAnnotations | None = None
        self._videos: dict[str, dict[str, FrameList]] = {}
        self.datasets: dict[str, AGClipDataset] = {}
        #: split -> frame keys left out because their image is missing (``on_bad_frame="skip"``).
        self.skipped_frames: dict[str, list[str]] = {}

    # ----------------------------------------------------------------------------------------------- annotations
    def _ensure_synthetic(self) -> None:
        """Generate the synthetic AG at ``root`` when asked to and the root has no annotations.

        The data is written under a private name and renamed, so concurrent ranks never read a partial root; a rank
        that loses the rename race keeps the (identical, same seed) root of the winner.
        """
        marker = self.root / ag.ANNOTATION_DIR / ag.PERSON_FILE
        if not self.hparams.synthetic or marker.is_file():
            return
        from arn_lightning.data.synth import generate

        log.info("Generating the synthetic Action Genome in %s", self.root)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.gen-", dir=self.root.parent))
        try:
            generate(
                staging / "ag",
                videos=self.hparams.synthetic_videos,
                frames=self.hparams.synthetic_frames,
                seed=self.hparams.seed,
            )
            try:
                (staging / "ag").replace(self.root)
            except OSError:
                if not marker.is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @property
    def annotations(self) -> AGAnnotations:
        """The filtered annotations (read once, on first use)."""
        if self._annotations is None:
            self._ensure_synthetic()
            hp = self.hparams
            self._annotations = load_annotations(self.root, hp.task, hp.min_frames, hp.filter_small)
            log.info("Action Genome %s (%s):\n%s", self.root, hp.task, self._annotations.report.summary())
        return self._annotations

    @property
    def triplet_categories(self) -> dict[str, list[list[int]]]:
        """Sorted unique ``[predicate, object]`` pairs per predicate type in the train split (contract 3).

        Works before :meth:`setup` (LightningCLI links it into the model at instantiation).
        """
        return self.annotations.triplet_categories("train")

    @property
    def transform_settings(self) -> dict[str, Any]:
        """The frame settings a model trained on this data module must replay at inference (stored in checkpoints).

        ``resize_shorter`` / ``resize_longer`` of the evaluation transform and the clip shape (``clip_len``,
        ``window``); the normalisation is ImageNet's mean / std (the loaders send ``uint8`` batches,
        ``collate.normalize_batch`` normalises them on the device: ``ARNLitModule.on_after_batch_transfer``).
        """
        hp = self.hparams
        return {
            "resize_shorter": hp.resize_shorter,
            "resize_longer": hp.resize_longer,
            "clip_len": hp.clip_len,
            "window": hp.window,
        }

    @property
    def vocabulary(self) -> dict[str, list[str]]:
        """Class names: ``objects`` (index i is AG object index i, 0 background) and the predicates per type."""
        names = {"objects": vocab.object_names()}
        names.update({kind: list(vocab.TYPE_PREDICATES[kind]) for kind in vocab.PREDICATE_TYPES})
        return names

    def _split_name(self, split: str) -> str:
        """Annotation split of a dataloader split (``val`` / ``predict`` map to the configured splits)."""
        return {"val": self.hparams.val_split, "predict": self.hparams.predict_split}.get(split, split)

    def _usable_videos(self, split: str) -> dict[str, FrameList]:
        """Videos of an annotation split whose frame images exist (missing ones raise or are skipped)."""
        if split not in self._videos:
            if split not in self.annotations.splits:
                hp = self.hparams
                raise ValueError(
                    f"Expected the split {split!r} in data.root={self.root}, which has the splits "
                    f"{self.annotations.splits} after the {hp.task} filtering (min_frames "
                    f"{hp.min_frames}, filter_small {hp.filter_small}); check data.val_split / "
                    f"data.predict_split, and `arn-lightning stats --root {self.root}`"
                )
            videos = self.annotations.videos(split)
            keys = {v: fs.keys for v, fs in videos.items()}
            missing = set(find_missing_frames(self.frames_dir, [k for ks in keys.values() for k in ks]))
            if missing:
                self._report_missing(split, sorted(missing))
                videos = {
                    v: fs.take([i for i, k in enumerate(keys[v]) if k not in missing]) for v, fs in videos.items()
                }
            self._videos[split] = {v: fs for v, fs in videos.items() if len(fs)}
        return self._videos[split]

    def _report_missing(self, split: str, missing: list[str]) -> None:
        """Raise (``on_bad_frame="error"``) or warn about and record missing frame images."""
        listed = ", ".join(str(self.frames_dir / k) for k in missing[:LISTED_FRAMES])
        message = f"{len(missing)} frame image(s) of split {split!r} are missing or empty, e.g. {listed}"
        if self.hparams.on_bad_frame == "error":
            raise FrameError(
                f"Expected every annotated frame under {self.frames_dir} but {message} (run "
                f"`arn-lightning dump-frames`, or set on_bad_frame='skip')"
            )
        warnings.warn(f"Skipping {message}", RuntimeWarning, stacklevel=3)
        self.skipped_frames[split] = missing

    def _eval_videos(self, split: str) -> dict[str, FrameList]:
        """The videos (possibly subsampled by ``max_eval_frames``) evaluated for a dataloader split.

        With ``on_bad_frame="skip"`` a frame whose image is missing stays in the split: it is scored as a frame with
        no prediction (recall 0), as ``arn-lightning evaluate`` scores a frame missing from a prediction file."""
        videos = self._usable_videos(self._split_name(split))  # raises on missing images unless skipping
        if self.hparams.on_bad_frame == "skip":
            videos = self.annotations.videos(self._split_name(split))
        picked = subsample_videos(
            {v: list(range(len(fs))) for v, fs in videos.items()}, self.hparams.max_eval_frames, self.hparams.seed
        )
        return {v: videos[v].take(idx) for v, idx in picked.items()}

    def ground_truth(self, split: str) -> Sequence[FrameAnnotation]:
        """The frames scored in ``split`` (``val``, ``test``, ``predict`` or an annotation split name), in
        dataloader order: after the frame-image check and ``max_eval_frames`` (each built on access)."""
        return FrameList.concat(list(self._eval_videos(split).values()))

    # ---------------------------------------------------------------------------------------------- datasets
    def prepare_data(self) -> None:
        """Generate the synthetic AG if requested, and fail early on missing annotation files."""
        self._ensure_synthetic()
        for name in (ag.PERSON_FILE, ag.OBJECT_FILE, ag.OBJECT_CLASSES_FILE, ag.RELATIONSHIP_CLASSES_FILE):
            if not (self.root / ag.ANNOTATION_DIR / name).is_file():
                raise ag.AnnotationError(
                    f"Expected the annotation file {self.root / ag.ANNOTATION_DIR / name} but it does not exist"
                )

    def _build(self, split: str) -> AGClipDataset:
        """The dataset of a dataloader split: ``train`` (key-frame clips) or an evaluation split (tiled)."""
        hp = self.hparams
        videos = self._usable_videos("train") if split == "train" else self._eval_videos(split)
        frames = FrameList.concat(list(videos.values()))  # arrays: forked workers share them, no per-frame object
        groups, start = [], 0
        for fs in videos.values():
            groups.append(list(range(start, start + len(fs))))
            start += len(fs)
        if split == "train":
            clips = subsample_clips(training_clips(groups, hp.clip_len, hp.window), hp.max_train_frames, hp.seed)
            transform = ClipTransform(hp.resize_shorter, hp.resize_longer, hp.flip_prob)
        else:
            clips = evaluation_clips(groups, hp.clip_len, hp.window, hp.eval_scheme)
            transform = ClipTransform(hp.resize_shorter, hp.resize_longer, 0.0)
        if not clips:
            raise ValueError(
                f"Expected at least one {split} clip in split {self._split_name(split)!r} of "
                f"data.root={self.root} but got none: no frame image of the split is under "
                f"{self.frames_dir} (run `arn-lightning dump-frames`)"
            )
        corrupt = None
        if hp.corruption is not None and split != "train":
            from arn_lightning.data.corruptions import ClipCorruption

            corrupt = ClipCorruption(hp.corruption, hp.corruption_severity, hp.seed)
        train = split == "train"
        return AGClipDataset(frames, clips, self.frames_dir, transform, hp.on_bad_frame, train=train, corrupt=corrupt)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of ``stage`` (``fit``, ``validate``, ``test``, ``predict``; None: all)."""
        stages = [stage] if stage is not None else list(STAGE_SPLITS)
        for name in stages:
            if name not in STAGE_SPLITS:
                raise ValueError(f"Expected a stage in {list(STAGE_SPLITS)} but got {name!r}")
            for split in STAGE_SPLITS[name]:
                if split not in self.datasets:
                    self.datasets[split] = self._build(split)

    def _world(self) -> tuple[int, int]:
        """``(rank, world size)`` of the attached trainer (``(0, 1)`` without one)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _batches_done(self) -> int:
        """Training batches the attached trainer finished in the current epoch (the resume position)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        # An epoch cut short (limit_train_batches) is finished too: save a position past its end.
        return done if done < trainer.num_training_batches else len(self.datasets["train"])

    def _current_epoch(self) -> int:
        """The epoch the attached trainer trains (0 without one)."""
        trainer = getattr(self, "trainer", None)
        return int(trainer.current_epoch) if trainer is not None else 0

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"Expected setup() to have built the {split!r} dataset before its dataloader")
        hp = self.hparams
        rank, world = self._world()
        dataset = self.datasets[split]
        common = dict(
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
            collate_fn=ClipCollator(normalize=False),  # uint8: ARNLitModule normalises on the device
        )
        if split == "train":
            sampler = EpochSampler(len(dataset), num_replicas=world, rank=rank, seed=hp.seed, shuffle=shuffle)
            return ResumableLoader(
                dataset,
                batch_size=hp.batch_size,
                sampler=sampler,
                batches_done=self._batches_done,
                current_epoch=self._current_epoch,
                generator_seed=hp.seed,
                **common,
            )
        if hp.eval_scheme == "causal":
            return self._stream_loader(dataset, rank, world, common)
        # Evaluation: every frame exactly once over the processes (no DistributedSampler padding). Its own generator:
        # a loader without one draws its worker seed from the global RNG, so validating would shift the training's
        # random streams (dropout), and a run's weights would depend on the validation schedule and resume point.
        return DataLoader(
            UnscoredPadding(dataset),  # a process without a frame to score still takes part (samplers.py)
            batch_size=hp.eval_batch_size,
            shuffle=False,
            sampler=UnpaddedSampler(len(dataset), num_replicas=world, rank=rank),
            generator=torch.Generator().manual_seed(hp.seed),
            **common,
        )

    def _stream_loader(self, dataset: AGClipDataset, rank: int, world: int, common: dict[str, Any]) -> DataLoader:
        """Causal evaluation: this process's videos (every ``world``-th, from ``rank``), ``eval_batch_size`` of them
        side by side, one batch per step of :func:`~arn_lightning.data.clips.stream_steps`, in order."""
        videos: dict[int, list[int]] = {}
        for index, clip in enumerate(dataset.clips):
            videos.setdefault(clip.stream[0], []).append(index)
        mine = [videos[number] for number in sorted(videos)[rank::world]]
        steps = stream_steps(mine, self.hparams.eval_batch_size) or [[len(dataset) + rank]]  # padding: see samplers
        batches = StreamBatches(UnscoredPadding(dataset), steps)
        # A DistributedSampler over this process's own steps: Lightning keeps it under DDP instead of replacing it.
        sampler = UnpaddedSampler(len(batches))
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(batches, batch_size=None, sampler=sampler, generator=generator, **common)

    def train_dataloader(self) -> DataLoader:
        """Key-frame clips of the train split in a ``(seed, epoch)``-seeded order (resumable, see
        :mod:`arn_lightning.data.samplers`)."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Tiled clips of ``val_split`` (every frame scored once)."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Tiled clips of the test split."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Tiled clips of ``predict_split``."""
        return self._loader("predict", shuffle=False)


def validate_data_options(
    task: str = "sgdet",
    clip_len: int = 3,
    window: str = "causal",
    eval_scheme: str = "tiled",
    on_bad_frame: str = "error",
    batch_size: int = 8,
    eval_batch_size: int = 8,
    num_workers: int = 0,
) -> None:
    """Check the DataModule's options (the CLI calls it on the parsed config before building anything).

    Raises:
        ValueError: an option outside its allowed values, naming it.
    """
    checks = [
        (task in ag.TASKS, f"task in {list(ag.TASKS)}", task),
        (clip_len >= 1, "clip_len >= 1", clip_len),
        (window in WINDOWS, f"window in {list(WINDOWS)}", window),
        (eval_scheme in EVAL_SCHEMES, f"eval_scheme in {list(EVAL_SCHEMES)}", eval_scheme),
        (on_bad_frame in BAD_FRAME_MODES, f"on_bad_frame in {list(BAD_FRAME_MODES)}", on_bad_frame),
        (batch_size >= 1 and eval_batch_size >= 1, "batch sizes >= 1", (batch_size, eval_batch_size)),
        (isinstance(num_workers, int) and num_workers >= 0, "num_workers >= 0", num_workers),
    ]
    for ok, expected, got in checks:
        if not ok:
            raise ValueError(f"Expected {expected} but got {got!r}")
