"""The training system through the LightningCLI on a tiny ARN and a tiny synthetic AG (CPU).

fit -> test -> evaluate agree; checkpoints reload in plain Python; resume is exact; every shipped config parses and
runs a step; bf16-mixed runs on the CPU; W&B offline writes its run with the report table and images.
"""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from arn_lightning.data.ag import load_annotations
from arn_lightning.metrics.functional import RecallConfig, scene_graph_recall
from arn_lightning.metrics.predictions import read_predictions
from arn_lightning.metrics.scoring import evaluate
from arn_lightning.metrics.triplet_nms import triplet_nms
from arn_lightning.training.lit_module import ARNLitModule
from train_fixtures import REPO, assert_same_state, model_state, run_cli, tiny_config, write_config

CONSTRAINTS = ("with", "semi", "no")
KS = (10, 20, 50, 100)


@pytest.fixture(scope="module")
def fitted(train_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny SGDet fit (2 epochs x 2 steps, validation each epoch) shared by the tests of this module."""
    work = tmp_path_factory.mktemp("fit")
    config = tiny_config(train_root, work, max_steps=-1, max_epochs=2, limit_train_batches=2)
    cli = run_cli(["fit", "--config", str(write_config(config, work / "tiny.yaml"))])
    callback = cli.trainer.checkpoint_callback
    return {
        "cli": cli,
        "work": work,
        "best": Path(callback.best_model_path),
        "last": Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt",
        "log_dir": Path(cli.trainer.log_dir),
        "state": model_state(cli.model),
    }


def test_fit_logs_every_loss_term_and_metric_and_checkpoints_best_and_last(fitted: dict[str, Any]) -> None:
    metrics = fitted["cli"].trainer.logged_metrics
    for key in (
        "train/loss_step",
        "train/loss_sub_giou_epoch",
        "train/loss_obj_ce_epoch",
        "train/loss_predicate_epoch",
        "val/loss",
        "val/with/R@20",
        "val/semi/R@50",
        "val/no/mR@50",
        "val/no/hmean@20",
    ):
        assert key in metrics, f"{key} not logged (got {sorted(metrics)[:12]} ...)"
    assert fitted["best"].is_file() and fitted["best"].name.startswith("epoch")
    assert fitted["last"].is_file()
    last = torch.load(fitted["last"], map_location="cpu", weights_only=True)
    assert last["global_step"] == fitted["cli"].trainer.global_step == 4  # the latest state, not the best one's
    assert (fitted["log_dir"] / "config.yaml").is_file()
    reports = fitted["log_dir"] / "reports"
    assert (reports / "val_epoch001" / "frame0.png").is_file()
    rows = (reports / "val_per_predicate_no_R20.csv").read_text().splitlines()
    assert rows[0] == "predicate,type,gt_count,recall" and len(rows) == 27
    counts = [int(line.split(",")[2]) for line in rows[1:]]
    assert counts == sorted(counts, reverse=True) and counts[0] > 0  # head to tail, real ground-truth counts


def _assert_same_scores(metrics: dict[str, float], report: dict[str, Any]) -> None:
    assert report["missing_frames"]["count"] == 0
    for constraint in CONSTRAINTS:
        for k in KS:
            for name in (f"R@{k}", f"mR@{k}", f"mR_per_frame@{k}"):
                assert report[constraint][name] == pytest.approx(metrics[f"{constraint}/{name}"], abs=1e-12), (
                    constraint,
                    name,
                )


def test_test_from_saved_config_writes_predictions_that_evaluate_rescores_identically(
    fitted: dict[str, Any], train_root: Path, tmp_path: Path
) -> None:
    cli = run_cli(
        [
            "test",
            "--config",
            str(fitted["log_dir"] / "config.yaml"),
            f"--ckpt_path={fitted['best']}",
            f"--model.predictions_dir={tmp_path}",
            "--trainer.logger=false",
        ]
    )
    metrics = cli.model.last_metrics
    assert cli.trainer.callback_metrics["test/no/mR@50"] == pytest.approx(metrics["no/mR@50"])
    written = json.loads((tmp_path / "metrics_test.json").read_text())
    assert written.pop("unreadable_frames") == []
    tested = written.pop("checkpoint")  # which checkpoint: a best and a last one's results cannot be confused
    saved = torch.load(fitted["best"], map_location="cpu", weights_only=False)
    assert tested == {"path": str(fitted["best"]), "epoch": saved["epoch"], "global_step": saved["global_step"]}
    assert written == pytest.approx(metrics)
    assert not any(key.startswith("triplet_nms/") for key in written)  # evaluation.triplet_nms is off by default
    report = evaluate(str(train_root), str(tmp_path / "predictions_test.jsonl"), split="test", task="sgdet")
    _assert_same_scores(metrics, report)


def test_test_with_triplet_nms_reports_the_plain_and_the_filtered_metrics(
    fitted: dict[str, Any], train_root: Path, tmp_path: Path
) -> None:
    cli = run_cli(
        [
            "test",
            "--config",
            str(fitted["log_dir"] / "config.yaml"),
            f"--ckpt_path={fitted['best']}",
            f"--model.predictions_dir={tmp_path}",
            "--model.evaluation.triplet_nms=0.5",
            "--model.evaluation.triplet_nms_beta=0.5",
            "--trainer.logger=false",
        ]
    )
    metrics = cli.model.last_metrics
    written = json.loads((tmp_path / "metrics_test.json").read_text())
    assert {key: written[key] for key in metrics} == pytest.approx(metrics)
    assert (written["triplet_nms/threshold"], written["triplet_nms/alpha"], written["triplet_nms/beta"]) == (
        0.5,
        1,
        0.5,
    )
    assert cli.trainer.callback_metrics["test/triplet_nms/no/R@20"] == pytest.approx(metrics["triplet_nms/no/R@20"])
    # the prediction file holds the plain predictions: evaluate rescores the headline (unprefixed) keys
    report = evaluate(str(train_root), str(tmp_path / "predictions_test.jsonl"), split="test", task="sgdet")
    _assert_same_scores(metrics, report)
    # the triplet_nms/ block is the recall of the file's predictions after triplet_nms, constraint by constraint
    preds = {pred["frame"]: pred for pred in read_predictions(tmp_path / "predictions_test.jsonl")}
    frames = load_annotations(train_root, task="sgdet").frames("test")
    targets = [frame.eval_target() for frame in frames]
    for constraint in CONSTRAINTS:
        filtered = [triplet_nms(preds[t["frame"]], constraint, 0.5, beta=0.5) for t in targets]
        expected = scene_graph_recall(filtered, targets, RecallConfig(constraints=(constraint,)))
        for key, value in expected.items():
            assert metrics[f"triplet_nms/{key}"] == pytest.approx(float(value), abs=1e-12), key


def test_test_epoch_end_adds_the_triplet_nms_block_with_its_settings() -> None:
    # the tiny fit predicts no two objects of one class (nothing to suppress): a hand-made frame where the NMS
    # matters. GT: the person looks at two cups; a near-duplicate of the cup-1 triplet ranks second.
    categories = {"attention": [[0, 11]], "spatial": [[3, 11]], "contacting": [[9, 11]]}
    arch = dict(backbone="resnet18", backbone_stride=16, hidden_dim=16, nheads=2, ffn_dim=32, enc_layers=1)
    arch.update(entity_layers=1, predicate_layers=1, num_queries=3, clip_embed_dim=16, distill=False)
    evaluation = {"ks": [2, 3], "triplet_nms": 0.7, "triplet_nms_beta": 0.5}
    module = ARNLitModule(arch=arch, triplet_categories=categories, init_text_classifiers=False, evaluation=evaluation)
    key = "v.mp4/000001.png"
    truth = {
        "frame": key,
        "evaluate": True,
        "boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0], [10, 10, 30, 30], [60, 60, 90, 90]]),
        "labels": torch.tensor([1, 11, 11]),
        "attention": torch.tensor([[1, 0, 0], [1, 0, 0]]),
        "spatial": torch.zeros(2, 6, dtype=torch.long),
        "contacting": torch.zeros(2, 17, dtype=torch.long),
    }
    pred = {
        "frame": key,
        "boxes": torch.tensor([[0.0, 0, 100, 100], [10, 10, 30, 30], [10, 10, 30, 29.9], [60, 60, 90, 90]]),
        "labels": torch.tensor([1, 11, 11, 11]),
        "scores": torch.tensor([1.0, 0.9, 0.8, 0.7]),
        "pairs": torch.tensor([[0, 1], [0, 2], [0, 3]]),
        "attention": torch.tensor([[0.9, 0.0, 0.0]] * 3),
        "spatial": torch.zeros(3, 6),
        "contacting": torch.zeros(3, 17),
    }
    module.test_metrics.update([pred], [truth])
    module._update_triplet_nms_metrics({"targets": [truth]}, [pred])
    with pytest.warns(UserWarning, match="self.log"):  # no trainer here
        module.on_test_epoch_end()
    metrics = module.last_metrics
    assert metrics["no/R@2"] == 0.5 and metrics["triplet_nms/no/R@2"] == 1.0  # the duplicate went
    assert metrics["with/R@2"] == 0.5 and metrics["triplet_nms/with/R@2"] == 1.0
    assert metrics["no/R@3"] == metrics["triplet_nms/no/R@3"] == 1.0
    assert metrics["triplet_nms/per_predicate/no/R@2/looking_at"] == 1.0
    assert [metrics[f"triplet_nms/{name}"] for name in ("threshold", "alpha", "beta")] == [0.7, 1.0, 0.5]
    assert ARNLitModule(arch=arch, triplet_categories=categories, init_text_classifiers=False).test_nms_metrics is None


def test_predcls_fit_test_evaluate_agree_on_non_zero_recall(train_root: Path, tmp_path: Path) -> None:
    # PredCls takes the boxes and labels from the ground truth: a briefly trained model already hits triplets, so
    # the metric and the offline evaluator are compared on non-zero numbers at every K.
    config = tiny_config(train_root, tmp_path, max_steps=-1, max_epochs=1, limit_train_batches=4, limit_val_batches=1)
    config["data"]["task"] = "predcls"
    fit = run_cli(["fit", "--config", str(write_config(config, tmp_path / "predcls.yaml"))])
    saved = Path(fit.trainer.log_dir) / "config.yaml"
    out = tmp_path / "test"
    last = Path(fit.trainer.log_dir) / "checkpoints" / "last.ckpt"
    cli = run_cli(
        [
            "test",
            "--config",
            str(saved),
            f"--ckpt_path={last}",
            f"--model.predictions_dir={out}",
            "--trainer.logger=false",
        ]
    )
    metrics = cli.model.last_metrics
    # (semi keeps spatial / contacting scores above 0.9 only, which a briefly trained model does not reach)
    assert all(metrics[f"{c}/R@{k}"] > 0 and metrics[f"{c}/mR@{k}"] > 0 for c in ("with", "no") for k in KS)
    report = evaluate(str(train_root), str(out / "predictions_test.jsonl"), split="test", task="predcls")
    _assert_same_scores(metrics, report)


def test_predict_writes_every_frame_of_the_split_once(fitted: dict[str, Any], tmp_path: Path) -> None:
    from arn_lightning.metrics.predictions import read_predictions

    cli = run_cli(
        [
            "predict",
            "--config",
            str(fitted["log_dir"] / "config.yaml"),
            f"--ckpt_path={fitted['last']}",
            f"--model.predictions_dir={tmp_path}",
            "--trainer.logger=false",
        ]
    )
    frames = [p["frame"] for p in read_predictions(tmp_path / "predictions_predict.jsonl")]
    expected = sorted(f.key for f in cli.datamodule.ground_truth("test"))
    assert frames == expected


def test_load_from_checkpoint_in_plain_python_round_trips(fitted: dict[str, Any]) -> None:
    module = ARNLitModule.load_from_checkpoint(str(fitted["last"]), map_location="cpu", weights_only=True)
    stored = torch.load(fitted["last"], map_location="cpu", weights_only=True)["state_dict"]
    assert_same_state(model_state(module), stored)
    assert_same_state(model_state(module), fitted["state"])
    assert module.arch_config.hidden_dim == 16 and module.arch_config.backbone_norm == "batch"
    assert module.hparams.data_settings == {
        "resize_shorter": 48,
        "resize_longer": 64,
        "clip_len": 2,
        "window": "causal",
    }
    assert isinstance(module.hparams.arch, dict)  # plain data: no pickled classes in the checkpoint


def _resume_config(root: Path, work: Path, max_steps: int) -> dict[str, Any]:
    config = tiny_config(
        root, work, max_steps=max_steps, max_epochs=-1, limit_train_batches=5, limit_val_batches=1, deterministic=True
    )  # the deterministic mode runs too
    config["model"]["optim"]["lr_drop_epoch"] = 1  # the step decay happens inside the compared window
    config["trainer"]["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": str(work / "steps"),
                "filename": "step{step}",
                "every_n_train_steps": 3,
                "save_top_k": -1,
                "auto_insert_metric_name": False,
            },
        }
    ]
    return config


def test_resume_mid_epoch_gives_the_weights_of_an_uninterrupted_run(train_root: Path, tmp_path: Path) -> None:
    # dropout 0.1 and random flips on: the random streams and the data position must both be restored.
    full = run_cli(
        ["fit", "--config", str(write_config(_resume_config(train_root, tmp_path / "a", 7), tmp_path / "a.yaml"))]
    )
    reference = model_state(full.model)
    steps = tmp_path / "a" / "steps"
    assert sorted(p.name for p in steps.iterdir()) == ["step3.ckpt", "step6.ckpt"]
    # step 3: mid-epoch 0 (epoch = 5 steps); step 6: mid-epoch 1, after the learning-rate drop.
    for name in ("step3.ckpt", "step6.ckpt"):
        work = tmp_path / f"b_{name}"
        resumed = run_cli(
            [
                "fit",
                "--config",
                str(write_config(_resume_config(train_root, work, 7), work / "c.yaml")),
                f"--ckpt_path={steps / name}",
            ]
        )
        assert resumed.trainer.global_step == 7
        assert_same_state(model_state(resumed.model), reference)
        lrs = [group["lr"] for group in resumed.trainer.optimizers[0].param_groups]
        assert lrs == [group["lr"] for group in full.trainer.optimizers[0].param_groups]


def test_bf16_mixed_precision_trains_on_the_cpu(train_root: Path, tmp_path: Path) -> None:
    config = tiny_config(
        train_root,
        tmp_path,
        precision="bf16-mixed",
        max_steps=-1,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
    )
    cli = run_cli(["fit", "--config", str(write_config(config, tmp_path / "bf16.yaml"))])
    assert cli.trainer.precision == "bf16-mixed"
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss_epoch"]))
    assert "val/with/R@20" in cli.trainer.callback_metrics


def test_wandb_offline_run_holds_scalars_the_recall_table_and_frames(train_root: Path, tmp_path: Path) -> None:
    config = tiny_config(train_root, tmp_path, max_steps=-1, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    config["trainer"]["logger"] = {
        "class_path": "lightning.pytorch.loggers.WandbLogger",
        "init_args": {"offline": True, "save_dir": str(tmp_path), "project": "arn-tests"},
    }
    run_cli(["fit", "--config", str(write_config(config, tmp_path / "wandb.yaml"))])
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "wandb").iterdir())
    media = runs[0] / "files" / "media"
    assert list((media / "images").rglob("*.png")), "no validation frames in the W&B run"
    tables = list((media / "table").rglob("*.table.json"))
    assert tables, "no per-predicate table in the W&B run"
    table = yaml.safe_load(tables[0].read_text())
    assert table["columns"] == ["predicate", "type", "gt_count", "recall"] and len(table["data"]) == 26
    assert list(runs[0].glob("run-*.wandb")), "no W&B run file with the scalars"


def _tiny_overrides(root: Path, work: Path) -> dict[str, Any]:
    """The tiny config without the switches that the paper / ablation configs set."""
    config = tiny_config(root, work, fast_dev_run=1)
    for key in ("pap", "ha", "clip_triplets", "distill", "entity_fusion"):
        config["model"]["arch"].pop(key, None)
    config["data"].update(persistent_workers=False, pin_memory=False)
    del config["data"]["task"]
    config["model"]["detr_checkpoint"] = None  # the paper configs name the DETR weights; the tiny model has none
    return config


@pytest.mark.parametrize("ablation", sorted(p.name for p in (REPO / "configs" / "ablation").glob("*.yaml")))
def test_every_ablation_config_parses_and_runs_a_step(ablation: str, train_root: Path, tmp_path: Path) -> None:
    layer = yaml.safe_load((REPO / "configs" / "ablation" / ablation).read_text())
    tiny = write_config(_tiny_overrides(train_root, tmp_path), tmp_path / "tiny.yaml")
    cli = run_cli(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "ag_sgdet.yaml"),
            "--config",
            str(tiny),
            "--config",
            str(REPO / "configs" / "ablation" / ablation),
        ]
    )
    assert cli.trainer.global_step == 1
    for key, value in layer["model"]["arch"].items():
        assert getattr(cli.model.arch_config, key) == value, key
    for key, value in layer["model"].get("loss", {}).items():
        assert getattr(cli.model.loss_config, key) == value, key
    assert cli.model.criterion.distill == cli.model.arch_config.distill  # the one switch, handed over


@pytest.mark.parametrize("task", ["sgdet", "sgcls", "predcls"])
def test_paper_configs_parse_and_run_a_step(task: str, train_root: Path, tmp_path: Path) -> None:
    tiny = write_config(_tiny_overrides(train_root, tmp_path), tmp_path / "tiny.yaml")
    cli = run_cli(
        [
            "fit",
            "--config",
            str(REPO / "configs" / f"ag_{task}.yaml"),
            "--config",
            str(tiny),
            "--config",
            str(REPO / "configs" / "trainer" / "cpu.yaml"),
        ]
    )
    assert cli.trainer.global_step == 1
    assert cli.model.arch_config.task == task and cli.datamodule.hparams.task == task
    assert cli.model.arch_config.num_queries == 4  # the tiny layer wins over the paper's 100


def test_print_config_is_complete_and_reruns(train_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tiny_config(train_root, tmp_path, fast_dev_run=1)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--config", str(write_config(config, tmp_path / "tiny.yaml")), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["arch"]["hidden_dim"] == 16
    assert printed["model"]["optim"]["lr_backbone"] == 1e-3
    assert printed["data"]["clip_len"] == 2 and printed["seed_everything"] == 0
    assert "triplet_categories" not in printed["model"]  # derived from the data at instantiation
    full = copy.deepcopy(printed)
    cli = run_cli(["fit", "--config", str(write_config(full, tmp_path / "printed.yaml"))])
    assert cli.trainer.global_step == 1


def test_disabling_checkpointing_and_the_progress_bar_is_honoured(train_root: Path, tmp_path: Path) -> None:
    config = tiny_config(train_root, tmp_path, max_steps=1, enable_checkpointing=False)
    cli = run_cli(["fit", "--config", str(write_config(config, tmp_path / "plain.yaml"))])
    assert cli.trainer.checkpoint_callback is None and cli.trainer.progress_bar_callback is None


def test_demo_runs_end_to_end_on_a_tiny_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from arn_lightning.experiments import demo

    config = tiny_config(
        tmp_path / "unused", tmp_path / "work", max_steps=-1, max_epochs=1, limit_train_batches=2, limit_val_batches=1
    )
    config_path = write_config(config, tmp_path / "demo.yaml")
    code = demo.main(
        ["--out", str(tmp_path / "out"), "--config", str(config_path), "--videos", "8", "--frames", "4", "--no-check"]
    )
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["offline_evaluate_agrees"] is True
    assert Path(summary["checkpoint"]).is_file() and Path(summary["predictions"]).is_file()
    assert summary["frames"] and all(Path(p).is_file() for p in summary["frames"])
    # the notebook opens the newest demo run by default: it must find this run's last.ckpt where the demo writes it
    from arn_lightning.training.runs import DEMO_RUNS, latest_checkpoint

    assert DEMO_RUNS.parts[0] == "demo_output"  # the Makefile's DEMO_OUT
    assert (
        latest_checkpoint(tmp_path / "out" / DEMO_RUNS.relative_to("demo_output")).parent.parent
        == Path(summary["checkpoint"]).parent.parent
    )
    printed = capsys.readouterr().out
    assert "untrained model" in printed and "trained model" in printed and "semi" in printed


@pytest.mark.parametrize("trainer", sorted(p.name for p in (REPO / "configs" / "trainer").glob("*.yaml")))
def test_every_trainer_override_parses_onto_the_paper_config(trainer: str, capsys: pytest.CaptureFixture) -> None:
    layer = yaml.safe_load((REPO / "configs" / "trainer" / trainer).read_text())
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            [
                "fit",
                "--config",
                str(REPO / "configs" / "ag_sgdet.yaml"),
                "--config",
                str(REPO / "configs" / "trainer" / trainer),
                "--print_config",
            ]
        )
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    for key, value in layer.get("trainer", {}).items():
        if not isinstance(value, (dict, list)):
            assert printed["trainer"][key] == value, (trainer, key)


def test_tensorboard_fallback_gets_the_scalars_and_the_validation_frames(train_root: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing import event_accumulator  # a test dependency (pyproject "test")

    config = tiny_config(train_root, tmp_path, max_steps=-1, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    config["trainer"]["logger"] = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(tmp_path / "tb"), "name": "tiny"},
    }
    cli = run_cli(["fit", "--config", str(write_config(config, tmp_path / "tb.yaml"))])
    events = event_accumulator.EventAccumulator(cli.trainer.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "val/with/R@20" in events.Tags()["scalars"] and "train/loss_step" in events.Tags()["scalars"]
    assert {"val/scene_graph_0", "val/scene_graph_1"} <= set(events.Tags()["images"])
    assert (Path(cli.trainer.log_dir) / "reports" / "val_per_predicate_no_R20.csv").is_file()


def test_the_demo_is_defined_by_its_work_not_by_a_clock(capsys: pytest.CaptureFixture) -> None:
    from arn_lightning.experiments import demo

    trainer = yaml.safe_load((REPO / "configs" / "synthetic_demo.yaml").read_text())["trainer"]
    assert "max_time" not in trainer and trainer.get("max_steps", -1) == -1 and trainer["max_epochs"] == 4
    with pytest.raises(SystemExit):
        demo._parse(["--max-time", "00:00:01:00"])
    assert "unrecognized arguments: --max-time" in capsys.readouterr().err


def test_fit_ends_with_a_summary_that_flags_a_too_short_run(fitted: dict[str, Any]) -> None:
    from arn_lightning.training.callbacks import RunSummary

    trainer = fitted["cli"].trainer
    (summary,) = [c for c in trainer.callbacks if isinstance(c, RunSummary)]
    assert [h["epoch"] for h in summary.history] == [0, 1]  # one entry per validation
    text = summary.summary(trainer)
    assert f"run folder {fitted['log_dir']}" in text
    assert f"best checkpoint {fitted['best']}: val with/R@20" in text
    assert f"last checkpoint {fitted['last']}: val with/R@20" in text
    assert f"--ckpt_path {fitted['last']}" in text and f"test --config {fitted['log_dir'] / 'config.yaml'}" in text
    # 4 steps of a tiny model: recall is an untrained model's, and the summary says so
    assert "still at an untrained model's level" in text
    assert {"val/with/R@20", "val/no/R@20"} <= set(trainer.progress_bar_metrics)


def test_fit_reports_the_best_and_the_last_epoch(fitted: dict[str, Any]) -> None:
    """AG has no validation split, so the best epoch is chosen on test data: both are written, named, and logged."""
    from arn_lightning.training.callbacks import FIT_SUMMARY_FILE, RunSummary

    trainer = fitted["cli"].trainer
    (callback,) = [c for c in trainer.callbacks if isinstance(c, RunSummary)]
    written = json.loads((fitted["log_dir"] / FIT_SUMMARY_FILE).read_text())
    best = max(callback.history, key=lambda h: h["with/R@20"])
    assert written["best"]["epoch"] == best["epoch"] and written["last"]["epoch"] == 1
    assert written["last"]["metrics"] == pytest.approx(callback.history[-1]["metrics"])
    for which in ("best", "last"):  # every constraint, R, both mR definitions
        keys = set(written[which]["metrics"])
        assert {"with/R@20", "semi/mR@50", "no/mR_per_frame@10", "no/hmean@20"} <= keys
        assert not any(key.startswith("per_predicate/") for key in keys)
    assert "test split" in written["note"] and written["selected_by"] == "val/with/R@20"
    rows = [row for row in csv.DictReader((fitted["log_dir"] / "metrics.csv").open()) if row.get("fit/last/no/R@20")]
    assert len(rows) == 1  # logged once, to every logger of the run (here the CSV logger)
    assert float(rows[0]["fit/last/no/R@20"]) == pytest.approx(written["last"]["metrics"]["no/R@20"])
    assert float(rows[0]["fit/best/no/mR_per_frame@50"]) == pytest.approx(
        written["best"]["metrics"]["no/mR_per_frame@50"]
    )
    assert float(rows[0]["fit/best/epoch"]) == best["epoch"]
    assert FIT_SUMMARY_FILE in callback.summary(trainer)


def test_a_checkpoint_of_an_older_format_is_refused_with_one_error(fitted: dict[str, Any], tmp_path: Path) -> None:
    from arn_lightning.training.checkpoints import CheckpointError

    checkpoint = torch.load(fitted["last"], map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    hparams["arch"]["box_mlp_layers"] = 3  # a setting an earlier version stored, now a constant
    hparams["optim"].update(lr_drop_gamma=0.1, betas=[0.9, 0.999])
    earlier = tmp_path / "earlier.ckpt"
    torch.save(checkpoint, earlier)
    message = r"earlier\.ckpt: .*model\.arch\.box_mlp_layers is a setting of an older format.*retrain the model"
    config = str(fitted["log_dir"] / "config.yaml")
    with pytest.raises(CheckpointError, match=message):
        run_cli(
            [
                "test",
                "--config",
                config,
                f"--ckpt_path={earlier}",
                f"--model.predictions_dir={tmp_path}",
                "--trainer.logger=false",
            ]
        )
    with pytest.raises(CheckpointError, match=message):  # in Python too
        ARNLitModule.load_from_checkpoint(str(earlier), map_location="cpu", weights_only=True)
    assert not (tmp_path / "predictions_test.jsonl").exists()


def test_a_checkpoint_stored_before_distill_features_is_tested_with_its_projection(
    train_root: Path, tmp_path: Path
) -> None:
    # A run of a version before arch.distill_features: its checkpoint and config name distill only, and its model
    # has distill_proj. The CLI merges the stored settings over the config, whose default is now "classifier".
    config = tiny_config(train_root, tmp_path, max_steps=1, limit_val_batches=1)
    config["model"]["arch"].update(distill=True, distill_features="projection")
    fit = run_cli(["fit", "--config", str(write_config(config, tmp_path / "fit.yaml"))])
    saved = torch.load(Path(fit.trainer.log_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    del saved["hyper_parameters"]["arch"]["distill_features"]
    torch.save(saved, tmp_path / "old.ckpt")
    del config["model"]["arch"]["distill_features"]
    cli = run_cli(
        [
            "test",
            "--config",
            str(write_config(config, tmp_path / "old.yaml")),
            f"--ckpt_path={tmp_path / 'old.ckpt'}",
            f"--model.predictions_dir={tmp_path / 'test'}",
            "--trainer.logger=false",
        ]
    )
    assert cli.model.arch_config.distill_features == "projection"
    assert torch.equal(cli.model.model.distill_proj.weight, saved["state_dict"]["model.distill_proj.weight"])
