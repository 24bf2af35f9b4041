"""Lightning callbacks of the project: scene-graph images and per-predicate recall reports for the loggers.

Whatever the logger, the report also lands as files in the run directory (``reports/``): PNG frames with predicted
vs ground-truth graphs, and per-predicate recall as CSV + the head-to-tail bar chart of
:mod:`arn_lightning.drawing.recall_chart` (the chart of the web app and the notebook, with both mean recalls). On W&B
the same go to the run as images, a ``wandb.Table`` and that chart; on TensorBoard as images.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from PIL import Image
from torch import Tensor

from arn_lightning.atomic import atomic_path, atomic_write_json
from arn_lightning.data.ag import parse_frame_key
from arn_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from arn_lightning.drawing.annotate import prediction_and_truth
from arn_lightning.drawing.recall_chart import mean_recalls, metric_recall_rows, save_recall_report
from arn_lightning.metrics.predictions import prediction_from_ground_truth
from arn_lightning.scene_graph import FrameGraph, rank_triplets
from arn_lightning.training.runs import run_folder
from arn_lightning.vocab import CONSTRAINTS

log = logging.getLogger(__name__)


def denormalise(image: Tensor, size: Tensor, orig_size: Tensor) -> Image.Image:
    """A PIL image of the original size from an ImageNet-normalised, padded ``[3, H, W]`` tensor."""
    h, w = (int(v) for v in size)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = (image[:, :h, :w].float().cpu() * std + mean).clamp(0, 1)  # [3, h, w]
    array = (pixels.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    oh, ow = (int(v) for v in orig_size)
    return Image.fromarray(array).resize((ow, oh), Image.BILINEAR)


def validation_examples(
    batch: Mapping[str, Any], preds: Sequence[Mapping[str, Any]], limit: int | None = None
) -> list[dict[str, Any]]:
    """The first ``limit`` (all if None) evaluated frames of a validation batch, as :func:`comparison_image` draws
    them: ``{"image": [3, H, W] as fed (CPU), "size": [2] (h, w) before padding, "target": the frame's target,
    "prediction": its prediction}``.

    Args:
        batch: the collated batch (ARCHITECTURE.md section 2).
        preds: the per-frame predictions of the batch's evaluated frames, in batch order (what
            ``ARNLitModule.validation_step`` returns).
    """
    evaluated = [i for i, t in enumerate(batch["targets"]) if t["evaluate"]]
    images = batch["pixel_values"].flatten(0, 1)  # [BT, 3, H, W]
    pairs = list(zip(evaluated, preds))[:limit]
    return [
        {
            "image": images[i].detach().cpu(),
            "size": batch["targets"][i]["size"].cpu(),
            "target": batch["targets"][i],
            "prediction": pred,
        }
        for i, pred in pairs
    ]


def comparison_image(example: Mapping[str, Any], top_k: int, threshold: float) -> Image.Image:
    """Prediction (left) and ground truth (right) of one frame, each with its triplet panel."""
    target = example["target"]
    frame = denormalise(example["image"], example["size"], target["orig_size"])
    gt = prediction_from_ground_truth(target)
    pred = {k: v.cpu() if isinstance(v, Tensor) else v for k, v in example["prediction"].items()}
    number = parse_frame_key(target["frame"], "the validation batch")[1]
    return prediction_and_truth(frame, number, pred, gt, top_k, threshold)


def graph_image(example: Mapping[str, Any], top_k: int, threshold: float) -> Image.Image:
    """The predicted scene graph of one frame drawn as a graph (nodes placed at their boxes, edges coloured by
    predicate type): :func:`~arn_lightning.drawing.graph_plot.scene_graph_figure`, the drawing of the web app
    and the notebook."""
    from arn_lightning.drawing.graph_plot import figure_image, scene_graph_figure

    pred = {k: v.cpu() if isinstance(v, Tensor) else v for k, v in example["prediction"].items()}
    number = parse_frame_key(example["target"]["frame"], "the validation batch")[1]
    graph = FrameGraph(0, number, math.nan, pred, rank_triplets(pred, top_k=top_k, threshold=threshold))
    return figure_image(scene_graph_figure(graph, title=f"predicted: {example['target']['frame']}"))


class SceneGraphReport(L.Callback):
    """Logs example frames (predicted vs ground-truth graphs) after validation and per-predicate recall.

    Args:
        num_images: validation frames drawn per epoch (0 disables the images).
        top_k: predicted triplets drawn per frame.
        threshold: lowest predicted triplet score drawn.
        recall_constraint: constraint of the per-predicate recall report (``with`` / ``semi`` / ``no``).
        recall_k: K of the per-predicate recall report.
    """

    def __init__(
        self,
        num_images: int = 4,
        top_k: int = 6,
        threshold: float = 0.05,
        recall_constraint: str = "no",
        recall_k: int = 20,
    ) -> None:
        super().__init__()
        if recall_constraint not in CONSTRAINTS:
            raise ValueError(f"Expected recall_constraint in {'/'.join(CONSTRAINTS)} but got {recall_constraint!r}")
        self.num_images, self.top_k, self.threshold = num_images, top_k, threshold
        self.recall_constraint, self.recall_k = recall_constraint, recall_k
        self._examples: list[dict[str, Any]] = []  # the frames drawn after the current validation

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # the frames of the first batch: ``outputs`` are its per-frame predictions (validation_step's return)
        if batch_idx == 0 and trainer.is_global_zero and not trainer.sanity_checking:
            self._examples = validation_examples(batch, outputs, self.num_images)

    @staticmethod
    def _directory(trainer: L.Trainer) -> Path:
        # run_folder broadcasts from rank 0: every process must ask for it, never rank 0 alone
        return run_folder(trainer) / "reports"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the module's on_validation_epoch_end, which computes the metrics this reports
        if trainer.sanity_checking:
            return
        directory = self._directory(trainer)
        if not trainer.is_global_zero:
            return
        examples, self._examples = self._examples[: self.num_images], []
        if examples:
            images = [comparison_image(e, self.top_k, self.threshold) for e in examples]
            graphs = [graph_image(e, self.top_k, self.threshold) for e in examples]
            captions = [e["target"]["frame"] for e in examples]
            self._log_images(trainer, directory, images, captions, "scene_graphs", "frame{i}.png")
            self._log_images(trainer, directory, graphs, captions, "scene_graph_plots", "frame{i}_graph.png")
        self._report_recall(trainer, pl_module, directory, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        directory = self._directory(trainer)
        if trainer.is_global_zero:
            self._report_recall(trainer, pl_module, directory, "test")

    def _log_images(
        self,
        trainer: L.Trainer,
        reports: Path,
        images: list[Image.Image],
        captions: list[str],
        key: str,
        file_name: str,
    ) -> None:
        """Save ``images`` as ``reports/val_epochNNN/<file_name>`` and log them as ``val/<key>`` (W&B, TensorBoard)."""
        directory = reports / f"val_epoch{trainer.current_epoch:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            with atomic_path(directory / file_name.format(i=i)) as tmp:
                image.save(tmp, format="PNG")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"val/{key}", images=images, caption=captions, step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                for i, image in enumerate(images):
                    array = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a writable copy
                    logger.experiment.add_image(f"val/{key.rstrip('s')}_{i}", array, trainer.global_step)

    def _report_recall(self, trainer: L.Trainer, pl_module: L.LightningModule, directory: Path, stage: str) -> None:
        metrics: Mapping[str, float] | None = getattr(pl_module, "last_metrics", None)
        if not metrics:
            return
        rows = metric_recall_rows(metrics, self.recall_constraint, self.recall_k)
        title = f"{stage}/per_predicate/{self.recall_constraint}/R@{self.recall_k}"
        means = mean_recalls(metrics, self.recall_constraint, self.recall_k)
        png = save_recall_report(rows, directory, title, means)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                table = wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])
                logger.experiment.log(
                    {
                        f"{title}/table": table,
                        f"{title}/chart": wandb.Image(str(png)),  # the project's one chart, as in reports/
                        "trainer/global_step": trainer.global_step,
                    }
                )
        log.info("per-predicate recall report: %s", png)


#: At or below this best validation no-constraint R@20 a run is reported as still near an untrained model (an
#: untrained ARN scores about 0 on every split; the demo's learning check calls 0.1 the untrained ceiling).
UNTRAINED_RECALL = 0.1


#: The file of a run folder with the validation metrics of its best and its last epoch (``RunSummary``).
FIT_SUMMARY_FILE = "fit_summary.json"
#: Why a run reports its last epoch next to its best one (written into ``fit_summary.json``).
SELECTION_NOTE = (
    "Action Genome has no validation split: validation runs on the test split, so the best epoch is selected on the "
    "test data and its numbers are optimistic; the last epoch's are not selected."
)


class RunSummary(L.Callback):
    """Prints, when ``fit`` ends, where the run is and how it did: the run folder, the best and last checkpoints with
    their validation R@20 (with / no constraint), the wall time, and the commands that resume and test it. A run
    whose best no-constraint R@20 is still at an untrained model's level (:data:`UNTRAINED_RECALL`) gets a line that
    says so.

    Honest reporting: the validation split of the Action Genome configs is the test split (AG has no other), so the
    best checkpoint is chosen on test data. The summary therefore reports the last epoch next to the best one, and
    writes both epochs' complete metrics (every constraint, ``R@K``, both ``mR@K`` definitions, ``hmean@K``) into
    ``<run>/fit_summary.json`` and to the run's loggers as ``fit/best/...`` and ``fit/last/...`` (``docs/metrics.md``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: list[dict[str, Any]] = []
        self._start = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()
        self.history = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics: Mapping[str, float] = getattr(pl_module, "last_metrics", None) or {}
        if trainer.sanity_checking or "no/R@20" not in metrics:
            return
        self.history.append(
            {
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "with/R@20": metrics.get("with/R@20", math.nan),
                "no/R@20": metrics["no/R@20"],
                "metrics": {
                    key: float(value)
                    for key, value in metrics.items()
                    if not key.startswith("per_predicate/") and isinstance(value, (int, float))
                },
            }
        )

    def best_and_last(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The history entries of the best epoch (highest ``with/R@20``, the checkpoint monitor; the earliest on a
        tie, as ``ModelCheckpoint`` keeps the first) and of the last one."""
        best = max(self.history, key=lambda h: h["with/R@20"], default=None)
        return best, (self.history[-1] if self.history else None)

    def fit_summary(self) -> dict[str, Any]:
        """What ``fit_summary.json`` holds: ``best`` and ``last`` (epoch, step, metrics) and the selection note."""

        def entry(h: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if h is None else {"epoch": h["epoch"], "step": h["step"], "metrics": h["metrics"]}

        best, last = self.best_and_last()
        return {"best": entry(best), "last": entry(last), "selected_by": "val/with/R@20", "note": SELECTION_NOTE}

    def summary(self, trainer: L.Trainer) -> str:
        """The summary text (see the class docstring)."""
        run = run_folder(trainer)
        minutes = (time.monotonic() - self._start) / 60
        lines = [
            f"fit finished after {trainer.current_epoch} epoch(s), {trainer.global_step} steps, "
            f"{minutes:.1f} min: run folder {run}"
        ]
        best_path = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
        last_paths = [
            c.best_model_path
            for c in trainer.checkpoint_callbacks
            if getattr(c, "monitor", None) is None and getattr(c, "best_model_path", "")
        ]
        best, last = self.best_and_last()  # the best checkpoint's monitor, and the last epoch

        def recall(entry: Mapping[str, float] | None) -> str:
            if entry is None:
                return "no validation ran"
            return (
                f"val with/R@20 {entry['with/R@20']:.3f}, no/R@20 {entry['no/R@20']:.3f} "
                f"(epoch {entry['epoch']}, step {entry['step']})"
            )

        if best_path:
            lines.append(f"  best checkpoint {best_path}: {recall(best)}")
        if last_paths:
            lines.append(f"  last checkpoint {last_paths[0]}: {recall(last)}")
        if best is not None and last is not None:
            lines.append(
                f"  both epochs' metrics: {run / FIT_SUMMARY_FILE} (the best epoch is chosen on the validation "
                f"split, which is the test split on Action Genome: report the last epoch too)"
            )
        config = run / "config.yaml"
        if not config.is_file() and (run.parent / "config.yaml").is_file():  # a resume writes into <run>/resume/
            config = run.parent / "config.yaml"
        if last_paths and config.is_file():
            lines.append(f"  resume: arn-lightning fit --config {config} --ckpt_path {last_paths[0]}")
        if best_path and config.is_file():
            lines.append(f"  test:   arn-lightning test --config {config} --ckpt_path {best_path}")
        top = max((h["no/R@20"] for h in self.history), default=None)
        if top is not None and top <= UNTRAINED_RECALL:
            lines.append(
                f"  note: the best no-constraint R@20 ({top:.3f}) is still at an untrained model's level "
                f"(<= {UNTRAINED_RECALL}): this run is too short to mean much; train longer "
                f"(trainer.max_epochs / max_steps) before reading its numbers"
            )
        return "\n".join(lines)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        text = self.summary(trainer)  # every process: log_dir broadcasts
        run = run_folder(trainer)
        if trainer.is_global_zero:
            if self.history:
                summary = self.fit_summary()
                atomic_write_json(run / FIT_SUMMARY_FILE, summary, indent=2, sort_keys=False)
                logged = {
                    f"fit/{which}/{key}": value
                    for which in ("best", "last")
                    for key, value in summary[which]["metrics"].items()
                }
                logged["fit/best/epoch"], logged["fit/last/epoch"] = summary["best"]["epoch"], summary["last"]["epoch"]
                for logger in trainer.loggers:
                    logger.log_metrics(logged, step=trainer.global_step)
                    logger.save()
            rank_zero_info(text)
