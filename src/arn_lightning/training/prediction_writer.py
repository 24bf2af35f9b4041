"""The files of ``test`` and ``predict``: the prediction file of the stage and, for ``test``, ``metrics_test.json``.

:class:`PredictionWriter` is a Lightning :class:`~lightning.pytorch.callbacks.BasePredictionWriter`: the module's
``test_step`` / ``predict_step`` return the per-frame predictions of their batch (ARCHITECTURE.md section 4), the
writer encodes them in the batch-end hooks into a
:class:`~arn_lightning.metrics.prediction_files.SortedPredictionSpool` (bounded memory: sorted runs spilled to
temporary files) and writes them when the stage ends, one shard per process k-way merged by rank 0 (frames sorted by
key, one line of each shard in memory at a time). ``ARNLitModule.configure_callbacks`` attaches it, so the files are
written with the CLI and with a plain ``lightning.Trainer`` alike; a writer the user passes to the trainer is used
instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from arn_lightning.atomic import atomic_write_json
from arn_lightning.metrics.prediction_files import SortedPredictionSpool, merge_prediction_files
from arn_lightning.training.runs import run_folder

log = logging.getLogger(__name__)

#: Name of the prediction file that ``test`` and ``predict`` write into the run directory.
PREDICTIONS_FILE = {"test": "predictions_test.jsonl", "predict": "predictions_predict.jsonl"}
#: The test metrics (all processes reduced) written next to the test prediction file.
METRICS_FILE = "metrics_test.json"


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions_test.jsonl`` / ``predictions_predict.jsonl`` (float32 values, frames sorted by key) and
    ``metrics_test.json`` (the module's ``last_metrics`` plus ``unreadable_frames`` and ``checkpoint``: the file
    tested, its epoch and step, so that a best and a last checkpoint's results cannot be confused).

    Where: the module's ``predictions_dir`` hyperparameter, else the run folder
    (:func:`arn_lightning.training.runs.run_folder`),
    else the working directory. Nothing is written when the module's ``evaluation.save_predictions`` is off.

    The module must return its list of per-frame predictions from ``test_step`` / ``predict_step`` and provide
    ``eval_config.save_predictions``, ``hparams.predictions_dir``, ``last_metrics`` and ``last_unreadable`` (as
    :class:`~arn_lightning.training.lit_module.ARNLitModule` does).
    """

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self._spool = SortedPredictionSpool()

    # ------------------------------------------------------------------ collecting
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._spool.discard()

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._spool.discard()

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Validate and encode the batch's per-frame predictions (``prediction``: the list the step returned) into the
        spool, written when the stage ends."""
        if pl_module.eval_config.save_predictions:
            for pred in prediction:
                self._spool.add(pred)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.write_on_batch_end(trainer, pl_module, outputs, None, batch, batch_idx, dataloader_idx)

    # ------------------------------------------------------------------ writing
    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_predict_epoch_end(trainer, pl_module)
        self._flush(trainer, pl_module, "predict")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not on_test_epoch_end: Lightning runs callbacks' epoch-end hooks before the module's, which computes
        # last_metrics; on_test_end comes after it.
        if pl_module.eval_config.save_predictions:
            path = self.predictions_path(trainer, pl_module, "test").with_name(METRICS_FILE)  # every rank: broadcasts
            if trainer.is_global_zero:
                checkpoint = {"path": trainer.ckpt_path, **getattr(pl_module, "loaded_checkpoint", {})}
                payload = {**pl_module.last_metrics, "unreadable_frames": pl_module.last_unreadable}
                atomic_write_json(path, {**payload, "checkpoint": checkpoint})
        self._flush(trainer, pl_module, "test")

    @staticmethod
    def predictions_path(trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> Path:
        """Where ``stage`` (``test`` / ``predict``) writes its prediction file (every process must ask: the run
        folder is broadcast from rank 0).

        Raises:
            KeyError: ``stage`` is neither ``test`` nor ``predict``.
        """
        base = pl_module.hparams.get("predictions_dir") or run_folder(trainer) or os.getcwd()
        return Path(base) / PREDICTIONS_FILE[stage]

    def _flush(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Write this stage's predictions: one shard per rank, merged by rank 0 (frames ordered by key)."""
        if not pl_module.eval_config.save_predictions:
            return
        path = self.predictions_path(trainer, pl_module, stage)
        rank, world = trainer.global_rank, trainer.world_size
        shard = path.with_name(f"{path.stem}.rank{rank}{path.suffix}") if world > 1 else path
        shard.parent.mkdir(parents=True, exist_ok=True)
        self._spool.write(shard)
        if world == 1:
            log.info("wrote %s", path)
            return
        trainer.strategy.barrier("arn_predictions")
        if rank == 0:
            merge_shards(path, world)
        trainer.strategy.barrier("arn_predictions_merged")


def merge_shards(path: Path, world: int) -> None:
    """Merge the per-rank prediction shards ``<stem>.rank<r><suffix>`` (r < ``world``, each sorted by frame key)
    into ``path`` (sorted by frame key) by a k-way merge that holds one line per shard, and delete the shards.

    Raises:
        FileNotFoundError: a shard is missing.
        PredictionFileError: a shard line without a frame key, or a shard out of order.
        ValueError: a frame in two shards.
    """
    shards = [path.with_name(f"{path.stem}.rank{r}{path.suffix}") for r in range(world)]
    merge_prediction_files(path, shards)
    for shard in shards:
        shard.unlink()
