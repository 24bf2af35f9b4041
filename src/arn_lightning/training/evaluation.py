"""Scoring a loaded checkpoint on the test split of an AG-format root, through the project's own evaluation path.

:func:`evaluate_module` runs ``lightning.Trainer.test`` with the checkpoint's module and an
:class:`~arn_lightning.data.datamodule.AGDataModule` built with the checkpoint's frame settings (clip length, task,
resize), so the numbers are those ``arn-lightning test`` reports: R@K / mR@K for with / semi / no constraint and
every predicate's recall (``arn_lightning.drawing.recall_chart.metric_recall_rows`` orders those head to tail).
"""

from __future__ import annotations

from typing import Any

import lightning as L

from arn_lightning._types import PathLike
from arn_lightning.build import transform_settings
from arn_lightning.data.datamodule import AGDataModule
from arn_lightning.training.lit_module import ARNLitModule


def evaluate_module(
    module: Any,
    data_root: PathLike,
    workdir: PathLike,
    batch_size: int = 2,
    max_frames: int | None = None,
    accelerator: str = "cpu",
) -> dict[str, float]:
    """R@K / mR@K and per-predicate recall of ``module`` on the test split of an AG-format root.

    Args:
        module: an ``ARNLitModule``, or the :class:`~arn_lightning.build.InferenceModule` of a predictor
            (``load_model(ckpt).module``), around whose model and postprocess one is built
            (:meth:`~arn_lightning.training.lit_module.ARNLitModule.around`).
        data_root: the AG root (``annotations/``, ``frames/``).
        workdir: where the test run writes its prediction file (instead of the module's ``predictions_dir``).
        batch_size: clips per batch.
        max_frames: score at most this many frames (whole videos), None for all.
        accelerator: Lightning accelerator (``"cpu"``, ``"gpu"``).

    Returns:
        The metric dict of ``SceneGraphRecall`` as floats (``"with/R@20"``, ``"per_predicate/with/R@20/holding"``).
    """
    if not isinstance(module, ARNLitModule):
        module = ARNLitModule.around(module)
    settings = transform_settings(module.hparams.get("data_settings"))
    data = AGDataModule(
        root=str(data_root),
        task=module.model.config.task,
        clip_len=module.model.config.num_frames,
        resize_shorter=settings["resize_shorter"],
        resize_longer=settings["resize_longer"],
        eval_batch_size=batch_size,
        max_eval_frames=max_frames,
    )
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(workdir),
    )
    previous = module.hparams.get("predictions_dir")
    module.hparams.predictions_dir = str(workdir)  # never overwrite the training run's prediction file
    try:
        trainer.test(module, datamodule=data, verbose=False)
    finally:
        module.hparams.predictions_dir = previous
    return dict(module.last_metrics)
