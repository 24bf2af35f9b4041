"""The callbacks the module brings along (prediction files, random states) and the report's validation frames: present
once with a plain ``lightning.Trainer``, writing after the module computed its metrics, restoring the random states
on a resume, and drawing frames that arrive through ``on_validation_batch_end``."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn

from arn_lightning.metrics.predictions import prediction_from_ground_truth, read_predictions, write_predictions
from arn_lightning.training.callbacks import SceneGraphReport, validation_examples
from arn_lightning.training.prediction_writer import METRICS_FILE, PREDICTIONS_FILE, PredictionWriter, merge_shards
from arn_lightning.training.rng import CHECKPOINT_KEY, RandomStateCheckpoint, collect_rng_states
from arn_lightning.vocab import CONSTRAINTS
from train_fixtures import assert_same_state, model_state, tiny_config


def _module_and_data(root: Path, work: Path, **module_args: Any) -> tuple[L.LightningModule, L.LightningDataModule]:
    """The tiny ARN of the CLI tests and its data module, built in plain Python (no CLI links)."""
    from arn_lightning.data.datamodule import AGDataModule
    from arn_lightning.training.lit_module import ARNLitModule

    config = tiny_config(root, work)
    data = AGDataModule(**config["data"])
    model = config["model"]
    arch = {**model["arch"], "num_frames": config["data"]["clip_len"], "task": config["data"]["task"]}
    module = ARNLitModule(
        **{**model, "arch": arch},
        triplet_categories=data.triplet_categories,
        data_settings=data.transform_settings,
        init_text_classifiers=False,
        **module_args,
    )
    return module, data


def _trainer(work: Path, **settings: Any) -> L.Trainer:
    return L.Trainer(
        **{
            "accelerator": "cpu",
            "devices": 1,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(work),
            **settings,
        }
    )


def _of_kind(trainer: L.Trainer, kind: type) -> list[L.Callback]:
    return [callback for callback in trainer.callbacks if isinstance(callback, kind)]


# ------------------------------------------------------------------------------------------------- uint8 batches
class _SeenPixels(L.Callback):
    """Keeps the pixels the module's steps receive (after ``on_after_batch_transfer``)."""

    def __init__(self) -> None:
        self.train: list[torch.Tensor] = []
        self.val: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, *args: Any) -> None:
        self.train.append(batch["pixel_values"].clone())

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        self.val.append(validation_examples(batch, outputs, limit=1)[0]["image"])


def _fit_tiny(root: Path, work: Path) -> tuple[dict[str, torch.Tensor], _SeenPixels]:
    L.seed_everything(0)
    module, data = _module_and_data(root, work)
    seen = _SeenPixels()
    trainer = _trainer(
        work, max_steps=2, limit_val_batches=1, val_check_interval=2, num_sanity_val_steps=0, callbacks=[seen]
    )
    trainer.fit(module, datamodule=data)
    return model_state(module), seen


