"""Callbacks that stop a training run the way the outside world does, for the resume tests (importable by a
subprocess: ``tests/`` is put on its ``PYTHONPATH``, and a config names them as ``resume_fixtures.<class>``)."""

from __future__ import annotations

import os
import signal
import time

from lightning.pytorch import Callback, LightningModule, Trainer


class SendSignal(Callback):
    """Send ``signal_name`` (``SIGTERM``, ``SIGINT``, ``SIGKILL``) to this process after training step ``step``."""

    def __init__(self, step: int, signal_name: str) -> None:
        self.step = step
        self.signum = getattr(signal, signal_name)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class StopAt(Callback):
    """Set ``trainer.should_stop`` after training step ``step`` (what ``max_time`` and early stopping do)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            trainer.should_stop = True


class SlowStep(Callback):
    """Sleep ``seconds`` before training step ``step`` + 1 (so that a short ``max_time`` runs out there)."""

    def __init__(self, step: int, seconds: float) -> None:
        self.step = step
        self.seconds = seconds

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            time.sleep(self.seconds)


class SendSignalAtBatch(Callback):
    """Send ``signal_name`` once, after training batch ``batch`` of epoch 0 (inside an accumulation window, say)."""

    def __init__(self, batch: int, signal_name: str) -> None:
        self.batch = batch
        self.signum = getattr(signal, signal_name)
        self.sent = False

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if not self.sent and trainer.current_epoch == 0 and batch_idx == self.batch:
            self.sent = True
            os.kill(os.getpid(), self.signum)
