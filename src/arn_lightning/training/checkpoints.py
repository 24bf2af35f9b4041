"""Checkpoints that survive crashes, full disks and interruptions, and that are checked before they are trusted.

* :class:`AtomicCheckpointIO`: Lightning's checkpoint I/O, writing through a temporary file in the checkpoint's own
  folder that is renamed into place, so a crash, a kill or a full disk leaves the previous ``last.ckpt`` intact
  (Lightning's own writer serialises to memory and then writes the destination in place: a full disk truncates it).
  Loading verifies the file first (:func:`verify_checkpoint`).
* :func:`verify_checkpoint` (from :mod:`arn_lightning.checkpoint_file`): every member's CRC-32 checked, a truncated
  or altered file refused with its name.
* :class:`LastCheckpoint`: the run's latest state as ``last.ckpt``, saved at the end of every epoch and, whatever
  stops a run early (``max_steps``, ``max_time``, ``trainer.should_stop``, SIGTERM, SIGINT), at the training-batch
  boundary where it stops, so that ``--ckpt_path last.ckpt`` continues the same epoch at the same draw. A run stopped
  by a signal exits non-zero (:data:`EXIT_CODES`) after saving, so a scheduler tells a pre-empted run from a finished
  one. The rules are in ``docs/runs.md``.
"""

from __future__ import annotations

import errno
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from arn_lightning._types import PathLike
from arn_lightning.atomic import atomic_path
from arn_lightning.checkpoint_file import CheckpointError, is_local_path, load_checkpoint_file, verify_checkpoint

log = logging.getLogger(__name__)
#: Exit status of a run stopped by a signal after saving its checkpoint (the shell's 128 + signal number).
EXIT_CODES = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}


