"""The inference half of an ``ARNLitModule``, built from a checkpoint without importing Lightning.

``arn-lightning infer`` and :func:`arn_lightning.inference.api.load_model` need the model, the postprocess and the
frame settings of a checkpoint, not the trainer, the metrics, the criterion or the CLIP towers. Importing
:mod:`arn_lightning.training.lit_module` costs seconds (Lightning, open_clip, torchmetrics); :class:`InferenceModule`
is built
from the checkpoint's ``hyper_parameters`` exactly as ``ARNLitModule.__init__`` builds ``model`` and ``postprocess``
(same configuration checks, same retired settings, same :class:`~arn_lightning.triplets.TripletVocabulary`) and loads
the ``model.`` / ``postprocess.`` weights of its ``state_dict``, so that its predictions are bit-for-bit those of
``ARNLitModule.load_from_checkpoint``. :meth:`InferenceModule.to_lightning` builds the full ``ARNLitModule`` around
the same model when one is needed (e.g. to evaluate with a ``Trainer``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

from torch import nn

from arn_lightning.hparams import as_config
from arn_lightning.models.arn import ARN
from arn_lightning.models.config import ARNConfig
from arn_lightning.postprocess import PostProcess, PostProcessConfig
from arn_lightning.triplets import TripletVocabulary

#: ``state_dict`` prefixes of ``ARNLitModule``'s training-only sub-modules (skipped; none holds persistent state today).
TRAINING_PREFIXES = ("criterion.", "val_metrics.", "test_metrics.", "_clip_image.")


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
        categories = hparams.get("triplet_categories")
        if categories is None:
            raise ValueError(
                "Expected triplet_categories (per predicate type the (predicate, object) pairs of the training split) "
                "but got None; the CLI links them from the data module, in Python pass "
                "AGDataModule(...).triplet_categories"
            )
        self.arch_config: ARNConfig = as_config(ARNConfig, hparams.get("arch", ARNConfig()), "arch")
        post = hparams.get("post", PostProcessConfig())
        self.post_config: PostProcessConfig = as_config(PostProcessConfig, post, "post")
        self.hparams: dict[str, Any] = {
            key: asdict(value) if is_dataclass(value) and not isinstance(value, type) else value
            for key, value in hparams.items()
        }
        vocabulary = TripletVocabulary.from_categories(categories, self.arch_config.clip_triplets)
        self.model = ARN(self.arch_config, vocabulary)
        self.postprocess = PostProcess(self.post_config, vocabulary, task=self.arch_config.task)

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

    def to_lightning(self) -> Any:
        """The ``ARNLitModule`` of these hyperparameters around this module's ``model`` and ``postprocess`` (the same
        objects, so the same weights), in this module's train / eval mode and on its device. Imports Lightning."""
        from arn_lightning.training.lit_module import ARNLitModule

        names = inspect.signature(ARNLitModule.__init__).parameters
        module = ARNLitModule(**{key: value for key, value in self.hparams.items() if key in names})
        module.model, module.postprocess = self.model, self.postprocess
        device = next(self.model.parameters()).device
        return module.to(device).train(self.training)


__all__ = ["TRAINING_PREFIXES", "InferenceModule"]
