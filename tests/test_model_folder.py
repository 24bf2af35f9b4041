"""A model folder you can share (``arn-lightning export --format safetensors``): what it holds, and that every place
taking a checkpoint takes it with the same predictions (Python, streaming, the CLI's ``test``, the Hub offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from arn_lightning.build import load_inference_module, source_identity
from arn_lightning.checkpoint_file import CheckpointError
from arn_lightning.commands.export import main as export_main
from arn_lightning.inference.api import SceneGraphPredictor, load_model
from arn_lightning.inference.streaming import StreamingPredictor
from arn_lightning.scene_graph import FrameGraph
from arn_lightning.video.files import open_frames
from arn_lightning.weights.folder import CARD_FILE, CONFIG_FILE, FORMAT, FORMAT_VERSION, WEIGHTS_FILE
from arn_lightning.weights.registry import sha256_file
from infer_fixtures import TEST_DATA_SETTINGS, VIDEO_FPS, InferAssets
from train_fixtures import run_cli, tiny_config, write_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def folder(assets: InferAssets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shared") / "my-arn"
    assert export_main(["--format", "safetensors", "--checkpoint", str(assets.checkpoint), "--out", str(out)]) == 0
    return out


def _graphs(predictor: SceneGraphPredictor, video: Path) -> list[FrameGraph]:
    return [graph for _, graph in predictor.stream(open_frames(video, VIDEO_FPS / 2), top_k=5, threshold=0.0)]


def _assert_same_graphs(ours: list[FrameGraph], reference: list[FrameGraph]) -> None:
    assert len(ours) == len(reference) > 0
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.prediction.keys() == theirs.prediction.keys()
        for key, value in theirs.prediction.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, mine.prediction[key]), key
            else:
                assert value == mine.prediction[key], key
        assert [(t.text(), t.score) for t in mine.triplets] == [(t.text(), t.score) for t in theirs.triplets]


def test_the_folder_holds_safetensors_weights_settings_and_a_model_card(assets: InferAssets, folder: Path) -> None:
    from safetensors import safe_open

    assert sorted(p.name for p in folder.iterdir()) == sorted([CARD_FILE, CONFIG_FILE, WEIGHTS_FILE])
    assert not list(folder.parent.glob(".my-arn*"))  # no staging folder left behind
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert (config["format"], config["format_version"]) == (FORMAT, FORMAT_VERSION)
    assert config["checkpoint"]["sha256"] == sha256_file(assets.checkpoint)
    assert config["checkpoint"]["name"] == "tiny.ckpt" and config["arch"]["hidden_dim"] == 16
    assert config["transform"]["resize_shorter"] == TEST_DATA_SETTINGS["resize_shorter"]
    assert len(config["vocabulary"]["predicates"]) == 26 and config["triplet_categories"]["attention"]
    stored = torch.load(assets.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as weights:
        assert set(weights.keys()) == set(stored)
        assert all(torch.equal(weights.get_tensor(key), stored[key]) for key in stored)
    card = (folder / CARD_FILE).read_text()
    assert card.startswith("---\nlicense: apache-2.0")
    for part in ("## Model", "## Training", "## Data", "## Results", "## Citation", "wang2025arn", "Apache-2.0"):
        assert part in card, part
    assert sha256_file(assets.checkpoint) in card


def test_an_existing_folder_is_kept_unless_overwrite(assets: InferAssets, folder: Path, capsys) -> None:
    before = (folder / CONFIG_FILE).read_bytes()
    argv = ["--format", "safetensors", "--checkpoint", str(assets.checkpoint), "--out", str(folder)]
    assert export_main(argv) == 1
    assert "exists (pass --overwrite)" in capsys.readouterr().err
    assert export_main([*argv, "--overwrite"]) == 0 and (folder / CONFIG_FILE).read_bytes() == before
    with pytest.raises(SystemExit):
        export_main([*argv, "--window", "2"])  # an ONNX option


def test_load_model_and_streaming_predict_alike_from_folder_and_checkpoint(assets: InferAssets, folder: Path) -> None:
    _assert_same_graphs(_graphs(load_model(folder), assets.video), _graphs(load_model(assets.checkpoint), assets.video))
    frames = list(open_frames(assets.video, VIDEO_FPS / 2))
    ours = StreamingPredictor(folder, top_k=5, threshold=0.0)
    theirs = StreamingPredictor(assets.checkpoint, top_k=5, threshold=0.0)
    for frame in frames:
        mine, reference = ours.push(frame), theirs.push(frame)
        assert [(t.text(), t.score) for t in mine.triplets] == [(t.text(), t.score) for t in reference.triplets]
    assert source_identity(folder) == {"name": "my-arn", "sha256": sha256_file(assets.checkpoint)}


def test_a_damaged_folder_is_named(folder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / CONFIG_FILE).write_bytes((folder / CONFIG_FILE).read_bytes())
    with pytest.raises(CheckpointError, match=rf"weights of the model folder {broken}"):
        load_inference_module(broken)
    (broken / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=rf"{broken / WEIGHTS_FILE}: Expected safetensors weights"):
        load_inference_module(broken)
    config = json.loads((folder / CONFIG_FILE).read_text())
    (broken / CONFIG_FILE).write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(CheckpointError, match="Expected format version 1 but got 99; export the model again"):
        load_inference_module(broken)
    with pytest.raises(CheckpointError, match="is a directory without config.json"):
        load_inference_module(tmp_path)


def test_the_cli_tests_a_folder_as_it_tests_the_checkpoint(assets: InferAssets, folder: Path, tmp_path: Path) -> None:
    config = write_config(tiny_config(assets.data_root, tmp_path), tmp_path / "config.yaml")
    outputs = {}
    for name, source in (("checkpoint", assets.checkpoint), ("folder", folder)):
        out = tmp_path / name
        run_cli(["test", "--config", str(config), f"--ckpt_path={source}", f"--model.predictions_dir={out}"])
        outputs[name] = (out / "predictions_test.jsonl").read_text()
    assert outputs["folder"] == outputs["checkpoint"] and outputs["folder"].count("\n") > 0
    with pytest.raises(CheckpointError, match="holds no optimiser or trainer state"):
        run_cli(["fit", "--config", str(config), f"--ckpt_path={folder}"])


def test_a_hub_model_loads_offline_from_the_hugging_face_cache(
    assets: InferAssets, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    # the cache layout snapshot_download reads: models--<owner>--<name>/{refs/main, snapshots/<commit>/<files>}
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--my-arn"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reference = _graphs(load_model(assets.checkpoint), assets.video)
    _assert_same_graphs(_graphs(load_model("hf://someone/my-arn"), assets.video), reference)
    with pytest.raises(CheckpointError, match=r"hf://someone/absent .*HF_HUB_OFFLINE is set, so only the cache"):
        load_model("hf://someone/absent")


def test_pushing_offline_sends_nothing(folder: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from arn_lightning.weights.hub import push_model_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="Expected network access to push .* HF_HUB_OFFLINE is set"):
        push_model_folder(folder, "someone/my-arn")
    with pytest.raises(CheckpointError, match=r"lacks \['config.json', 'model.safetensors'\]"):
        push_model_folder(folder.parent / "nothing", "someone/my-arn")


def test_the_model_card_tells_the_run(assets: InferAssets, tmp_path: Path) -> None:
    import shutil

    import yaml

    from arn_lightning.training.model_folder import export_model_folder

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"root": str(assets.data_root)}, "model": {}}))
    checkpoint = Path(shutil.copy(assets.checkpoint, run / "checkpoints" / "last.ckpt"))
    epochs = {
        "best": {"epoch": 1, "step": 8, "metrics": {"with/R@20": 0.25, "no/R@20": 0.5, "no/mR@20": 0.125}},
        "last": {"epoch": 3, "step": 16, "metrics": {"with/R@20": 0.2, "no/R@20": 0.4}},
        "note": "validation runs on the test split",
    }
    (run / "fit_summary.json").write_text(json.dumps(epochs))
    metrics = {
        f"{c}/{name}@{k}": 0.0625 * k / 100
        for c in ("with", "semi", "no")
        for name in ("R", "mR")
        for k in (10, 20, 50, 100)
    }
    metrics.update({"no/mR_per_frame@20": 0.75, "checkpoint": {"path": str(checkpoint)}})
    (run / "test").mkdir()
    (run / "test" / "metrics_test.json").write_text(json.dumps(metrics))
    report = export_model_folder(checkpoint, tmp_path / "card")
    assert (report.run, report.metrics, report.data_root) == (run, run / "test" / "metrics_test.json", assets.data_root)
    card = (tmp_path / "card" / CARD_FILE).read_text()
    assert "| with constraint | 0.0063 | 0.0125 | 0.0312 | 0.0625 | 0.0063 |" in card  # R@K then mR@K
    assert "| no constraint |" in card and "| 0.7500 |" in card and "mR_per_frame@20" in card  # both mR definitions
    assert "- best epoch 1 (step 8): validation with/R@20 0.2500, no/R@20 0.5000, no/mR@20 0.1250" in card
    assert "- last epoch 3 (step 16): validation with/R@20 0.2000, no/R@20 0.4000" in card
    assert "training time: about" in card and f"`{assets.data_root}` (task sgdet)" in card
    assert "| train |" in card and "| test |" in card and "```yaml\ndata:\n  root:" in card


def test_pushing_uploads_the_folder_files_to_the_repository(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls: list[tuple[str, dict]] = []

    class RecordingApi:  # stands for the Hub: records what would be sent
        def __init__(self, token: str | None = None) -> None:
            calls.append(("init", {"token": token}))

        def create_repo(self, repo_id: str, **kwargs: object) -> None:
            calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

        def upload_folder(self, **kwargs: object) -> str:
            calls.append(("upload_folder", kwargs))
            return "https://hub.example/commit/1"

    from arn_lightning.weights.hub import push_model_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    assert push_model_folder(folder, "someone/my-arn", private=True, token="t") == "https://hub.example/commit/1"
    assert calls == [
        ("init", {"token": "t"}),
        ("create_repo", {"repo_id": "someone/my-arn", "private": True, "exist_ok": True}),
        (
            "upload_folder",
            {
                "folder_path": str(folder),
                "repo_id": "someone/my-arn",
                "allow_patterns": [CONFIG_FILE, WEIGHTS_FILE, CARD_FILE],
            },
        ),
    ]


def test_onnx_export_takes_the_folder_as_it_takes_the_checkpoint(
    assets: InferAssets, folder: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnx")
    from arn_lightning.inference.onnx_export import export_onnx

    reports = {
        name: export_onnx(source, tmp_path / f"{name}.onnx")
        for name, source in (("ckpt", assets.checkpoint), ("folder", folder))
    }
    settings = {name: json.loads(report.settings_path.read_text()) for name, report in reports.items()}
    assert settings["folder"]["checkpoint"] == {"name": "my-arn", "sha256": sha256_file(assets.checkpoint)}
    for value in settings.values():
        value.pop("checkpoint")
    assert settings["folder"] == settings["ckpt"]
    assert reports["folder"].model_path.read_bytes() == reports["ckpt"].model_path.read_bytes()
