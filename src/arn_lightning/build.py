"""The one builder: settings (or a checkpoint's hyperparameters, or a shared model folder) -> ARN model + postprocess
(+ criterion), then the pretrained weights.

Training (:class:`~arn_lightning.training.lit_module.ARNLitModule`), inference
(:func:`~arn_lightning.inference.api.load_model`, streaming, the app), the ONNX export and its runner build through
this module, so that a model is built one way with one set of checks:

* :func:`build_model` constructs the model, the criterion (when asked) and the postprocess around one
  :class:`~arn_lightning.triplets.TripletVocabulary`, in that order (the random draws of a fresh model are those of
  every earlier version); construction reads no file and opens no connection.
* :func:`load_pretrained` then loads the pretrained weights the settings name (ImageNet / registry / local ResNet,
  :mod:`arn_lightning.weights.resnet`; DETR, :mod:`arn_lightning.weights.detr`), at the start of a fresh ``fit``.
* :func:`load_inference_module` turns a checkpoint file, a model folder (``arn-lightning export --format
  safetensors``, :mod:`arn_lightning.weights.folder`) or a Hugging Face Hub repository (``hf://owner/name``,
  :mod:`arn_lightning.weights.hub`) into an :class:`InferenceModule` (model + postprocess + hyperparameters).

A checkpoint written before 0.1.0 whose settings this version no longer has is refused with one error naming the
file and the setting (:func:`check_stored_settings`); one that lacks a setting added since is read with the value
that rebuilds its model (:data:`STORED_DEFAULTS`, :func:`complete_stored_config`), in :func:`as_config`, where every
path from stored settings to a model passes: the inference module, ``ARNLitModule`` (``load_from_checkpoint``, a
model folder) and the CLI, which hands a ``--ckpt_path``'s stored ``arch`` mapping to the module as it is.
"""

from __future__ import annotations

import copy
import logging
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from torch import nn

from arn_lightning._types import PathLike
from arn_lightning.checkpoint_file import CheckpointError, load_checkpoint_file
from arn_lightning.criterion import LossConfig, SetCriterion
from arn_lightning.data.transforms import DEFAULT_LONGER, DEFAULT_SHORTER, IMAGENET_MEAN, IMAGENET_STD
from arn_lightning.models.arn import ARN
from arn_lightning.models.config import ARNConfig
from arn_lightning.postprocess import PostProcess, PostProcessConfig
from arn_lightning.text.config import ClipConfig
from arn_lightning.text.prompts import PromptConfig
from arn_lightning.triplets import TripletVocabulary

log = logging.getLogger(__name__)

#: Key that ``ARNLitModule.on_save_checkpoint`` writes into every checkpoint of this project.
CHECKPOINT_MARKER = "arn_lightning"
#: Keys of every Lightning checkpoint.
LIGHTNING_KEYS = ("state_dict", "pytorch-lightning_version")
#: ``state_dict`` prefixes of ``ARNLitModule``'s training-only sub-modules (skipped; none holds persistent state today).
TRAINING_PREFIXES = ("criterion.", "val_metrics.", "test_metrics.", "_clip_image.")
#: The configuration dataclasses the builder reads, by hyperparameter name (training adds its optimiser and
#: evaluation settings when it checks a checkpoint).
STORED_CONFIGS: dict[str, type] = {
    "arch": ARNConfig,
    "loss": LossConfig,
    "clip": ClipConfig,
    "prompts": PromptConfig,
    "post": PostProcessConfig,
}
#: The data module's transform settings replayed at inference, with the data layer's defaults.
TRANSFORM_DEFAULTS: dict[str, Any] = {
    "resize_shorter": DEFAULT_SHORTER,
    "resize_longer": DEFAULT_LONGER,
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
}
#: Per configuration dataclass, the settings added since checkpoints store it, each with the value that rebuilds the
#: model of the versions before it. A complete stored mapping (every other field present) that lacks some of them
#: was written before they existed and gets these values (:func:`complete_stored_config`, in :func:`as_config`).
#: Every field added since is listed, even where its default is the old behaviour, so that a stored mapping of any
#: earlier version is recognised: ``content_queries`` the N(0, 1) content queries, ``distill_features`` the separate
#: distillation projection of the earlier versions (its default, ``classifier``, would build another model).
STORED_DEFAULTS: dict[type, dict[str, Any]] = {
    ARNConfig: {"content_queries": "normal", "distill_features": "projection"},
}
#: Settings a stored ``data_settings`` must hold.
REQUIRED_SETTINGS = ("resize_shorter", "resize_longer")
#: Prefix of a model folder on the Hugging Face Hub (``hf://owner/name``; ``pathlib`` folds it to ``hf:/``).
HUB_PREFIXES = ("hf://", "hf:/")