class RunInterrupted(SystemExit):
    """Raised after a signal stopped training and the resumable checkpoint was saved; its ``code`` is the exit
    status (:data:`EXIT_CODES`) and ``signal_name`` the signal."""

    def __init__(self, signal_name: str, checkpoint: str | None) -> None:
        super().__init__(EXIT_CODES[signal_name])
        self.signal_name = signal_name
        self.checkpoint = checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes atomically and verifies on load (module docstring).

    Remote (fsspec) paths fall back to Lightning's own writer and reader.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to a temporary file beside ``path``, flush it, and rename it to ``path``.

        Raises:
            OSError: the write failed (a full disk, for one); ``path`` keeps its previous contents.
        """
        if storage_options is not None or not is_local_path(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        try:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
        except (OSError, RuntimeError) as error:  # torch's C++ writer reports a full disk as a RuntimeError
            raise OSError(
                getattr(error, "errno", None) or errno.EIO,
                f"{path}: Expected to write the checkpoint but writing failed ({error}); the previous "
                f"version of the file, if any, is unchanged",
            ) from error

    def load_checkpoint(
        self,
        path: PathLike,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """:func:`verify_checkpoint`, then Lightning's loader (errors name the file).

        Raises:
            CheckpointError: see :func:`verify_checkpoint`, or the file does not unpickle.
        """
        verify_checkpoint(path)
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except (RuntimeError, EOFError, ValueError) as error:
            raise CheckpointError(f"{path}: Expected a Lightning checkpoint but loading failed: {error}") from error


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the latest state, saved every epoch and wherever a run stops early (module docstring).

    Takes ``ModelCheckpoint``'s arguments; the CLI configures it as ``last_checkpoint.*`` (``filename: last``, no
    monitor). During ``fit`` it handles SIGINT: the first Ctrl-C stops training after the current batch (saving
    ``last.ckpt`` and exiting with status 130), a second one stops at once. SIGTERM is caught by Lightning; this
    callback then saves ``last.ckpt`` and exits with status 143.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.interrupt: str | None = None
        self._previous_sigint: Any = None

    # ----------------------------------------------------------------------------------------------- signals
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after Lightning took its snapshot of the signal handlers (restored at its teardown)
        self.interrupt = None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.interrupt is not None:  # a second Ctrl-C: stop at once, like Python's default
            self._restore_sigint()
            raise KeyboardInterrupt
        self.interrupt = "SIGINT"
        log.warning(
            "SIGINT: stopping after the current training batch and saving last.ckpt (Ctrl-C again to stop "
            "at once, without a checkpoint)"
        )

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
        self._previous_sigint = None

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore_sigint()

    def _signal(self, trainer: Trainer) -> str | None:
        if self.interrupt is not None:
            return self.interrupt
        return "SIGTERM" if trainer.received_sigterm else None

    # ------------------------------------------------------------------------------------------------ saving
    @staticmethod
    def _at_step_boundary(trainer: Trainer, batch_idx: int) -> bool:
        """Whether the optimizer has just stepped (not in the middle of a gradient accumulation window, whose partial
        gradients no checkpoint holds)."""
        return (batch_idx + 1) % trainer.accumulate_grad_batches == 0 or batch_idx + 1 >= trainer.num_training_batches

    @staticmethod
    def _stops_here(trainer: Trainer, batch_idx: int) -> bool:
        """Whether the epoch or the run ends after this batch (``max_steps`` reached, ``trainer.should_stop`` set
        by ``max_time`` or early stopping). Every epoch's end is saved here, whatever the validation schedule
        (``ModelCheckpoint`` alone saves an epoch's end only after a validation that ends it), and in the state that
        Lightning resumes exactly: a save in ``on_train_epoch_end`` marks the epoch as done (a run cut short would
        skip its remaining draws) and is restored with the epoch's learning-rate step applied twice."""
        if batch_idx + 1 >= trainer.num_training_batches:
            return True
        return trainer.should_stop or (trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps)

    def _save_now(self, trainer: Trainer) -> None:
        if self._should_skip_saving_checkpoint(trainer):
            return
        self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_global_step_saved = trainer.global_step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Save at this batch boundary when the epoch or the run ends here (:meth:`_stops_here`) or a signal came;
        then raise :class:`RunInterrupted` on a signal. A signal in the middle of a gradient accumulation window
        stops at the window's end."""
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        signal_name = self._signal(trainer)
        if not self._at_step_boundary(trainer, batch_idx):
            if signal_name == "SIGTERM" and trainer.received_sigterm:  # Lightning would stop right after this batch
                trainer._signal_connector.received_sigterm = False
                self.interrupt = "SIGTERM"
            return
        if signal_name is not None or self._stops_here(trainer, batch_idx):
            self._save_now(trainer)
        if signal_name is not None:
            trainer.strategy.barrier("arn_last_checkpoint")
            log.warning(
                "%s: stopped at step %d after saving %s (resume with --ckpt_path %s)",
                signal_name,
                trainer.global_step,
                self.best_model_path,
                self.best_model_path,
            )
            raise RunInterrupted(signal_name, self.best_model_path or None)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """SIGTERM outside a training batch (during validation): save the state, single-process runs only (under
        DDP every process must take part in a save, and the others may not have stopped)."""
        self._restore_sigint()  # Lightning calls no teardown hook after an exception
        if isinstance(exception, SIGTERMException) and trainer.world_size == 1:
            self._save_now(trainer)


def exit_code(error: SystemExit) -> int | None:
    """The exit status of a run stopped by :class:`RunInterrupted` or Lightning's ``SIGTERMException`` (whose own
    code is None, i.e. success); None for any other ``SystemExit``."""
    if isinstance(error, RunInterrupted):
        return int(error.code)
    if isinstance(error, SIGTERMException):
        return EXIT_CODES["SIGTERM"]
    return None


def save_untrained_checkpoint(module: LightningModule, path: PathLike) -> PathLike:
    """Write ``module`` as a Lightning checkpoint (hyperparameters, weights, the module's checkpoint hooks) without
    training it: a CPU ``Trainer`` connected to the module saves it. Used by the benchmarks and the tests to make a
    loadable checkpoint of a freshly built model; returns ``path``."""
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "EXIT_CODES",
    "LastCheckpoint",
    "RunInterrupted",
    "exit_code",
    "load_checkpoint_file",
    "save_untrained_checkpoint",
    "verify_checkpoint",
]
