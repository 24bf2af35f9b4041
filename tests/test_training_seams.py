"""Where runs meet other data: a checkpoint carries its own model, unreadable frames are skipped at every position of
a clip, and ``test`` scores unreadable evaluation frames exactly as ``evaluate`` does (recall 0)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from arn_lightning.data.ag import load_annotations
from arn_lightning.data.datamodule import AGDataModule
from arn_lightning.metrics.scoring import evaluate
from arn_lightning.training.lightning_cli import run_lightning_cli
from train_fixtures import run_cli, tiny_config, write_config

pytestmark = pytest.mark.slow
KS = (10, 20, 50, 100)


@pytest.fixture(scope="module")
def predcls_run(train_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A briefly trained PredCls model (non-zero recall) and its run folder."""
    work = tmp_path_factory.mktemp("predcls")
    config = tiny_config(train_root, work, max_steps=-1, max_epochs=1, limit_train_batches=4, limit_val_batches=1)
    config["data"]["task"] = "predcls"
    fit = run_cli(["fit", "--config", str(write_config(config, work / "predcls.yaml"))])
    run = Path(fit.trainer.log_dir)
    return {"config": run / "config.yaml", "last": run / "checkpoints" / "last.ckpt"}


def _other_root(tmp_path: Path, train_root: Path) -> Path:
    from arn_lightning.data.synth import generate

    other = tmp_path / "other_ag"
    generate(other, videos=6, frames=4, size=(160, 120), seed=11)
    mine = load_annotations(train_root, "predcls").triplet_categories()
    theirs = load_annotations(other, "predcls").triplet_categories()
    assert mine != theirs, "the other root must have other triplet categories for this test to mean anything"
    return other


