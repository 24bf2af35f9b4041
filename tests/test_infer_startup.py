"""``arn-lightning infer`` starts fast: inference imports only what it uses, and its Lightning-free model loading gives
exactly the predictions of ``ARNLitModule.load_from_checkpoint``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from arn_lightning.build import InferenceModule
from arn_lightning.inference.api import SceneGraphPredictor, load_model
from arn_lightning.scene_graph import FrameGraph
from arn_lightning.video.files import open_frames
from infer_fixtures import VIDEO_FPS, InferAssets

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # subprocesses and a tiny model: seconds

#: Training-time packages that neither the inference API nor ``arn-lightning infer`` may import before the first
#: frame graph: the trainer (Lightning, its loggers, its CLI), the CLIP towers and metrics of training, and plotting
#: (matplotlib draws the timeline only after every frame is predicted). torch, torchvision (which imports
#: torch._dynamo and sympy), PyAV, Pillow and numpy are what inference runs on.
HEAVY = (
    "lightning",
    "pytorch_lightning",
    "lightning_utilities",
    "torchmetrics",
    "open_clip",
    "timm",
    "wandb",
    "tensorboard",
    "jsonargparse",
    "matplotlib",
)
SRC = Path(__file__).resolve().parents[1] / "src"


def _imported_after(code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; returns the heavy top-level packages it imported and whether torch was."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps({{'heavy': sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r})), "
        "'torch': 'torch' in sys.modules}))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_inference_path_imports_no_training_package(assets: InferAssets) -> None:
    imported = _imported_after(
        "import arn_lightning.inference.api, arn_lightning.commands.infer, arn_lightning.inference.output\n"
        "from arn_lightning.inference.api import load_model\n"
        "from arn_lightning.video.files import open_frames\n"
        f"predictor = load_model({str(assets.checkpoint)!r})\n"
        f"next(predictor.stream(open_frames({str(assets.video)!r}, 2.0)))"
    )
    assert imported == {"heavy": [], "torch": True}


def test_the_streaming_path_imports_no_training_package(assets: InferAssets) -> None:
    imported = _imported_after(
        "import arn_lightning.inference.streaming, arn_lightning.video.live\n"
        "from arn_lightning.inference.streaming import StreamingPredictor\n"
        "from arn_lightning.video.live import open_source\n"
        f"predictor = StreamingPredictor({str(assets.checkpoint)!r})\n"
        f"predictor.push(next(iter(open_source({str(assets.video)!r}))))"
    )
    assert imported == {"heavy": [], "torch": True}


@pytest.mark.parametrize("argv", [["--help"], ["infer", "--help"]])
def test_help_imports_neither_torch_nor_lightning(argv: list[str]) -> None:
    imported = _imported_after(
        "import contextlib, io\nfrom arn_lightning import cli\n"
        f"with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    cli.main({argv!r})"
    )
    assert imported == {"heavy": [], "torch": False}


def _graphs(predictor: SceneGraphPredictor, video: Path) -> list[FrameGraph]:
    return [graph for _, graph in predictor.stream(open_frames(video, VIDEO_FPS / 2), top_k=5, threshold=0.0)]


def _assert_identical(ours: list[FrameGraph], reference: list[FrameGraph]) -> None:
    assert len(ours) == len(reference) > 0
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.prediction.keys() == theirs.prediction.keys()
        for key, value in theirs.prediction.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == mine.prediction[key].dtype and torch.equal(value, mine.prediction[key]), key
            else:
                assert value == mine.prediction[key], key
        assert [t.text() for t in mine.triplets] == [t.text() for t in theirs.triplets]
        assert [t.score for t in mine.triplets] == [t.score for t in theirs.triplets]


def _lightning_predictor(checkpoint: Path) -> SceneGraphPredictor:
    from arn_lightning.training.lit_module import ARNLitModule

    return SceneGraphPredictor(ARNLitModule.load_from_checkpoint(str(checkpoint), map_location="cpu"))


def test_load_model_predicts_exactly_as_load_from_checkpoint(assets: InferAssets) -> None:
    from arn_lightning.training.lit_module import ARNLitModule

    predictor = load_model(assets.checkpoint)
    reference = _lightning_predictor(assets.checkpoint)
    assert isinstance(predictor._module, InferenceModule)
    ours, theirs = predictor.model.state_dict(), reference.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert predictor.settings == reference.settings
    _assert_identical(_graphs(predictor, assets.video), _graphs(reference, assets.video))
    # the Lightning module, for evaluation, is built by training code around the same model
    module = ARNLitModule.around(predictor.module)
    assert isinstance(module, ARNLitModule) and module.model is predictor.model and not module.training
    assert module.postprocess is predictor.postprocess
    assert module.hparams.data_settings == reference.module.hparams.data_settings


def _rewritten(checkpoint: Path, path: Path, change: Any) -> Path:
    """A copy of ``checkpoint`` whose ``hyper_parameters`` went through ``change`` (in place)."""
    content = torch.load(checkpoint, map_location="cpu", weights_only=False)
    change(content["hyper_parameters"])
    torch.save(content, path)
    return path


def test_earlier_checkpoint_formats_are_refused_with_one_error(assets: InferAssets, tmp_path: Path) -> None:
    from arn_lightning.checkpoint_file import CheckpointError
    from arn_lightning.models.config import ARNConfig

    def retired(hparams: dict[str, Any]) -> None:  # the settings an earlier version stored
        hparams["arch"] = {**hparams["arch"], "fusion_layers": 2, "logit_scale_max": 100.0}
        hparams["post"] = {**hparams["post"], "task": "sgdet"}

    def pickled(hparams: dict[str, Any]) -> None:  # a configuration dataclass instead of a plain dict
        hparams["arch"] = ARNConfig(**hparams["arch"])

    checkpoint = _rewritten(assets.checkpoint, tmp_path / "retired.ckpt", retired)
    message = rf"{checkpoint}: .*model\.arch\.fusion_layers is a setting of an older format.*retrain the model"
    with pytest.raises(CheckpointError, match=message):
        load_model(checkpoint)
    with pytest.raises(CheckpointError, match=message):  # Lightning's own loading alike
        _lightning_predictor(checkpoint)
    checkpoint = _rewritten(assets.checkpoint, tmp_path / "pickled.ckpt", pickled)
    with pytest.raises(CheckpointError, match=rf"{checkpoint}: .*pickled classes.*retrain the model"):
        load_model(checkpoint)


def test_bad_hyperparameters_and_weights_are_named(assets: InferAssets, tmp_path: Path) -> None:
    from arn_lightning.checkpoint_file import CheckpointError

    def unknown(hparams: dict[str, Any]) -> None:
        hparams["arch"] = {**hparams["arch"], "wings": 2}

    checkpoint = _rewritten(assets.checkpoint, tmp_path / "unknown.ckpt", unknown)
    with pytest.raises(CheckpointError, match=rf"{checkpoint}: .*model\.arch\.wings .*unknown settings: \['wings'\]"):
        load_model(checkpoint)
    content = torch.load(assets.checkpoint, map_location="cpu", weights_only=False)
    content["state_dict"].popitem()
    torch.save(content, tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match=r"(?s)weights in .*missing.ckpt .*for ARNLitModule:.*Missing key"):
        load_model(tmp_path / "missing.ckpt")


def test_inference_and_the_lightning_module_build_through_the_one_builder() -> None:
    from arn_lightning import build
    from arn_lightning.training import lit_module

    assert lit_module.as_config is build.as_config and lit_module.build_model is build.build_model
    package = Path(build.__file__).parent
    assert not (package / "hparams.py").exists() and not (package / "inference" / "loading.py").exists()


def test_startup_benchmark_times_the_first_frame_graph(assets: InferAssets) -> None:
    from arn_lightning.benchmarks.infer import measure_startup

    startup = measure_startup(assets.checkpoint, assets.video, repeats=1)
    assert 0 < startup["first_graph_s"] < startup["total_s"] and startup["cpu_s"] > 0
    assert len(startup["runs"]) == 1 and len(startup["load_average"]) == 2
