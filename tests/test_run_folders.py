"""A run is one folder: a tested or resumed checkpoint writes into its run, and W&B runs keep their own files
(arn_lightning.training.runs, docs/runs.md)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import wandb
import yaml

from arn_lightning.training.lightning_cli import run_lightning_cli
from train_fixtures import run_cli, tiny_config, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["CSVLogger", "TensorBoardLogger"])
def run(request: pytest.FixtureRequest, train_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny fit of 2 steps (one epoch) with the CSV or the TensorBoard logger; its run folder."""
    work = tmp_path_factory.mktemp("run")
    config = tiny_config(train_root, work, max_steps=-1, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    config["trainer"]["logger"]["class_path"] = f"lightning.pytorch.loggers.{request.param}"
    cli = run_cli(["fit", "--config", str(write_config(config, work / "tiny.yaml"))])
    folder = Path(cli.trainer.log_dir)
    metrics = "metrics.csv" if request.param == "CSVLogger" else "events.out.tfevents.*"
    return {"work": work, "folder": folder, "last": folder / "checkpoints" / "last.ckpt", "metrics": metrics}


def test_testing_a_run_checkpoint_writes_into_the_run(run: dict[str, Any]) -> None:
    folder = run["folder"]
    args = ["test", "--config", str(folder / "config.yaml"), f"--ckpt_path={run['last']}"]
    run_cli(args)
    test = folder / "test"
    for name in ("config.yaml", "metrics_test.json", "predictions_test.jsonl", run["metrics"]):
        assert list(test.glob(name)), f"{name} not in {test}: {sorted(p.name for p in test.iterdir())}"
    assert list((test / "reports").glob("test_per_predicate_*.csv"))
    run_cli(args)  # a second test never reuses the first one's folder
    assert (folder / "test-1" / "metrics_test.json").is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no new version folder beside the run


def test_a_resumed_fit_writes_into_the_run_and_keeps_its_checkpoints(run: dict[str, Any], train_root: Path) -> None:
    folder = run["folder"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = run_cli(
            [
                "fit",
                "--config",
                str(folder / "config.yaml"),
                "--trainer.max_steps=3",
                "--trainer.max_epochs=2",
                f"--ckpt_path={run['last']}",
            ]
        )
    assert cli.trainer.global_step == 3
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    resume = folder / "resume"
    assert (resume / "config.yaml").is_file() and list(resume.glob(run["metrics"]))
    assert torch.load(run["last"], map_location="cpu", weights_only=True)["global_step"] == 3  # the run's last.ckpt
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_two_wandb_runs_in_one_save_dir_keep_their_own_folders(train_root: Path, tmp_path: Path) -> None:
    folders = []
    for lr in (1e-3, 2e-3):
        config = tiny_config(
            train_root, tmp_path, max_steps=-1, max_epochs=1, limit_train_batches=2, limit_val_batches=1
        )
        config["trainer"]["logger"] = {
            "class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {"offline": True, "save_dir": str(tmp_path / "wandb_runs"), "project": "arn-tests"},
        }
        config["model"]["optim"]["lr"] = lr
        cli = run_cli(["fit", "--config", str(write_config(config, tmp_path / f"wandb_{lr}.yaml"))])
        folder = tmp_path / "wandb_runs" / "arn-tests" / cli.trainer.logger.version
        folders.append(folder)
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        assert saved["model"]["optim"]["lr"] == lr  # its own config, not the other run's
        assert (folder / "checkpoints" / "last.ckpt").is_file() and list((folder / "reports").glob("*.csv"))
        link = json.loads((folder / "wandb_run.json").read_text())
        assert link["id"] == cli.trainer.logger.version and link["project"] == "arn-tests"
        wandb.finish()  # as the end of the process would: the next fit is a new W&B run
    # testing a W&B run's checkpoint writes into that run's folder too
    run_cli(
        ["test", "--config", str(folders[0] / "config.yaml"), f"--ckpt_path={folders[0] / 'checkpoints' / 'last.ckpt'}"]
    )
    wandb.finish()
    assert (folders[0] / "test" / "metrics_test.json").is_file() and (folders[0] / "test" / "config.yaml").is_file()
    assert folders[0] != folders[1]
    assert not (tmp_path / "wandb_runs" / "config.yaml").exists() and not (tmp_path / "wandb_runs" / "reports").exists()


def _tested_checkpoint(folder: Path) -> str:
    return json.loads((folder / "metrics_test.json").read_text())["checkpoint"]["path"]


def test_ckpt_path_last_and_best_are_the_runs_own_checkpoints(run: dict[str, Any]) -> None:
    """``test --ckpt_path last`` scored an untrained model (``checkpoint: {"path": null}``) and ``best`` ended in a
    traceback: both are resolved in the run of ``--config <run>/config.yaml`` (docs/runs.md)."""
    folder, config = run["folder"], str(run["folder"] / "config.yaml")
    before = set(folder.iterdir())
    assert run_lightning_cli(["test", "--config", config, "--ckpt_path", "last"]) == 0
    [test] = set(folder.iterdir()) - before
    assert _tested_checkpoint(test) == str(run["last"])
    best = [p for p in (folder / "checkpoints").glob("epoch*.ckpt")]
    assert len(best) == 1
    before = set(folder.iterdir())
    assert run_lightning_cli(["test", "--config", config, "--ckpt_path", "best"]) == 0
    [test] = set(folder.iterdir()) - before
    assert _tested_checkpoint(test) == str(best[0])


def test_ckpt_path_last_of_a_plain_config_is_its_loggers_newest_run(run: dict[str, Any]) -> None:
    folder = run["folder"]
    tiny = str(run["work"] / "tiny.yaml")  # the config the run was started with, not the run's copy
    before = set(folder.iterdir())
    assert run_lightning_cli(["test", "--config", tiny, "--ckpt_path", "last"]) == 0
    [test] = set(folder.iterdir()) - before
    assert _tested_checkpoint(test) == str(run["last"])
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


@pytest.mark.parametrize("subcommand", ["fit", "test"])
@pytest.mark.parametrize("alias", ["last", "best"])
def test_ckpt_path_alias_without_a_run_is_refused(
    subcommand: str, alias: str, train_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``fit --ckpt_path last`` used to train from scratch with only a warning; nothing runs now."""
    config = write_config(tiny_config(train_root, tmp_path), tmp_path / "fresh.yaml")
    assert run_lightning_cli([subcommand, "--config", str(config), "--ckpt_path", alias]) == 2
    error = capsys.readouterr().err
    assert f"Expected --ckpt_path {alias} to name a checkpoint of a run but found no run" in error
    assert str(tmp_path / "logs" / "tiny") in error
    assert not (tmp_path / "logs").exists()


def test_ckpt_path_best_of_a_run_that_never_validated_is_refused(
    train_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tiny_config(train_root, tmp_path, max_steps=1, max_epochs=1, limit_val_batches=0)
    path = write_config(config, tmp_path / "novalid.yaml")
    assert run_lightning_cli(["fit", "--config", str(path)]) == 0
    checkpoints = tmp_path / "logs" / "tiny" / "version_0" / "checkpoints"
    assert run_lightning_cli(["test", "--config", str(path), "--ckpt_path", "best"]) == 2
    assert f"--ckpt_path best: Expected a checkpoint in {checkpoints} to record a best checkpoint on val/with/R@20" in (
        capsys.readouterr().err
    )


def test_ckpt_path_best_is_the_best_score_recorded_by_any_checkpoint(tmp_path: Path) -> None:
    """The record of last.ckpt alone misses the epoch it ends (saved before that epoch's validation), and a resume
    restarts the bookkeeping from it: the best score over every record wins."""
    from arn_lightning.training.runs import best_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    key = "ModelCheckpoint{'monitor': 'val/with/R@20', 'mode': 'max'}"

    def save(name: str, best: str | None, score: float | None) -> None:
        state = {"monitor": "val/with/R@20", "best_model_path": best and str(folder / best), "best_model_score": score}
        torch.save({"global_step": 0, "callbacks": {key: state}}, folder / name)

    save("epoch000.ckpt", "epoch000.ckpt", 0.5)  # the best, saved before a resume
    save("epoch002.ckpt", "epoch002.ckpt", 0.3)  # a resumed run's first "best" (its bookkeeping started empty)
    save("last.ckpt", "epoch002.ckpt", 0.3)
    save("gone.ckpt", "deleted.ckpt", 0.9)  # a record whose file top-k deleted
    assert best_checkpoint(folder, "val/with/R@20") == folder / "epoch000.ckpt"
    with pytest.raises(FileNotFoundError, match="to record a best checkpoint on val/no/R@20 that is still there"):
        best_checkpoint(folder, "val/no/R@20")