# ----------------------------------------------------------------------------------------------- settings
def require_categories(categories: Any) -> Any:
    """``categories`` (per predicate type the (predicate, object) pairs), refused when None.

    Raises:
        ValueError: ``categories`` is None (the message says where they come from).
    """
    if categories is None:
        raise ValueError(
            "Expected triplet_categories (per predicate type the (predicate, object) pairs of the training split) "
            "but got None; the CLI links them from the data module, in Python pass "
            "AGDataModule(...).triplet_categories"
        )
    return categories


def as_config(cls: type, value: Any, name: str) -> Any:
    """``value`` as a ``cls`` dataclass of its own: a copy if it is one (a default argument's instance is shared by
    every call: settings changed on one module must not leak into the next), built from a mapping (a stored mapping
    of an earlier version completed first: :func:`complete_stored_config`).

    Raises:
        ValueError: a mapping with unknown keys, or a value the dataclass refuses (the message names
            ``model.<name>``).
        TypeError: neither a ``cls`` nor a mapping.
    """
    if isinstance(value, cls):
        return copy.deepcopy(value)
    if isinstance(value, Mapping):
        value = complete_stored_config(cls, value)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"Expected {name} keys among {sorted(known)} but got unknown {unknown}")
        try:
            return cls(**value)
        except (ValueError, TypeError) as error:  # name the setting: the message itself names the field
            raise ValueError(f"model.{name}: {error}") from error
    raise TypeError(f"Expected {name} as a {cls.__name__} or a mapping but got {type(value).__name__}")


def complete_stored_config(cls: type, value: Mapping[str, Any]) -> Mapping[str, Any]:
    """``value`` with :data:`STORED_DEFAULTS` filled in when it is a stored ``cls`` of an earlier version: it holds
    every other field of ``cls`` and lacks some of these (a checkpoint stores every field). Any other mapping, e.g. a
    partial one that leaves settings to this version's defaults, is returned as it is.

    Example: an ``arch`` stored with ``distill: true`` before ``distill_features`` existed was trained with the
    separate projection (``distill_proj``, whose weights it holds), so it is read as ``distill_features:
    projection``, not as the new default.
    """
    defaults = STORED_DEFAULTS.get(cls, {})
    missing = {f.name for f in fields(cls)} - set(value)
    if not missing or not missing <= set(defaults):
        return value
    return {**value, **{name: defaults[name] for name in sorted(missing)}}


def check_stored_settings(hparams: Mapping[str, Any], source: PathLike, configs: Mapping[str, type]) -> None:
    """Refuse stored hyperparameters holding a setting this version does not have: a checkpoint of an older format
    (e.g. one written before 0.1.0, whose retired settings are now constants, ``docs/model.md`` section 6).

    Raises:
        CheckpointError: names ``source``, the first unknown ``model.<config>.<key>`` and what to do.
    """
    for name, cls in configs.items():
        stored = hparams.get(name)
        if not isinstance(stored, Mapping):
            continue
        unknown = sorted(set(stored) - {f.name for f in fields(cls)})
        if unknown:
            raise CheckpointError(
                f"{source}: Expected the settings of this version but model.{name}.{unknown[0]} is a setting of an "
                f"older format (unknown settings: {unknown}), which this version no longer reads: retrain the model "
                "with this version, or load it with the arn-lightning release that wrote it"
            )


