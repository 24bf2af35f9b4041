"""ARNLitModule: the Lightning wrapper around the pure ARN model, its criterion, postprocess and metrics.

The module holds the steps, the optimiser and the metrics. The rest of what is Lightning-specific lives in callbacks:
the prediction and metrics files (:mod:`arn_lightning.training.prediction_writer`) and the random states of a checkpoint
(:mod:`arn_lightning.training.rng`), both attached by :meth:`ARNLitModule.configure_callbacks`; the reports
(:mod:`arn_lightning.training.callbacks`); the CLI (:mod:`arn_lightning.training.lightning_cli`). The model, criterion,
matcher,
postprocess and metrics are plain modules.
"""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from arn_lightning.build import (
    STORED_CONFIGS,
    as_config,
    build_model,
    load_pretrained,
    read_model_source,
    require_categories,
)
from arn_lightning.criterion import LossConfig
from arn_lightning.data.clips import geometry_mismatch
from arn_lightning.data.collate import normalize_batch
from arn_lightning.metrics.functional import RecallConfig
from arn_lightning.metrics.predictions import empty_prediction
from arn_lightning.metrics.recall import SceneGraphRecall
from arn_lightning.metrics.triplet_nms import check_settings as check_triplet_nms
from arn_lightning.metrics.triplet_nms import triplet_nms
from arn_lightning.models.cache import FeatureCache
from arn_lightning.models.config import ARNConfig
from arn_lightning.postprocess import PostProcessConfig
from arn_lightning.text.config import ClipConfig
from arn_lightning.text.embeddings import text_embeddings
from arn_lightning.text.image_tower import FrozenClipImageEncoder
from arn_lightning.text.prompts import PromptConfig
from arn_lightning.training.prediction_writer import PredictionWriter
from arn_lightning.training.rng import RandomStateCheckpoint
from arn_lightning.vocab import CONSTRAINTS, PREDICATES

log = logging.getLogger(__name__)
# The epoch metrics are logged after the metric itself reduced its sum states over the processes.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('(val|test)/", category=UserWarning)