def test_a_checkpoint_tests_on_a_root_with_other_triplet_categories(
    predcls_run: dict[str, Path], train_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    other = _other_root(tmp_path, train_root)
    stored = torch.load(predcls_run["last"], map_location="cpu", weights_only=True)
    cli = run_cli(
        [
            "test",
            "--config",
            str(predcls_run["config"]),
            f"--data.root={other}",
            f"--ckpt_path={predcls_run['last']}",
            f"--model.predictions_dir={tmp_path / 'test'}",
            "--trainer.logger=false",
        ]
    )
    assert cli.model.hparams.triplet_categories == stored["hyper_parameters"]["triplet_categories"]
    assert 0.0 <= cli.model.last_metrics["no/R@20"] <= 1.0
    assert (tmp_path / "test" / "predictions_test.jsonl").is_file()
    # Resuming training on data with other categories cannot be reconciled: one message names both sides.
    code = run_lightning_cli(
        [
            "fit",
            "--config",
            str(predcls_run["config"]),
            f"--data.root={other}",
            f"--ckpt_path={predcls_run['last']}",
            f"--trainer.default_root_dir={tmp_path / 'fit'}",
            "--trainer.logger=false",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"{predcls_run['last']}: Expected to resume training on the checkpoint's triplet categories" in err
    assert f"data.root={other}" in err and "only in the checkpoint" in err and "only in the data" in err


def _copy_root(train_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ag"
    shutil.copytree(train_root, root)
    return root


def _corrupt(root: Path, key: str) -> None:
    (root / "frames" / key).write_bytes(b"not a png at all")


def test_unreadable_evaluation_frames_count_as_recall_zero_in_test_and_evaluate(
    predcls_run: dict[str, Path], train_root: Path, tmp_path: Path
) -> None:
    root = _copy_root(train_root, tmp_path)
    test_frames = [f.key for f in load_annotations(root, "predcls").frames("test")]
    _corrupt(root, test_frames[0])
    _corrupt(root, test_frames[3])
    (root / "frames" / test_frames[5]).unlink()  # missing altogether
    out = tmp_path / "test"
    with pytest.warns(RuntimeWarning, match="Skipping"):
        cli = run_cli(
            [
                "test",
                "--config",
                str(predcls_run["config"]),
                f"--data.root={root}",
                "--data.on_bad_frame=skip",
                f"--ckpt_path={predcls_run['last']}",
                f"--model.predictions_dir={out}",
                "--trainer.logger=false",
            ]
        )
    metrics = cli.model.last_metrics
    assert metrics["frames/unreadable"] == 3 and metrics["frames/predicted"] == len(test_frames) - 3
    assert metrics["no/R@20"] > 0
    written = json.loads((out / "metrics_test.json").read_text())
    assert [item["frame"] for item in written["unreadable_frames"]] == sorted(
        [test_frames[0], test_frames[3], test_frames[5]]
    )
    assert all(item["reason"] for item in written["unreadable_frames"])
    report = evaluate(str(root), str(out / "predictions_test.jsonl"), split="test", task="predcls")
    for constraint in ("with", "semi", "no"):
        for k in KS:
            assert report[constraint][f"R@{k}"] == pytest.approx(metrics[f"{constraint}/R@{k}"], abs=1e-9)
            assert report[constraint][f"mR@{k}"] == pytest.approx(metrics[f"{constraint}/mR@{k}"], abs=1e-9)


def _datamodule(root: Path, **kwargs: Any) -> AGDataModule:
    dm = AGDataModule(
        str(root),
        task="predcls",
        clip_len=2,
        resize_shorter=48,
        resize_longer=64,
        batch_size=2,
        on_bad_frame="skip",
        **kwargs,
    )
    dm.setup("fit")
    return dm


def test_skip_means_skip_at_every_position_of_a_training_clip(train_root: Path, tmp_path: Path) -> None:
    root = _copy_root(train_root, tmp_path)
    dataset = _datamodule(root).datasets["train"]
    first = dataset.clips[0]
    keys = [dataset.frames[i].key for i in first.frames]
    for key in dict.fromkeys(keys):  # the only readable candidates of clip 0 are all corrupt
        _corrupt(root, key)
    with pytest.warns(RuntimeWarning, match="Skipping a bad frame"):
        samples = dataset[(0, 123)]
    assert len(samples) == 2 and not {s["target"]["frame"] for s in samples} & set(keys)
    assert all("unreadable" not in s["target"] for s in samples)
    # a corrupt key frame (last slot of a causal clip) borrows the readable frame before it
    clip = next(c for c in dataset.clips if len(set(c.frames)) == 2 and not set(c.frames) & set(first.frames))
    key_frame = dataset.frames[clip.frames[-1]].key
    _corrupt(root, key_frame)
    with pytest.warns(RuntimeWarning, match="Skipping a bad frame"):
        samples = dataset[(dataset.clips.index(clip), 5)]
    assert [s["target"]["frame"] for s in samples] == [dataset.frames[clip.frames[0]].key] * 2


def test_an_evaluation_clip_with_no_readable_frame_is_scored_as_recall_zero(train_root: Path, tmp_path: Path) -> None:
    root = _copy_root(train_root, tmp_path)
    dataset = _datamodule(root).datasets["val"]
    clip = dataset.clips[0]
    keys = [dataset.frames[i].key for i in clip.frames]
    for key in dict.fromkeys(keys):
        _corrupt(root, key)
    with pytest.warns(RuntimeWarning, match="Skipping a bad frame"):
        samples = dataset[0]
    assert len(samples) == len(keys) > 0
    assert all(int(s["image"].max()) == 0 for s in samples)  # black frames, of the annotated size
    assert not any(s["target"]["evaluate"] for s in samples)
    marked = [s["target"]["unreadable"] for s in samples if "unreadable" in s["target"]]
    assert marked, "no evaluation frame marked unreadable"
    assert [m["ground_truth"]["frame"] for m in marked] == [k for k, e in zip(keys, clip.evaluate, strict=True) if e]
    assert all("Expected a readable frame image" in m["reason"] for m in marked)


def test_an_empty_split_names_the_split_the_root_and_the_settings(train_root: Path, tmp_path: Path) -> None:
    dm = AGDataModule(str(train_root), task="predcls", clip_len=2, min_frames=99)
    with pytest.raises(
        ValueError,
        match=rf"Expected the split 'train' in data.root={train_root}, which has the "
        rf"splits \[\] after the predcls filtering \(min_frames 99",
    ):
        dm.setup("fit")
    root = _copy_root(train_root, tmp_path)
    shutil.rmtree(root / "frames")
    with (
        pytest.warns(RuntimeWarning, match="Skipping"),
        pytest.raises(
            ValueError,
            match=rf"Expected at least one train clip in split 'train' of data.root={root} but got none: "
            rf"no frame image of the split is under {root / 'frames'}",
        ),
    ):
        _datamodule(root)


@pytest.mark.parametrize(
    "override,message",
    [
        ("--model.optim.lr=-1", "model.optim: Expected lr to be a finite number >= 0 but got -1.0"),
        ("--model.evaluation.ks=[]", "model.evaluation: Expected ks to be strictly increasing positive ints"),
        ("--model.evaluation.iou=exact", "model.evaluation: Expected iou_convention in"),
        ("--model.arch.hidden_dim=6", "model.arch: Expected hidden_dim to be a multiple of 4"),
        ("--data.task=bogus", "data: Expected task in ['sgdet', 'sgcls', 'predcls'] but got 'bogus'"),
        ("--data.clip_len=0", "data: Expected clip_len >= 1 but got 0"),
        ("--data.num_workers=-1", "data: Expected num_workers >= 0 but got -1"),
        ("--trainer.accumulate_grad_batches=0", "trainer: Expected accumulate_grad_batches >= 1 but got 0"),
        ("--trainer.max_steps=-5", "trainer: Expected max_steps >= -1 (-1: no limit) but got -5"),
        (
            "--trainer.gradient_clip_val=-1",
            "trainer: Expected gradient_clip_val a finite number >= 0 or null but got -1",
        ),
    ],
)
def test_a_meaningless_setting_stops_the_cli_naming_it(
    override: str, message: str, train_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = write_config(tiny_config(train_root, tmp_path), tmp_path / "config.yaml")
    assert run_lightning_cli(["fit", "--config", str(config), override]) == 2
    assert f"arn-lightning: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()  # stopped before anything was written