def transform_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The frame settings to replay: the checkpoint's ``data_settings`` (the data module's ``resize_shorter``,
    ``resize_longer`` and optionally ``mean`` / ``std``), or the data layer's defaults when it stores none (a
    module built in Python without the CLI, which the data module then fed with those defaults).

    Raises:
        CheckpointError: ``data_settings`` is stored but lacks the resize sizes.
    """
    if settings is None:
        return dict(TRANSFORM_DEFAULTS)
    missing = [key for key in REQUIRED_SETTINGS if key not in settings]
    if missing:
        raise CheckpointError(
            f"Expected data_settings with {list(REQUIRED_SETTINGS)} but {missing} are missing (got {sorted(settings)})"
        )
    return {key: settings.get(key, default) for key, default in TRANSFORM_DEFAULTS.items()}


def plain_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """``hparams`` with every configuration dataclass as a plain dict (what a checkpoint stores)."""
    return {
        key: asdict(value) if is_dataclass(value) and not isinstance(value, type) else value
        for key, value in hparams.items()
    }


# ----------------------------------------------------------------------------------------------- construction
@dataclass
class BuiltModel:
    """What :func:`build_model` returns.

    Attributes:
        vocabulary: the triplet classes shared by the three modules.
        model: the ARN model, with random weights.
        postprocess: raw outputs -> per-frame predictions.
        criterion: the losses, when asked for (None otherwise).
    """

    vocabulary: TripletVocabulary
    model: ARN
    postprocess: PostProcess
    criterion: SetCriterion | None = None


def build_vocabulary(categories: Any, clip_triplets: bool) -> TripletVocabulary:
    """The :class:`TripletVocabulary` of ``categories`` (see :func:`require_categories`)."""
    return TripletVocabulary.from_categories(require_categories(categories), bool(clip_triplets))


def build_postprocess(post: Any, vocabulary: TripletVocabulary, task: str) -> PostProcess:
    """The :class:`PostProcess` of ``post`` (a config or a mapping) for ``task``."""
    return PostProcess(as_config(PostProcessConfig, post, "post"), vocabulary, task=task)


def build_model(arch: Any, categories: Any, post: Any = None, loss: Any = None) -> BuiltModel:
    """The model, the criterion (when ``loss`` is given) and the postprocess of these settings, built in that order
    with random weights (no file read, no download: :func:`load_pretrained` loads pretrained weights afterwards).

    Args:
        arch: an :class:`ARNConfig` or a mapping of its fields.
        categories: per predicate type the (predicate, object) pairs of the training split.
        post: a :class:`PostProcessConfig` or a mapping (None: the defaults).
        loss: a :class:`LossConfig` or a mapping; None builds no criterion.

    Raises:
        ValueError: no ``categories``, or invalid settings (the message names ``model.<config>``).
        TypeError: a config neither a dataclass nor a mapping.
    """
    require_categories(categories)
    arch = as_config(ARNConfig, arch, "arch")
    vocabulary = build_vocabulary(categories, arch.clip_triplets)
    model = ARN(arch, vocabulary)
    # arch.distill and arch.task are the one switch of the distillation and the one task of the module.
    criterion = None if loss is None else SetCriterion(as_config(LossConfig, loss, "loss"), vocabulary, arch.distill)
    postprocess = build_postprocess(PostProcessConfig() if post is None else post, vocabulary, arch.task)
    return BuiltModel(vocabulary, model, postprocess, criterion)


def load_pretrained(model: ARN, detr_checkpoint: str | None = None) -> Any:
    """Load the pretrained weights the settings name into a built model: the backbone's
    (``arch.backbone_weights``, :func:`arn_lightning.weights.resnet.load_backbone_weights`), then DETR's
    (``detr_checkpoint``, :func:`arn_lightning.weights.detr.load_detr_checkpoint`, which overrides the backbone).
    Draws no random number. A DETR prior loaded into a model whose ``arch.content_queries`` is ``"normal"`` logs one
    warning: DETR's decoder layers were trained on zero content queries (``docs/model.md`` section 6).

    Returns:
        The :class:`~arn_lightning.weights.detr.DetrLoadReport` when a DETR checkpoint was loaded, else None.

    Raises:
        WeightsUnavailable: a named file that is absent and cannot be downloaded; ``FileNotFoundError`` /
            ``ValueError``: a missing or foreign file (see the two loaders).
    """
    from arn_lightning.weights.resnet import load_backbone_weights

    load_backbone_weights(model.backbone, model.config.backbone_weights)
    if not detr_checkpoint:
        return None
    from arn_lightning.weights.detr import load_detr_checkpoint

    report = load_detr_checkpoint(model, detr_checkpoint)
    if model.config.content_queries == "normal":
        log.warning(
            "model.arch.content_queries is 'normal': the content queries start as N(0, 1) noise, although the DETR "
            "decoder layers just loaded (model.detr_checkpoint) were trained with zero content queries; set "
            "model.arch.content_queries: zeros to start them in that regime (docs/model.md section 6)"
        )
    return report


class InferenceModule(nn.Module):
    """``model`` and ``postprocess`` of an ``ARNLitModule``, and its hyperparameters, without Lightning.

    Args:
        hparams: the module's hyperparameters (a checkpoint's ``hyper_parameters``); ``arch``, ``post``,
            ``triplet_categories`` and ``data_settings`` are read, the training settings are kept but not used.

    Raises:
        ValueError: no ``triplet_categories``, or an invalid ``arch`` / ``post`` (as ``ARNLitModule`` raises it).
        TypeError: ``arch`` or ``post`` neither a dataclass nor a mapping.
    """

    def __init__(self, hparams: Mapping[str, Any]) -> None:
        super().__init__()
        require_categories(hparams.get("triplet_categories"))
        self.arch_config: ARNConfig = as_config(ARNConfig, hparams.get("arch", ARNConfig()), "arch")
        self.post_config: PostProcessConfig = as_config(PostProcessConfig, hparams.get("post", {}), "post")
        self.hparams: dict[str, Any] = plain_hparams(hparams)
        built = build_model(self.arch_config, hparams["triplet_categories"], self.post_config)
        self.model, self.postprocess = built.model, built.postprocess

    def load_lightning_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load an ``ARNLitModule`` ``state_dict`` (``model.`` and ``postprocess.`` keys, strictly; the training-only
        sub-modules' keys are skipped).

        Raises:
            RuntimeError: missing, unexpected or mis-shaped weights (torch's ``load_state_dict`` message, naming
                ``ARNLitModule`` as ``load_from_checkpoint`` does).
        """
        kept = {key: value for key, value in state_dict.items() if not key.startswith(TRAINING_PREFIXES)}
        try:
            self.load_state_dict(kept, strict=True)
        except RuntimeError as error:
            message = str(error).replace(f"for {type(self).__name__}:", "for ARNLitModule:", 1)
            raise RuntimeError(message) from error


