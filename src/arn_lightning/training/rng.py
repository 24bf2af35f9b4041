"""The global random states of a training run in its checkpoints, for an exact resume (docs/runs.md).

:func:`collect_rng_states` / :func:`restore_rng_states` turn the global random states of torch (CPU and CUDA), numpy
and Python into tensors and plain Python values and back; :class:`RandomStateCheckpoint` saves them as
``checkpoint["rng_states"]`` and restores them before the first training step after a resumed ``fit``.
``ARNLitModule.configure_callbacks`` attaches it, so it is there with the CLI and with a plain ``lightning.Trainer``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn

#: The checkpoint key that holds :func:`collect_rng_states` (the same key and format since the first checkpoints).
CHECKPOINT_KEY = "rng_states"


def collect_rng_states() -> dict[str, Any]:
    """The global random states of torch (CPU and CUDA), numpy and Python, as tensors and plain Python values only
    (a checkpoint holding them still loads with ``torch.load(weights_only=True)``).

    Returns:
        ``{"torch": ByteTensor, "torch.cuda": [ByteTensor per device] (empty without CUDA), "numpy": {"kind",
        "keys" LongTensor [624], "pos", "has_gauss", "cached_gaussian"}, "python": {"version", "state" LongTensor
        [625], "gauss"}}``; drawing nothing from any stream.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "torch.cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
    }


def restore_rng_states(states: Mapping[str, Any]) -> None:
    """Set the global random states saved by :func:`collect_rng_states` (CUDA ones only where CUDA is present).

    Raises:
        KeyError: ``states`` lacks ``"torch"``, ``"numpy"`` or ``"python"``.
    """
    torch.set_rng_state(states["torch"])
    if states.get("torch.cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])
    state = states["numpy"]
    np.random.set_state(
        (
            state["kind"],
            state["keys"].numpy().astype(np.uint32),
            state["pos"],
            state["has_gauss"],
            state["cached_gaussian"],
        )
    )
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))


class RandomStateCheckpoint(L.Callback):
    """Saves the global random states in every full checkpoint and restores them on a resumed ``fit``.

    Saving: ``checkpoint["rng_states"] = collect_rng_states()`` (the states at the save, drawing nothing). Lightning
    calls callbacks' ``on_save_checkpoint`` for full checkpoints only: a ``save_weights_only`` checkpoint, which
    cannot resume training, holds no random states.

    Restoring: ``trainer.fit(..., ckpt_path=...)`` hands the checkpoint to :meth:`on_load_checkpoint`; the states are
    set in :meth:`on_train_batch_start` of the first training batch (after the loops, optimisers and data loaders
    were restored), so the random streams (dropout, ...) continue where the checkpoint left them. A checkpoint
    without ``rng_states`` restores nothing. Under DDP every process restores the states rank 0 saved.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: Mapping[str, Any] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = collect_rng_states()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # validate / test / predict restore callbacks too, but only a resumed fit continues the random streams
        if trainer.state.fn == TrainerFn.FITTING:
            self._pending = checkpoint.get(CHECKPOINT_KEY)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is not None:
            restore_rng_states(self._pending)
            self._pending = None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # a resume that ended before its first step restores nothing into a later fit
            self._pending = None
