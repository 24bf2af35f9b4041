"""Samplers and the resumable training loader.

Training resumes exactly (``--ckpt_path``): the clip order of an epoch is a permutation seeded by ``(seed, epoch)``,
each drawn clip carries its own augmentation seed (so a flip never depends on a worker's RNG), and the training
loader saves its position (epoch, batches done) in the checkpoint through Lightning's ``state_dict`` /
``load_state_dict`` protocol for stateful loaders. The epoch whose order is drawn is the trainer's
``current_epoch`` when the loader is iterated, not the number Lightning passes to ``set_epoch`` (after a resume from
an end-of-epoch checkpoint Lightning 2.6 calls ``set_epoch`` with a number one ahead of the epoch it trains, which
drew the order of the wrong epoch and made such resumes inexact). Evaluation loaders are split across processes
without padding, so that every frame is scored exactly once under DDP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

#: One training draw: ``(clip index, augmentation seed)``.
Draw = tuple[int, int]


class _Length:
    """A sized stand-in for a dataset (DistributedSampler only needs ``len``)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


class EpochSampler(DistributedSampler):
    """Training draws: a ``(seed, epoch)``-seeded permutation, split across ``num_replicas`` processes.

    A subclass of ``DistributedSampler`` so that Lightning keeps it under DDP instead of wrapping it (Lightning calls
    :meth:`set_epoch` at every epoch start). Like ``DistributedSampler`` it pads the permutation with its first
    draws so that every process takes the same number of steps (training only; the evaluation samplers never pad).

    Args:
        size: number of clips.
        num_replicas: processes (the world size).
        rank: this process.
        seed: base seed of the order and of the augmentation seeds.
        shuffle: permute the clips (False: in order, for debugging).
    """

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True) -> None:
        if size < 1:
            raise ValueError(f"Expected at least one training clip but got {size}")
        super().__init__(_Length(size), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.size = size
        self._skip = 0  # draws of the epoch ``_skip_epoch`` already consumed before a resume
        self._skip_epoch = 0
        #: When set (by :class:`ResumableLoader`), the epoch to draw is read from it at each iteration.
        self.epoch_source: Callable[[], int] | None = None

    def resume(self, epoch: int, draws_done: int) -> None:
        """Continue ``epoch`` after its first ``draws_done`` draws of this process (the rest of the epoch follows)."""
        if draws_done >= self.num_samples:  # the epoch was finished: the next one starts from its beginning
            epoch, draws_done = epoch + 1, 0
        self.epoch, self._skip_epoch, self._skip = epoch, epoch, max(0, draws_done)

    def draws(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(clip indices, augmentation seeds)`` of this process for ``epoch``, ``num_samples`` each."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        seeds = rng.integers(0, 2**62, size=self.size)  # tied to the clip's position in the epoch
        pad = self.total_size - self.size
        if pad:
            order = np.concatenate([order, np.resize(order, pad)])
            seeds = np.concatenate([seeds, np.resize(seeds, pad) + 1])
        return order[self.rank : self.total_size : self.num_replicas], seeds[
            self.rank : self.total_size : self.num_replicas
        ]

    def __iter__(self) -> Iterator[Draw]:
        if self.epoch_source is not None:
            self.epoch = int(self.epoch_source())
        order, seeds = self.draws(self.epoch)
        start = self._skip if self.epoch == self._skip_epoch else 0  # a resume position of another epoch is dropped
        self._skip = 0
        for index, seed in zip(order[start:].tolist(), seeds[start:].tolist()):
            yield int(index), int(seed)

    def __len__(self) -> int:
        return self.num_samples


class UnpaddedSampler(DistributedSampler):
    """Evaluation order split across processes without padding: process ``r`` takes items ``r, r + W, ...``.

    Every item is scored exactly once over all processes (``DistributedSampler`` would repeat some to even the
    processes out, which double-counts frames in a recall metric). Processes may take one step more than others;
    the metrics reduce sums, so this is harmless. A process left without an item (fewer items than processes) takes
    the index ``size + r``, which :class:`UnscoredPadding` serves as a copy of an item with no frame scored:
    Lightning skips the evaluation hooks of a process with no batch, and the others would then wait for it forever
    in the metric's reduction.
    """

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(_Length(size), num_replicas=num_replicas, rank=rank, shuffle=False)
        self.size = size
        self.num_samples = max(1, len(range(rank, size, num_replicas)))
        self.total_size = size

    def indices(self) -> list[int]:
        """This process's items (``[size + rank]``, an unscored padding item, when it has none)."""
        return list(range(self.rank, self.size, self.num_replicas)) or [self.size + self.rank]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return self.num_samples


class UnscoredPadding(Dataset):
    """An evaluation dataset (items: lists of frame samples ``{"image", "target"}``) that also serves the padding
    indices of :class:`UnpaddedSampler`: index ``len(dataset) + k`` is item ``k % len(dataset)`` with every slot's
    ``evaluate`` flag off, ``padding`` on and no ``unreadable`` record, so it is fed through the model but never
    scored nor written to a prediction file (and its validation loss is logged with weight 0)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # the wrapped dataset's attributes (frames, bad_frames, ...)
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        size = len(self.dataset)
        if index < size:
            return self.dataset[index]
        samples = self.dataset[(index - size) % size]
        for sample in samples:
            sample["target"]["evaluate"] = False
            sample["target"]["padding"] = True
            sample["target"].pop("unreadable", None)
        return samples


class StreamBatches(Dataset):
    """The batches of causal evaluation as items (``data.eval_scheme: causal``): item ``s`` is step ``s`` of
    :func:`~arn_lightning.data.clips.stream_steps`, the list of its clips (each a list of one frame sample), for a
    DataLoader with ``batch_size=None`` whose ``collate_fn`` batches a list of clips.

    The steps of one process must reach the model in order (the model caches each video's previous frames), which
    a DataLoader keeps with any number of workers. Indices past the wrapped dataset's end are its padding items
    (:class:`UnscoredPadding`).

    Args:
        dataset: an :class:`UnscoredPadding` evaluation dataset of single-frame clips.
        steps: per step, the dataset indices of its clips.
    """

    def __init__(self, dataset: Any, steps: list[list[int]]) -> None:
        if not steps or any(not step for step in steps):
            raise ValueError(f"Expected at least one step and no empty step but got {len(steps)} steps")
        self.dataset = dataset
        self.steps = steps

    def __len__(self) -> int:
        return len(self.steps)

    def __getattr__(self, name: str) -> Any:  # the wrapped dataset's attributes (frames, bad_frames, ...)
        if name in ("dataset", "steps"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> list[Any]:
        return [self.dataset[i] for i in self.steps[index]]


class ResumableLoader(DataLoader):
    """The training ``DataLoader`` whose position is saved in Lightning checkpoints.

    Its ``sampler`` must be an :class:`EpochSampler`. ``batches_done`` is a callable giving the number of batches
    the training loop has finished in the current epoch (the data module reads it from the trainer): the loader
    itself cannot count them, since Lightning fetches one batch ahead. ``current_epoch`` gives the epoch being
    trained (the trainer's ``current_epoch``); without it the sampler follows ``set_epoch``.
    """

    def __init__(
        self,
        *args: Any,
        batches_done: Callable[[], int] | None = None,
        current_epoch: Callable[[], int] | None = None,
        generator_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        # Worker seeds come from this generator, never from the global RNG (whose state the checkpoint restores).
        kwargs.setdefault("generator", torch.Generator().manual_seed(generator_seed))
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochSampler):
            raise TypeError(f"Expected an EpochSampler but got {type(self.sampler).__name__}")
        self.batches_done = batches_done
        self.sampler.epoch_source = current_epoch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches_done", "batch_size", "world_size"}`` of the training loop's position (batches done
        by each of ``world_size`` processes)."""
        done = int(self.batches_done()) if self.batches_done is not None else 0
        epoch = self.sampler.epoch_source() if self.sampler.epoch_source is not None else self.sampler.epoch
        return {
            "epoch": int(epoch),
            "batches_done": done,
            "batch_size": int(self.batch_size or 1),
            "world_size": int(self.sampler.num_replicas),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after the saved position (the next epoch when the saved one was finished).

        Raises:
            KeyError: the state lacks ``epoch``, ``batches_done`` or ``batch_size``.
            CheckpointError: another batch size, or another world size (naming both): the processes split an
                epoch's draws by stride, and Lightning's own loop position counts batches per process, so neither
                can be carried over to another number of processes. A state without ``world_size`` (written before
                it was saved) counts as one of this world size.
        """
        from arn_lightning.checkpoint_file import CheckpointError

        missing = {"epoch", "batches_done", "batch_size"} - set(state)
        if missing:
            raise KeyError(f"Expected a training loader state with {sorted(missing)} but got {sorted(state)}")
        if int(state["batch_size"]) != self.batch_size:
            raise CheckpointError(
                f"Expected to resume with the checkpoint's batch size {state['batch_size']} but the data module "
                f"has batch_size={self.batch_size}; resuming exactly needs the same batch size"
            )
        saved_world, world = int(state.get("world_size", self.sampler.num_replicas)), self.sampler.num_replicas
        if saved_world != world:
            raise CheckpointError(
                f"Expected to resume epoch {state['epoch']} on the checkpoint's {saved_world} process(es) but this "
                f"run has {world}: each process resumes its own share of the epoch's draws, which another number of "
                f"processes splits differently (draws would be skipped or repeated); resume on {saved_world} "
                f"process(es)"
            )
        draws_done = int(state["batches_done"]) * int(state["batch_size"])
        self.sampler.resume(int(state["epoch"]), draws_done)
