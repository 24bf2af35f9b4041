"""Helpers for the training-system tests: a tiny LightningCLI config around the synthetic AG of the ``train_root``
fixture (``conftest.py``), and state-dict comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

#: Repository root (the project's configs live under it).
REPO = Path(__file__).resolve().parents[1]


def tiny_config(root: Path, workdir: Path, **trainer: Any) -> dict[str, Any]:
    """A LightningCLI config of a tiny ARN on the synthetic AG at ``root`` (CSV logs under ``workdir``)."""
    trainer_config = {
        "accelerator": "cpu",
        "devices": 1,
        "precision": "32-true",
        "max_steps": 4,
        "max_epochs": 5,
        "limit_val_batches": 2,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "gradient_clip_val": 0.1,
        "default_root_dir": str(workdir),
        "logger": {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(workdir / "logs"), "name": "tiny"},
        },
        **trainer,
    }
    return {
        "seed_everything": 0,
        "trainer": trainer_config,
        "model": {
            "arch": {
                "backbone": "resnet18",
                "backbone_weights": None,
                "backbone_stride": 16,
                "backbone_norm": "batch",
                "freeze_backbone_layers": 0,
                "hidden_dim": 16,
                "nheads": 2,
                "ffn_dim": 32,
                "dropout": 0.1,
                "enc_layers": 1,
                "entity_layers": 1,
                "predicate_layers": 1,
                "num_queries": 4,
                "clip_embed_dim": 16,
                "distill": False,
                "triplet_prior": 0.01,
            },
            "clip": {"clip_model": "arn-tiny-clip", "clip_pretrained": None, "cache_dir": str(workdir / "clip")},
            "optim": {"lr": 1e-3, "lr_backbone": 1e-3, "lr_text": 1e-3, "lr_drop_epoch": 2},
        },
        "data": {
            "root": str(root),
            "task": "sgdet",
            "clip_len": 2,
            "resize_shorter": 48,
            "resize_longer": 64,
            "batch_size": 2,
            "eval_batch_size": 4,
            "num_workers": 0,
        },
        "checkpoint": {"monitor": "val/with/R@20", "mode": "max"},
        "report": {"num_images": 2},
    }


def write_config(config: dict[str, Any], path: Path) -> Path:
    """Dump ``config`` as YAML at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_cli(args: list[str]):
    """Run the project's LightningCLI in this process; returns the CLI object (``.trainer``, ``.model``)."""
    from arn_lightning.training.lightning_cli import build_cli

    return build_cli(args)


def model_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the module's state dict."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    """Equal keys and tensors (exactly, or within ``atol``); names the first differing tensor."""
    assert a.keys() == b.keys()
    for key in a:
        if atol == 0.0:
            assert torch.equal(a[key], b[key]), f"{key} differs (max {float((a[key] - b[key]).abs().max()):.3g})"
        else:
            torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=f"{key} differs")