# ----------------------------------------------------------------------------------------------- loading
def read_checkpoint(path: PathLike, configs: Mapping[str, type] = STORED_CONFIGS) -> dict[str, Any]:
    """Load ``path`` (verified, tensors memory-mapped) and check that it is an ARN Lightning checkpoint of this
    version's format.

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: the path is not a file, not a PyTorch file, not a Lightning checkpoint, a Lightning
            checkpoint of another model, or one of an older format (pickled classes, a setting this version no
            longer has: :func:`check_stored_settings` with ``configs``).
    """
    path = Path(path)
    try:
        checkpoint = load_checkpoint_file(path, mmap=True)
    except CheckpointError as error:
        if isinstance(error.__cause__, pickle.UnpicklingError):
            raise CheckpointError(
                f"{path}: Expected a checkpoint of this version's format (plain settings) but it stores pickled "
                f"classes, as versions before 0.1.0 did; retrain the model with this version ({error.__cause__})"
            ) from error
        raise
    missing = [key for key in LIGHTNING_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"Expected a Lightning checkpoint in {path} but it lacks {missing} "
            f"(keys: {sorted(map(str, checkpoint))[:8]})"
        )
    if CHECKPOINT_MARKER not in checkpoint or "hyper_parameters" not in checkpoint:
        raise CheckpointError(
            f"Expected a Lightning checkpoint of ARNLitModule but {path} is one of another model "
            f"(no {CHECKPOINT_MARKER!r} entry; hyperparameters: {sorted(checkpoint.get('hyper_parameters', {}))[:8]})"
        )
    check_stored_settings(checkpoint["hyper_parameters"], path, configs)
    return checkpoint


