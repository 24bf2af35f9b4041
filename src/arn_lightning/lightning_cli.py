"""LightningCLI for ``arn-lightning fit | validate | test | predict``.

Links the data module's derived values into the model (triplet categories, transform settings, clip length, task)
so that a config names each value once, and adds the project's callbacks: the best checkpoint on ``val/with/R@20``
(``checkpoint.*``), the latest one as ``last.ckpt`` (``last_checkpoint.*``), the scene-graph report (``report.*``) and
a rich progress bar.
"""

from __future__ import annotations

import copy
import sys
from typing import Any, Dict, List, Optional

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from arn_lightning.callbacks import SceneGraphReport
from arn_lightning.data.datamodule import AGDataModule
from arn_lightning.lit_module import ARNLitModule

#: Model arguments that belong to the run, not to the trained weights: a ``--ckpt_path`` run keeps its own values.
RUNTIME_MODEL_KEYS = ("predictions_dir", "evaluation")
#: The metric that selects the best checkpoint.
MONITOR = "val/with/R@20"


class ARNLightningCLI(LightningCLI):
    """LightningCLI with the project's argument links and forced checkpoint callback."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # Lightning (>= 2.5) refreshes a save_last checkpoint only when a top-k one was saved at the same step, so
        # "last" is a checkpoint of its own: the latest state every epoch, what --ckpt_path resumes from.
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(SceneGraphReport, "report")
        parser.set_defaults(
            {
                "checkpoint.monitor": MONITOR,
                "checkpoint.mode": "max",
                "checkpoint.filename": "epoch{epoch:03d}-R20_{val/with/R@20:.4f}",
                "checkpoint.auto_insert_metric_name": False,
                "last_checkpoint.monitor": None,
                "last_checkpoint.save_top_k": 1,
                "last_checkpoint.filename": "last",
                "last_checkpoint.enable_version_counter": False,
            }
        )
        parser.link_arguments("data.clip_len", "model.arch.num_frames")
        parser.link_arguments("model.arch.distill", "model.loss.distill")  # one switch for the distillation
        parser.link_arguments("data.task", "model.arch.task")
        parser.link_arguments("data.triplet_categories", "model.triplet_categories", apply_on="instantiate")
        parser.link_arguments("data.transform_settings", "model.data_settings", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """Lightning replaces the model's settings by the checkpoint's hyperparameters when ``--ckpt_path`` is given;
        keep this run's values of the run-time settings (:data:`RUNTIME_MODEL_KEYS`: where predictions go and how
        they are scored), which are not part of what the checkpoint trained."""
        subcommand = self.config.get("subcommand")
        kept = {}
        if subcommand:
            kept = {key: copy.deepcopy(self.config.get(f"{subcommand}.model.{key}")) for key in RUNTIME_MODEL_KEYS}
        super()._parse_ckpt_path()
        for key, value in kept.items():
            self.config[f"{subcommand}.model.{key}"] = value

    def _instantiate_trainer(self, config: Dict[str, Any], callbacks: List[Callback]) -> Trainer:
        """Honour ``trainer.enable_checkpointing=false`` / ``enable_progress_bar=false`` (drop the project's
        checkpoint callback / do not add the rich progress bar), and add the rich bar unless one is configured."""
        if config.get("enable_checkpointing") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        configured = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in configured):
            callbacks = [*callbacks, RichProgressBar(leave=True)]
        return super()._instantiate_trainer(config, callbacks)


def build_cli(args: Optional[List[str]] = None, run: bool = True) -> ARNLightningCLI:
    """Build (and by default run) the CLI on ``args``; the object gives access to ``.trainer`` and ``.model``."""
    return ARNLightningCLI(
        ARNLitModule,
        AGDataModule,
        args=args,
        run=run,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


def run_lightning_cli(args: List[str]) -> int:
    """Entry point used by ``arn-lightning fit|validate|test|predict``."""
    # From the shell the arguments are sys.argv itself: let LightningCLI read them (it warns when given both).
    build_cli(None if list(args) == sys.argv[1:] else args)
    return 0