class _DropAdvertisement(logging.Filter):
    """Lightning >= 2.6 advertises a cloud logger on every Trainer; nothing a user of this project can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdvertisement())
# Lightning 2.6's own use of a torch API that torch 2.14 deprecated: fixed upstream, nothing to act on here.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
# on_after_batch_transfer normalises the data module's uint8 batches: the module's hook with a data module is intended.
warnings.filterwarnings(
    "ignore", message=r"You have overridden `on_after_batch_transfer` in `LightningModule`", category=Warning
)

#: The recalls shown on the progress bar after each validation (and named in the end-of-fit summary).
HEADLINE_METRICS = ("with/R@20", "no/R@20")
#: Keyword arguments of ``torch.compile`` under ``compile=True``; torch's defaults (inductor; a shape that changes
#: between batches, e.g. the frame size, is made dynamic after one recompilation).
COMPILE_OPTIONS: dict[str, Any] = {}
#: Constructor arguments that are configuration dataclasses (kept as plain dicts in the hyperparameters).
CONFIG_ARGS = ("arch", "loss", "clip", "prompts", "optim", "evaluation", "post")
#: AdamW's betas (torch's and DETR's defaults).
ADAMW_BETAS = (0.9, 0.999)
#: Factor of the step decay of every learning rate after ``optim.lr_drop_epoch`` (DETR's).
LR_DROP_GAMMA = 0.1


@dataclass
class OptimConfig:
    """AdamW with three learning rates and a step decay (docs/model.md section 4).

    Attributes:
        lr: learning rate of the transformer and the heads.
        lr_backbone: learning rate of the CNN backbone.
        lr_text: learning rate of the CLIP-initialised classifier embeddings.
        weight_decay: AdamW weight decay.
        lr_drop_epoch: epoch after which every learning rate is multiplied by :data:`LR_DROP_GAMMA`.

    AdamW's betas are :data:`ADAMW_BETAS`.
    """

    lr: float = 1e-4
    lr_backbone: float = 1e-5
    lr_text: float = 1e-5
    weight_decay: float = 1e-4
    lr_drop_epoch: int = 15

    def __post_init__(self) -> None:
        for name in ("lr", "lr_backbone", "lr_text", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"Expected {name} to be a finite number >= 0 but got {value!r}")
        if not (isinstance(self.lr_drop_epoch, int) and self.lr_drop_epoch >= 1):
            raise ValueError(f"Expected lr_drop_epoch to be an int >= 1 but got {self.lr_drop_epoch!r}")


@dataclass
class EvalConfig:
    """How validation / test score scene graphs.

    Attributes:
        ks: the K of Recall@K.
        iou: ``"continuous"`` (torchvision) or ``"legacy"`` (+1 pixel) box IoU.
        iou_threshold: IoU needed on both the subject and the object box.
        semi_threshold: score above which "semi" keeps a spatial / contacting predicate.
        no_constraint_top: candidates kept per frame under "no constraint".
        save_predictions: write the prediction file in ``test`` / ``predict``.
        triplet_nms: overlap threshold of the test-time triplet NMS (:mod:`arn_lightning.metrics.triplet_nms`), in
            ``(0, 1]``; ``None`` (the default, as ARN ran): off. OED's evaluation uses 0.9. When set, ``test`` reports
            the metrics of the plain predictions (the headline keys; the prediction file holds these) and, prefixed
            ``triplet_nms/``, those after the NMS.
        triplet_nms_alpha: exponent of the subject-box IoU in the NMS overlap (OED: 1).
        triplet_nms_beta: exponent of the object-box IoU in the NMS overlap (OED: 1; CDN's HOI default: 0.5).
    """

    ks: list[int] = field(default_factory=lambda: [10, 20, 50, 100])
    iou: str = "continuous"
    iou_threshold: float = 0.5
    semi_threshold: float = 0.9
    no_constraint_top: int = 100
    save_predictions: bool = True
    triplet_nms: float | None = None
    triplet_nms_alpha: float = 1.0
    triplet_nms_beta: float = 1.0

    def __post_init__(self) -> None:
        names = [f"evaluation.{name}" for name in ("triplet_nms", "triplet_nms_alpha", "triplet_nms_beta")]
        check_triplet_nms(self.triplet_nms, self.triplet_nms_alpha, self.triplet_nms_beta, names)
        if not self.ks or list(self.ks) != sorted(set(self.ks)) or self.ks[0] < 1:
            raise ValueError(f"Expected ks to be strictly increasing positive ints (the K of R@K) but got {self.ks!r}")
        # The metric's own settings object checks iou, the thresholds and no_constraint_top.
        RecallConfig(
            k_values=tuple(self.ks),
            iou_threshold=self.iou_threshold,
            iou_convention=self.iou,
            semi_threshold=self.semi_threshold,
            no_constraint_top=self.no_constraint_top,
        )


class ARNLitModule(L.LightningModule):
    """Trains, validates, tests and predicts with ARN.

    Args:
        arch: the model's hyperparameters.
        loss: loss weights and the predicate-loss variant.
        clip: the CLIP text / image towers (classifier initialisation and distillation).
        prompts: prompt templates for the CLIP triplet cues.
        optim: optimiser and learning-rate schedule.
        evaluation: metric settings.
        post: how raw outputs become per-frame predictions.
        triplet_categories: per predicate type the (predicate, object) pairs of the training split; linked from the
            data module by the CLI (stored with the checkpoint so that it reloads alone).
        data_settings: the data module's frame transform settings (linked by the CLI; inference replays them).
        init_text_classifiers: initialise the cosine classifiers from CLIP text embeddings at the start of ``fit``.
        detr_checkpoint: optional local DETR-R50 COCO ``.pth`` loaded into backbone / encoder / entity decoder.
        predictions_dir: where ``test`` / ``predict`` write prediction files (default: the run's log directory).
        compile: ``torch.compile`` the model (``nn.Module.compile``: in place, so the state-dict keys keep no
            ``_orig_mod.`` prefix) in :meth:`configure_model`, for training and evaluation (:data:`COMPILE_OPTIONS`).
        channels_last: run the CNN backbone in ``channels_last`` memory format (:meth:`configure_model`).
    """

    def __init__(
        self,
        arch: ARNConfig = ARNConfig(),
        loss: LossConfig = LossConfig(),
        clip: ClipConfig = ClipConfig(),
        prompts: PromptConfig = PromptConfig(),
        optim: OptimConfig = OptimConfig(),
        evaluation: EvalConfig = EvalConfig(),
        post: PostProcessConfig = PostProcessConfig(),
        triplet_categories: dict[str, list[list[int]]] | None = None,
        data_settings: dict[str, Any] | None = None,
        init_text_classifiers: bool = True,
        detr_checkpoint: str | None = None,
        predictions_dir: str | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        # An evaluation split smaller than the world size leaves some processes without a batch (docs/runs.md).
        self.allow_zero_length_dataloader_with_multiple_devices = True
        require_categories(triplet_categories)
        # The LightningCLI and load_from_checkpoint may hand the configs over as dicts: one typed copy of each.
        self.arch_config: ARNConfig = as_config(ARNConfig, arch, "arch")
        self.loss_config: LossConfig = as_config(LossConfig, loss, "loss")
        self.clip_config: ClipConfig = as_config(ClipConfig, clip, "clip")
        self.prompt_config: PromptConfig = as_config(PromptConfig, prompts, "prompts")
        self.optim_config: OptimConfig = as_config(OptimConfig, optim, "optim")
        self.eval_config: EvalConfig = as_config(EvalConfig, evaluation, "evaluation")
        self.post_config: PostProcessConfig = as_config(PostProcessConfig, post, "post")
        self.save_hyperparameters()
        for name in CONFIG_ARGS:  # plain dicts in the checkpoint: loadable with weights_only=True, no pickled classes
            if is_dataclass(self.hparams[name]):
                self.hparams[name] = asdict(self.hparams[name])
            elif isinstance(self.hparams[name], Mapping):
                self.hparams[name] = dict(self.hparams[name])
        # One vocabulary of triplet classes for the model, the criterion and the postprocess (the one builder).
        built = build_model(self.arch_config, triplet_categories, self.post_config, self.loss_config)
        self.model, self.criterion, self.postprocess = built.model, built.criterion, built.postprocess
        evaluation = self.eval_config
        # Frozen, eval-only and absent from checkpoints; built lazily on the first training step that needs it.
        self._clip_image: FrozenClipImageEncoder | None = None
        metric_kwargs = dict(
            k_values=tuple(evaluation.ks),
            iou_convention=evaluation.iou,
            iou_threshold=evaluation.iou_threshold,
            semi_threshold=evaluation.semi_threshold,
            no_constraint_top=evaluation.no_constraint_top,
        )
        self.val_metrics = SceneGraphRecall(**metric_kwargs)
        self.test_metrics = SceneGraphRecall(**metric_kwargs)
        # evaluation.triplet_nms: test also scores the predictions after the triplet NMS, one metric per constraint
        self.test_nms_metrics = self._triplet_nms_metrics(metric_kwargs)
        self._frames_scored = 0  # evaluated frames with a prediction, this process, this evaluation
        self._unreadable: list[dict[str, str]] = []  # evaluated frames that could not be read (scored as recall 0)
        self._stream_caches: dict[int, FeatureCache] = {}  # causal evaluation: video -> its previous frames' F_vi

    @classmethod
    def stored_configs(cls) -> dict[str, type]:
        """The configuration dataclasses of the hyperparameters, by name (what a stored checkpoint is checked
        against: :func:`~arn_lightning.build.check_stored_settings`)."""
        return {**STORED_CONFIGS, "optim": OptimConfig, "evaluation": EvalConfig}

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> ARNLitModule:
        """Lightning's ``load_from_checkpoint``, after :func:`~arn_lightning.build.read_checkpoint` of a local file
        (a truncated, altered or older-format checkpoint is refused with its name); a model folder of ``arn-lightning
        export`` (:mod:`arn_lightning.weights.folder`) or ``hf://owner/name`` is built by :meth:`from_model_folder`.

        Raises:
            CheckpointError: the file is missing, truncated, altered or of an older format.
        """
        if isinstance(checkpoint_path, (str, Path)):
            if Path(checkpoint_path).is_dir() or str(checkpoint_path).startswith("hf:/"):
                return cls.from_model_folder(checkpoint_path, **kwargs)
            read_model_source(checkpoint_path, cls.stored_configs())
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    @classmethod
    def from_model_folder(cls, source: Any, **overrides: Any) -> ARNLitModule:
        """The module of a model folder (or ``hf://owner/name``) with its weights, in eval mode on the CPU;
        ``overrides`` replace stored hyperparameters (e.g. ``predictions_dir``).

        Raises:
            CheckpointError: an unreadable or older-format folder; ``RuntimeError``: weights that do not fit.
        """
        hparams, state = read_model_source(source, cls.stored_configs())
        names = inspect.signature(cls.__init__).parameters
        module = cls(**{key: value for key, value in {**hparams, **overrides}.items() if key in names})
        module.load_state_dict(state)  # the model and the postprocess (the other sub-modules hold no weights)
        return module.eval()

    @classmethod
    def around(cls, module: Any) -> ARNLitModule:
        """The module of ``module.hparams`` (e.g. an :class:`~arn_lightning.build.InferenceModule`) around its
        ``model`` and ``postprocess`` (the same objects, so the same weights), in its train / eval mode and on its
        device."""
        names = inspect.signature(cls.__init__).parameters
        lit = cls(**{key: value for key, value in module.hparams.items() if key in names})
        lit.model, lit.postprocess = module.model, module.postprocess
        device = next(module.model.parameters()).device
        return lit.to(device).train(module.training)

    # ------------------------------------------------------------------ setup
    def configure_model(self) -> None:
        """Lightning hook (every stage, before the optimiser is built): :meth:`apply_speed_switches`."""
        self.apply_speed_switches()

    def apply_speed_switches(self) -> None:
        """Apply ``channels_last`` (backbone memory format) and ``compile`` (``self.model.compile``) once each.

        Neither changes the parameters or their state-dict keys: a compiled module saves and loads like a plain one.
        Outside a Trainer (e.g. a predictor), call it after loading the weights.
        """
        if self.hparams.get("channels_last") and not self.model.backbone.channels_last:
            self.model.backbone.use_channels_last()
        if self.hparams.get("compile") and getattr(self.model, "_compiled_call_impl", None) is None:
            self.model.compile(**COMPILE_OPTIONS)

    def setup(self, stage: str) -> None:
        """Every stage: one log line when the data module evaluates another geometry than the loss trains
        (:func:`~arn_lightning.data.clips.geometry_mismatch`). At the start of a fresh ``fit``: the pretrained
        weights (:func:`~arn_lightning.build.load_pretrained`: ``arch.backbone_weights``, then ``detr_checkpoint``)
        and the classifiers from CLIP text embeddings."""
        self._check_geometry(stage)
        if stage != "fit" or getattr(self.trainer, "ckpt_path", None):
            return
        hp = self.hparams
        # backbone_weights, then detr_checkpoint: a registered name (arn-lightning weights list) or a path
        report = load_pretrained(self.model, hp.detr_checkpoint)
        if report is not None:
            from lightning.pytorch.utilities import rank_zero_info

            from arn_lightning.weights.detr import format_detr_report

            rank_zero_info(format_detr_report(report))
        if hp.init_text_classifiers and self.arch_config.clip_triplets:
            embeds = text_embeddings(self.clip_config, self.prompt_config, hp.triplet_categories)
            self.model.init_text_classifiers(embeds)

    def _check_geometry(self, stage: str) -> None:
        """Warn (once per process and stage) when the attached data module's evaluation scheme scores frames at
        window slots that ``loss.frames: key`` never supervised."""
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        settings = getattr(data, "hparams", {})
        if stage == "predict" or not {"window", "eval_scheme"} <= set(settings):
            return
        message = geometry_mismatch(self.loss_config.frames, settings["window"], settings["eval_scheme"])
        if message is not None:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(message)

    def _clip_image_embeds(self, batch: dict[str, Any]) -> Tensor | None:
        """CLIP image embeddings ``[BT, E]`` of the batch's frames, or None when distillation is off."""
        if not self.arch_config.distill:
            return None
        if self._clip_image is None:
            self._clip_image = FrozenClipImageEncoder(self.clip_config).to(self.device)
        pixel_values = batch["pixel_values"].flatten(0, 1)  # [BT, 3, H, W]
        pixel_mask = batch["pixel_mask"].flatten(0, 1)  # [BT, H, W]
        keys = [t["frame"] for t in batch["targets"]]
        return self._clip_image.embed(pixel_values, pixel_mask, keys)

    # ------------------------------------------------------------------ steps
    def forward(self, batch: dict[str, Any]):  # noqa: D401 - Lightning hook
        """Raw model outputs (:class:`~arn_lightning.models.outputs.ARNOutput`) for a collated batch."""
        return self.model(batch["pixel_values"], batch["pixel_mask"], batch["targets"])

    def _losses(self, batch: dict[str, Any], outputs) -> dict[str, Tensor]:
        losses = self.criterion(outputs, batch["targets"], self._clip_image_embeds(batch))
        losses["loss"] = self.criterion.weighted_total(losses)
        return losses

    def _log_losses(self, stage: str, losses: dict[str, Tensor], batch_size: float) -> None:
        main_terms = {k: v for k, v in losses.items() if not k[-1].isdigit()}  # aux terms (`_0`, `_1`) stay out
        on_step = stage == "train"
        for name, value in main_terms.items():
            self.log(
                f"{stage}/{name}",
                value.detach(),
                on_step=on_step,
                on_epoch=True,
                batch_size=batch_size,
                prog_bar=name == "loss",
                sync_dist=not on_step,
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        outputs = self(batch)
        losses = self._losses(batch, outputs)
        self._log_losses("train", losses, batch["pixel_values"].shape[0])
        return losses["loss"]

    def _outputs(self, batch: dict[str, Any]):
        """Raw outputs of an evaluation batch: :meth:`forward`, or, for a batch of causal evaluation (targets with
        ``stream``, ``data.eval_scheme: causal``), :meth:`_stream_outputs`."""
        return self._stream_outputs(batch) if "stream" in batch["targets"][0] else self(batch)

    def _stream_outputs(self, batch: dict[str, Any]):
        """The streaming step (:meth:`~arn_lightning.models.arn.ARN.stream_frames`) of a batch of single frames,
        each the next frame of its video, with the cached features of each video's previous frames.

        A video missing from a batch has ended (:func:`~arn_lightning.data.clips.stream_steps` keeps a video's
        frames in consecutive batches), so its cache is dropped; an unreadable or padding frame is fed through the
        model but not cached, so the next frame's context skips it.
        """
        targets = batch["targets"]
        window = int(targets[0]["stream"][1])
        images, states = [], []
        for b, target in enumerate(targets):
            height, width = (int(v) for v in target["size"])
            images.append(batch["pixel_values"][b, 0, :, :height, :width])  # the frame unpadded
            video = target["stream"][0]
            states.append((video, self._stream_caches.get(video) or FeatureCache(window)))
        caches = [list(state.cache) for _, state in states]
        outputs, maps = self.model.stream_frames(images, caches, window, targets)
        kept: dict[int, FeatureCache] = {}
        for (video, state), new, target in zip(states, maps, targets):
            if not target.get("padding") and "unreadable" not in target:
                state.remember(new.detach(), reset=state.starts)
            kept[video] = state
        self._stream_caches = kept
        return outputs

    @staticmethod
    def _scored(batch: dict[str, Any], preds: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
        """``(predictions, ground truths)`` that a metric scores for a batch: the evaluated frames' ``preds`` and
        targets, then every frame that should be scored but could not be read, with an empty prediction (recall 0,
        as in `arn-lightning evaluate`)."""
        unreadable = [t["unreadable"]["ground_truth"] for t in batch["targets"] if "unreadable" in t]
        gts = [t for t in batch["targets"] if t["evaluate"]]
        return preds + [empty_prediction(truth["frame"]) for truth in unreadable], gts + unreadable

    def _evaluate(self, batch: dict[str, Any], metric: SceneGraphRecall) -> tuple[list[dict[str, Any]], Any]:
        outputs = self._outputs(batch)
        preds = self.postprocess(outputs, batch["targets"], only_evaluated=True)
        metric.update(*self._scored(batch, preds))
        unreadable = [t["unreadable"] for t in batch["targets"] if "unreadable" in t]
        self._frames_scored += len(preds)
        self._unreadable.extend({"frame": u["ground_truth"]["frame"], "reason": u["reason"]} for u in unreadable)
        return preds, outputs

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Scores the batch; returns the per-frame predictions of its evaluated frames, in batch order (the
        report callback draws some of them from ``on_validation_batch_end``)."""
        preds, outputs = self._evaluate(batch, self.val_metrics)
        # A padding clip (data.samplers.UnscoredPadding) weighs 0. The weight is a float: Lightning averages the
        # summed weights over the processes in place, and an integer average of (1, 0) is 0 (an infinite loss).
        padding = all(target.get("padding") for target in batch["targets"])
        self._log_losses("val", self._losses(batch, outputs), 0.0 if padding else float(batch["pixel_values"].shape[0]))
        return preds

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Scores the batch; returns the per-frame predictions of its evaluated frames (for the prediction file)."""
        preds, _ = self._evaluate(batch, self.test_metrics)
        if self.test_nms_metrics is not None:
            self._update_triplet_nms_metrics(batch, preds)
        return preds

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """The per-frame predictions of the batch's evaluated frames (for the prediction file)."""
        return self.postprocess(self._outputs(batch), batch["targets"], only_evaluated=True)

    # ------------------------------------------------------------------ epoch ends
    def _log_metrics(self, stage: str, metric: SceneGraphRecall) -> dict[str, Tensor]:
        values = metric.compute()
        scalars = {f"{stage}/{k}": v for k, v in values.items() if not k.startswith("per_predicate/")}
        headline = {key: scalars.pop(key) for key in [f"{stage}/{name}" for name in HEADLINE_METRICS] if key in scalars}
        self.log_dict(scalars, sync_dist=False)  # the metric already reduced its sum states
        self.log_dict(headline, sync_dist=False, prog_bar=True)  # shown on the progress bar each epoch
        self.last_metrics = {k: float(v) for k, v in values.items()}
        with metric.sync_context(should_unsync=True):  # the ground-truth count per predicate over all processes
            counts = metric.gt_counts.tolist()
        self.last_metrics.update({f"per_predicate/count/{name}": float(c) for name, c in zip(PREDICATES, counts)})
        metric.reset()
        self.last_metrics.update(self._frame_accounting())
        return values

    def _frame_accounting(self) -> dict[str, float]:
        """``frames/predicted`` and ``frames/unreadable`` over all processes (their sum is every frame scored), and
        :attr:`last_unreadable` (frame and reason of each unreadable one); resets the counts."""
        unreadable: list[dict[str, str]] = list(self._unreadable)
        predicted = self._frames_scored
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (predicted, unreadable))
            predicted = sum(count for count, _ in gathered)
            unreadable = [item for _, items in gathered for item in items]
        self._frames_scored, self._unreadable = 0, []
        self.last_unreadable = sorted(unreadable, key=lambda item: item["frame"])
        if unreadable:
            log.warning(
                "%d evaluated frame(s) could not be read and count as recall 0, e.g. %s",
                len(unreadable),
                self.last_unreadable[0],
            )
        return {"frames/predicted": float(predicted), "frames/unreadable": float(len(unreadable))}

    def on_validation_epoch_start(self) -> None:
        self._stream_caches = {}  # causal evaluation starts every video afresh

    def on_test_epoch_start(self) -> None:
        self._stream_caches = {}

    def on_predict_epoch_start(self) -> None:
        self._stream_caches = {}

    def on_validation_epoch_end(self) -> None:
        self._stream_caches = {}
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._stream_caches = {}
        self._log_metrics("test", self.test_metrics)  # the PredictionWriter writes them in on_test_end
        if self.test_nms_metrics is not None:
            self.last_metrics.update(self._triplet_nms_results())

    # ------------------------------------------------------------------ triplet NMS (evaluation.triplet_nms)
    def _triplet_nms_metrics(self, metric_kwargs: dict[str, Any]) -> torch.nn.ModuleDict | None:
        """One :class:`SceneGraphRecall` per constraint for the predictions after the triplet NMS (the filtered
        prediction depends on the constraint), or None when ``evaluation.triplet_nms`` is off."""
        if self.eval_config.triplet_nms is None:
            return None
        return torch.nn.ModuleDict(
            {name: SceneGraphRecall(constraints=(name,), **metric_kwargs) for name in CONSTRAINTS}
        )

    def _update_triplet_nms_metrics(self, batch: dict[str, Any], preds: list[dict[str, Any]]) -> None:
        """Score the batch's predictions after the triplet NMS of each constraint (the frames and ground truth of
        :meth:`_evaluate`, :meth:`_scored`: unreadable frames count with recall 0)."""
        evaluation = self.eval_config
        settings = dict(
            threshold=evaluation.triplet_nms,
            alpha=evaluation.triplet_nms_alpha,
            beta=evaluation.triplet_nms_beta,
            semi_threshold=evaluation.semi_threshold,
            iou_convention=evaluation.iou,
        )
        for constraint, metric in self.test_nms_metrics.items():
            metric.update(*self._scored(batch, [triplet_nms(pred, constraint, **settings) for pred in preds]))

    def _triplet_nms_results(self) -> dict[str, float]:
        """The metrics after the triplet NMS, every key prefixed ``triplet_nms/`` (``triplet_nms/with/R@20``, ...;
        the scalars also logged as ``test/triplet_nms/...``), and the NMS settings; resets the metrics."""
        evaluation = self.eval_config
        results = {
            "triplet_nms/threshold": float(evaluation.triplet_nms),
            "triplet_nms/alpha": float(evaluation.triplet_nms_alpha),
            "triplet_nms/beta": float(evaluation.triplet_nms_beta),
        }
        for metric in self.test_nms_metrics.values():
            values = {f"triplet_nms/{key}": float(value) for key, value in metric.compute().items()}
            metric.reset()
            scalars = {f"test/{key}": value for key, value in values.items() if "/per_predicate/" not in key}
            self.log_dict(scalars, sync_dist=False)  # the metric already reduced its sum states
            results.update(values)
        return results

    def on_predict_epoch_end(self) -> None:
        self._stream_caches = {}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        """AdamW over three parameter groups (backbone, CLIP-initialised embeddings, the rest) and a step decay."""
        optim = self.optim_config
        groups = self.model.param_groups()
        lrs = {"backbone": optim.lr_backbone, "text": optim.lr_text, "rest": optim.lr}
        param_groups = [{"params": params, "lr": lrs[name], "name": name} for name, params in groups.items() if params]
        optimizer = torch.optim.AdamW(param_groups, weight_decay=optim.weight_decay, betas=ADAMW_BETAS)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, optim.lr_drop_epoch, gamma=LR_DROP_GAMMA)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalise a batch's ``uint8`` pixels on the device (Lightning calls this hook after moving every batch,
        with the CLI or a plain ``lightning.Trainer``): the data module's loaders send ``uint8`` batches, a quarter
        of the bytes of ``float32`` (docs/ARCHITECTURE.md section 2), and
        :func:`~arn_lightning.data.collate.normalize_batch` makes them the ImageNet-normalised
        ``float32 [B, T, 3, H, W]`` batch (padding 0.0) that ``ClipCollator()`` builds, bit for bit. A batch already
        normalised passes unchanged. Lightning converts a batch's float tensors for the trainer's precision before
        the transfer (``bf16-true``: to bfloat16), which the uint8 pixels escaped: they get the same conversion here,
        so the step sees what a float batch would have given it."""
        normalised = normalize_batch(batch)
        trainer = self._trainer
        if normalised is batch or trainer is None:
            return normalised
        return {**normalised, "pixel_values": trainer.precision_plugin.convert_input(normalised["pixel_values"])}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["arn_lightning"] = {"format": 1, "hparams_keys": sorted(self.hparams.keys())}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        #: Epoch and step of the checkpoint this module was restored from (``metrics_test.json`` names them).
        self.loaded_checkpoint = {"epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step")}

    def configure_callbacks(self) -> list[L.Callback]:
        """The callbacks every run of this module needs, with the CLI or a plain ``lightning.Trainer``: the
        :class:`~arn_lightning.training.prediction_writer.PredictionWriter` (prediction and metrics files) and the
        :class:`~arn_lightning.training.rng.RandomStateCheckpoint` (``checkpoint["rng_states"]``, exact resume). One the
        trainer already has (passed by the user, or attached by an earlier run of the same trainer) is kept and not
        added again. Lightning attaches these before it restores callbacks from a ``ckpt_path``."""
        present = self._trainer.callbacks if self._trainer is not None else []
        needed = (PredictionWriter, RandomStateCheckpoint)
        return [kind() for kind in needed if not any(isinstance(callback, kind) for callback in present)]
