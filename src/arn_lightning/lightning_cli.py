"""LightningCLI for ``arn-lightning fit | validate | test | predict``.

Links the data module's derived values into the model (triplet categories, transform settings, clip length, task)
so that a config names each value once, and adds the project's default callbacks (checkpoint on ``val/with/R@20``,
rich progress bar, learning-rate monitor).
"""

from __future__ import annotations

from typing import List, Optional

from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from arn_lightning.callbacks import SceneGraphReport
from arn_lightning.data.datamodule import AGDataModule
from arn_lightning.lit_module import ARNLitModule

#: The metric that selects the best checkpoint.
MONITOR = "val/with/R@20"


class ARNLightningCLI(LightningCLI):
    """LightningCLI with the project's argument links and forced checkpoint callback."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(SceneGraphReport, "report")
        parser.set_defaults(
            {
                "checkpoint.monitor": MONITOR,
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch:03d}-R20_{val/with/R@20:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.link_arguments("data.clip_len", "model.arch.num_frames")
        parser.link_arguments("data.task", "model.arch.task")
        parser.link_arguments("data.triplet_categories", "model.triplet_categories", apply_on="instantiate")
        parser.link_arguments("data.transform_settings", "model.data_settings", apply_on="instantiate")


def build_cli(args: Optional[List[str]] = None, run: bool = True) -> ARNLightningCLI:
    """Build (and by default run) the CLI on ``args``; the object gives access to ``.trainer`` and ``.model``."""
    return ARNLightningCLI(
        ARNLitModule,
        AGDataModule,
        args=args,
        run=run,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "callbacks": [RichProgressBar(leave=True)],
        },
        auto_configure_optimizers=False,
    )


def run_lightning_cli(args: List[str]) -> int:
    """Entry point used by ``arn-lightning fit|validate|test|predict``."""
    build_cli(args)
    return 0