@pytest.mark.slow
def test_a_plain_trainer_trains_on_uint8_batches_exactly_as_on_float_batches(
    train_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loaders send uint8 pixels and the module normalises them after the transfer (a LightningModule hook, so
    without the CLI too): the steps, the validation frames and the trained weights equal those of float batches."""
    import arn_lightning.data.datamodule as datamodule
    from arn_lightning.data.collate import ClipCollator

    state, seen = _fit_tiny(train_root, tmp_path / "uint8")
    monkeypatch.setattr(datamodule, "ClipCollator", lambda normalize: ClipCollator())  # the float batches of before
    float_state, float_seen = _fit_tiny(train_root, tmp_path / "float")
    assert len(seen.train) == 2 and len(seen.val) == 1
    for ours, theirs in zip(seen.train + seen.val, float_seen.train + float_seen.val, strict=True):
        assert ours.dtype == theirs.dtype == torch.float32
        assert torch.equal(ours.view(torch.int32), theirs.view(torch.int32))  # bit for bit, signed zeros too
    assert_same_state(state, float_state)
    L.seed_everything(0)
    initial = model_state(_module_and_data(train_root, tmp_path / "initial")[0])
    assert any(not torch.equal(state[key], initial[key]) for key in state)  # the two steps did train


@pytest.mark.parametrize("precision", ["bf16-true", "64-true", "32-true"])
def test_device_normalisation_follows_the_trainers_precision(train_root: Path, tmp_path: Path, precision: str) -> None:
    """Lightning converts a batch's float tensors for a ``*-true`` precision before the transfer hooks; the uint8
    pixels, normalised after the transfer, get the same conversion, bit for bit."""
    from arn_lightning.data.collate import ClipCollator

    module, data = _module_and_data(train_root, tmp_path)
    data.setup("fit")
    clips = [data.datasets["train"][index] for index in range(2)]
    floats = ClipCollator()(clips)
    alone = module.on_after_batch_transfer(ClipCollator(normalize=False)(clips), 0)  # no trainer: float32
    assert torch.equal(alone["pixel_values"], floats["pixel_values"])
    trainer = _trainer(tmp_path, precision=precision)
    module.trainer = trainer
    expected = trainer.precision_plugin.convert_input(floats)["pixel_values"]
    got = module.on_after_batch_transfer(ClipCollator(normalize=False)(clips), 0)["pixel_values"]
    dtype = {"bf16-true": torch.bfloat16, "64-true": torch.float64}.get(precision, torch.float32)
    assert got.dtype == expected.dtype == dtype
    assert torch.equal(got, expected) and torch.equal(got.signbit(), expected.signbit())


# ------------------------------------------------------------------------------------------------- prediction files
@pytest.mark.slow
def test_a_plain_trainer_writes_the_files_through_one_writer(train_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    module, data = _module_and_data(train_root, tmp_path, predictions_dir=str(out))
    trainer = _trainer(tmp_path, limit_test_batches=2, limit_predict_batches=2)
    trainer.test(module, datamodule=data, verbose=False)
    (writer,) = _of_kind(trainer, PredictionWriter)
    assert len(_of_kind(trainer, RandomStateCheckpoint)) == 1
    # written after the module's on_test_epoch_end computed the metrics (Lightning runs callbacks' epoch ends first)
    written = json.loads((out / METRICS_FILE).read_text())
    assert written.pop("checkpoint") == {"path": None}  # the module's own weights: no checkpoint file was tested
    assert json.dumps(written, sort_keys=True) == json.dumps(
        {**module.last_metrics, "unreadable_frames": []}, sort_keys=True
    )
    frames = [p["frame"] for p in read_predictions(out / PREDICTIONS_FILE["test"])]
    assert frames == sorted(frames) and len(frames) == module.last_metrics["frames/predicted"] > 0
    trainer.predict(module, datamodule=data)  # another run of the same trainer: the writer is not added again
    assert _of_kind(trainer, PredictionWriter) == [writer] and len(_of_kind(trainer, RandomStateCheckpoint)) == 1
    predicted = [p["frame"] for p in read_predictions(out / PREDICTIONS_FILE["predict"])]
    assert predicted == sorted(predicted) and len(predicted) > 0


@pytest.mark.slow
def test_a_writer_passed_by_the_user_is_the_one_used(train_root: Path, tmp_path: Path) -> None:
    module, data = _module_and_data(train_root, tmp_path, evaluation={"save_predictions": False})
    mine = PredictionWriter()
    trainer = _trainer(tmp_path, limit_test_batches=1, callbacks=[mine])
    trainer.test(module, datamodule=data, verbose=False)
    assert _of_kind(trainer, PredictionWriter) == [mine]  # Lightning would replace it by the module's otherwise
    assert not list(tmp_path.rglob("*.json*"))  # evaluation.save_predictions off: no file at all


def test_merge_shards_sorts_by_frame_and_removes_the_shards(tmp_path: Path) -> None:
    path = tmp_path / PREDICTIONS_FILE["test"]
    frames = [[f"v.mp4/{n:06d}.png" for n in numbers] for numbers in ((1, 4, 5), (2, 3))]
    for rank, keys in enumerate(frames):
        write_predictions(path.with_name(f"{path.stem}.rank{rank}{path.suffix}"), [_empty(key) for key in keys])
    merge_shards(path, 2)
    assert [p["frame"] for p in read_predictions(path)] == [f"v.mp4/{n:06d}.png" for n in range(1, 6)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def _empty(frame: str) -> dict[str, Any]:
    from arn_lightning.metrics.predictions import empty_prediction

    return empty_prediction(frame)


# ------------------------------------------------------------------------------------------------- random states
def _draws() -> tuple[torch.Tensor, np.ndarray, float]:
    return torch.rand(4), np.random.rand(4), random.random()


def _same(a: tuple[torch.Tensor, np.ndarray, float], b: tuple[torch.Tensor, np.ndarray, float]) -> bool:
    return torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def _reseed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def test_random_states_go_into_the_checkpoint_and_come_back_on_a_fit_resume_only(tmp_path: Path) -> None:
    callback = RandomStateCheckpoint()
    _reseed(1)
    checkpoint: dict[str, Any] = {}
    callback.on_save_checkpoint(None, None, checkpoint)
    expected = _draws()
    torch.save(checkpoint, tmp_path / "rng.ckpt")
    loaded = torch.load(tmp_path / "rng.ckpt", weights_only=True)  # tensors and plain values only
    assert list(loaded) == [CHECKPOINT_KEY] and set(loaded[CHECKPOINT_KEY]) == set(collect_rng_states())

    def trainer(fn: TrainerFn) -> Any:
        return SimpleNamespace(state=SimpleNamespace(fn=fn))

    _reseed(2)
    callback.on_load_checkpoint(trainer(TrainerFn.TESTING), None, loaded)  # test / validate restore nothing
    callback.on_train_batch_start(trainer(TrainerFn.FITTING), None, None, 0)
    assert not _same(_draws(), expected)
    callback.on_load_checkpoint(trainer(TrainerFn.FITTING), None, loaded)
    assert not _same(_draws(), expected)  # nothing is restored before the first training batch
    callback.on_train_batch_start(trainer(TrainerFn.FITTING), None, None, 0)
    assert _same(_draws(), expected)
    _reseed(3)
    callback.on_train_batch_start(trainer(TrainerFn.FITTING), None, None, 1)  # once only
    assert not _same(_draws(), expected)


@pytest.mark.slow
def test_a_plain_trainer_resume_restores_the_random_states_before_the_first_step(
    train_root: Path, tmp_path: Path
) -> None:
    module, data = _module_and_data(train_root, tmp_path)
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(tmp_path / "step2.ckpt")
    saved = torch.load(tmp_path / "step2.ckpt", map_location="cpu", weights_only=True)[CHECKPOINT_KEY]
    resumed, data = _module_and_data(train_root, tmp_path)
    seen: list[torch.Tensor] = []
    # the module's hook runs after every callback's: the state the first step after the resume starts from
    resumed.on_train_batch_start = lambda batch, batch_idx: seen.append(torch.get_rng_state().clone())
    torch.manual_seed(123)
    _trainer(tmp_path, max_steps=3, limit_val_batches=0).fit(
        resumed, datamodule=data, ckpt_path=tmp_path / "step2.ckpt"
    )
    assert len(seen) == 1 and torch.equal(seen[0], saved["torch"])


# ------------------------------------------------------------------------------------------------- the report
def _batch() -> dict[str, Any]:
    targets = [{"frame": f"v.mp4/{n:06d}.png", "evaluate": n != 1, "size": torch.tensor([6, 8])} for n in (1, 2, 3)]
    return {"pixel_values": torch.rand(1, 3, 3, 8, 8), "targets": targets}


def test_the_report_takes_the_frames_of_the_first_validation_batch_from_the_batch_end_hook() -> None:
    report = SceneGraphReport(num_images=1)
    batch, preds = _batch(), [{"frame": "v.mp4/000002.png"}, {"frame": "v.mp4/000003.png"}]
    trainer = SimpleNamespace(is_global_zero=True, sanity_checking=True)
    report.on_validation_batch_end(trainer, None, preds, batch, 0)
    assert report._examples == []  # the sanity check draws nothing
    trainer.sanity_checking = False
    report.on_validation_batch_end(trainer, None, preds, batch, 0)
    report.on_validation_batch_end(trainer, None, [{"frame": "other"}], _batch(), 1)  # a later batch: ignored
    (example,) = report._examples
    assert example["prediction"] is preds[0] and example["target"] is batch["targets"][1]
    assert torch.equal(example["image"], batch["pixel_values"][0, 1]) and example["size"].tolist() == [6, 8]
    assert [e["prediction"] for e in validation_examples(batch, preds)] == preds  # evaluated frames, in order


@pytest.mark.slow
def test_a_plain_trainer_validation_draws_the_report_frames(train_root: Path, tmp_path: Path) -> None:
    module, data = _module_and_data(train_root, tmp_path)
    trainer = _trainer(tmp_path, limit_val_batches=1, callbacks=[SceneGraphReport(num_images=2)])
    trainer.validate(module, datamodule=data, verbose=False)
    assert not hasattr(module, "last_val_examples")
    drawn = sorted(p.name for p in (tmp_path / "reports" / "val_epoch000").iterdir())
    assert drawn == ["frame0.png", "frame0_graph.png", "frame1.png", "frame1_graph.png"]  # boxes, and the graph


@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_the_report_accepts_every_constraint_and_names_them_otherwise(constraint: str) -> None:
    assert SceneGraphReport(recall_constraint=constraint).recall_constraint == constraint
    with pytest.raises(ValueError, match="Expected recall_constraint in with/semi/no but got 'none'"):
        SceneGraphReport(recall_constraint="none")


def test_the_ground_truth_drawn_is_the_oracle_prediction_of_a_batch_target() -> None:
    # a batch target: extra keys, tensors (one of them still attached to a graph), as the validation batch holds them
    target = {
        "frame": "v.mp4/000001.png",
        "evaluate": True,
        "size": torch.tensor([6, 8]),
        "boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 5.0]], requires_grad=True),
        "labels": torch.tensor([1, 8]),
        "attention": torch.tensor([[0, 2, 0]]),
        "spatial": torch.tensor([[1, 0, 0, 0, 0, 1]]),
        "contacting": torch.zeros(1, 17, dtype=torch.long),
    }
    gt = prediction_from_ground_truth(target)
    arrays = prediction_from_ground_truth(
        {k: v.detach().numpy() if isinstance(v, torch.Tensor) else v for k, v in target.items()}
    )
    for key in ("boxes", "labels", "scores", "pairs", "attention", "spatial", "contacting"):
        assert torch.equal(gt[key], arrays[key]), key
    assert gt["frame"] == target["frame"] and gt["pairs"].tolist() == [[0, 1]]
    assert gt["attention"].tolist() == [[0.0, 1.0, 0.0]] and gt["scores"].tolist() == [1.0, 1.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_ground_truth_of_a_batch_target_on_the_gpu_comes_back_on_the_cpu() -> None:
    target = {
        "frame": "v.mp4/000001.png",
        "boxes": torch.zeros(2, 4, device="cuda"),
        "labels": torch.tensor([1, 8], device="cuda"),
        **{
            kind: torch.ones(1, size, dtype=torch.long, device="cuda")
            for kind, size in (("attention", 3), ("spatial", 6), ("contacting", 17))
        },
    }
    gt = prediction_from_ground_truth(target)
    assert all(value.device.type == "cpu" for value in gt.values() if isinstance(value, torch.Tensor))