def is_hub_source(source: PathLike) -> bool:
    """Whether ``source`` names a Hugging Face Hub repository (``hf://owner/name``)."""
    return str(source).startswith(HUB_PREFIXES)


def read_model_source(source: PathLike, configs: Mapping[str, type] = STORED_CONFIGS) -> tuple[dict, Mapping]:
    """``(hyperparameters, ARNLitModule state dict)`` of a checkpoint file, a model folder or ``hf://owner/name``
    (downloaded with :func:`arn_lightning.weights.hub.download_model_folder`, honouring ``HF_HUB_OFFLINE``).

    Raises:
        CheckpointError: an unreadable, foreign or older-format checkpoint or model folder (the message names it).
    """
    from arn_lightning.weights import folder, hub

    path = hub.download_model_folder(str(source)) if is_hub_source(source) else Path(source)
    if path.is_dir():
        hparams, state = folder.read_model_folder(path)
        check_stored_settings(hparams, path / folder.CONFIG_FILE, configs)
        return hparams, state
    checkpoint = read_checkpoint(path, configs)
    return checkpoint["hyper_parameters"], checkpoint["state_dict"]


def source_identity(source: PathLike) -> dict[str, str]:
    """``{"name", "sha256"}`` of the checkpoint a model comes from: a checkpoint file's own, or for a model folder
    (or ``hf://owner/name``) the checkpoint it was exported from (its ``config.json``), so that both name the same
    weights by the same hash."""
    from arn_lightning.weights import folder, hub
    from arn_lightning.weights.registry import sha256_file

    path = hub.download_model_folder(str(source)) if is_hub_source(source) else Path(source)
    if path.is_dir():
        return {"name": path.name, "sha256": str(folder.read_config(path)["checkpoint"]["sha256"])}
    return {"name": path.name, "sha256": sha256_file(path)}


def load_inference_module(source: PathLike) -> InferenceModule:
    """The model and postprocess of a checkpoint, a model folder or ``hf://owner/name`` on the CPU, in eval mode,
    without Lightning: the :class:`InferenceModule` of the stored hyperparameters (no pretrained weights loaded) with
    the stored weights; the predictions of ``ARNLitModule.load_from_checkpoint``, in a fraction of the start-up time.

    Raises:
        CheckpointError: see :func:`read_model_source`; also when the weights do not fit the stored
            hyperparameters.
    """
    hparams, state = read_model_source(source)
    try:
        module = InferenceModule(hparams)
        module.load_lightning_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"Expected ARNLitModule weights in {source} but loading failed: {error}") from error
    return module.eval()


__all__ = [
    "CHECKPOINT_MARKER",
    "STORED_CONFIGS",
    "STORED_DEFAULTS",
    "TRAINING_PREFIXES",
    "BuiltModel",
    "InferenceModule",
    "as_config",
    "build_model",
    "build_postprocess",
    "build_vocabulary",
    "check_stored_settings",
    "complete_stored_config",
    "is_hub_source",
    "load_inference_module",
    "load_pretrained",
    "read_checkpoint",
    "read_model_source",
    "require_categories",
    "source_identity",
    "transform_settings",
]
