"""``arn-lightning export --format onnx`` and :class:`OnnxStreamingPredictor`: the exported streaming step in
onnxruntime gives PyTorch's ``stream_step`` outputs (frames of two sizes, windows 1 and 4, a model without temporal
layers), the runner gives ``StreamingPredictor``'s graphs from the JSON alone, and the command's files, messages and
exit codes.

Each model is exported once per module (about 15 s each on a 2-core machine).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from arn_lightning.commands.export import main as export_main  # noqa: E402
from arn_lightning.data.ag import load_annotations  # noqa: E402
from arn_lightning.inference.api import load_model  # noqa: E402
from arn_lightning.inference.onnx_export import (  # noqa: E402
    FORMAT,
    FORMAT_VERSION,
    ExportReport,
    export_onnx,
)
from arn_lightning.inference.onnx_predictor import OnnxStreamingPredictor  # noqa: E402
from arn_lightning.inference.streaming import StreamingPredictor  # noqa: E402
from arn_lightning.models.arn import place_on_grid  # noqa: E402
from arn_lightning.scene_graph import FrameGraph  # noqa: E402
from arn_lightning.training.checkpoints import save_untrained_checkpoint  # noqa: E402
from arn_lightning.video.files import VideoFrame  # noqa: E402
from arn_lightning.weights.registry import sha256_file  # noqa: E402
from infer_fixtures import TEST_DATA_SETTINGS, InferAssets, noisy_frames, tiny_module, torch_threads  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

#: Largest differences allowed between onnxruntime and PyTorch (float32): sigmoid scores and normalised boxes.
SCORE_TOLERANCE = 1e-4
BOX_TOLERANCE = 1e-3
#: Frame sizes (width, height) of the test streams: two aspect ratios, so the feature grid changes between frames.
SIZES = [(128, 96), (128, 96), (96, 128), (200, 90), (128, 96)]
HEADS = ("obj_logits", "attention_logits", "spatial_logits", "contacting_logits")
FIELDS = ("boxes", "labels", "scores", "pairs", "attention", "spatial", "contacting")


def _checkpoint(assets: InferAssets, folder: Path, name: str, seed: int, temporal_layers: int) -> Path:
    path = folder / name
    categories = load_annotations(assets.data_root, "sgdet").triplet_categories("train")
    with torch_threads(1):
        torch.manual_seed(seed)
        save_untrained_checkpoint(tiny_module(categories, num_frames=4, temporal_layers=temporal_layers), path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx_export")


@pytest.fixture(scope="module")
def checkpoint(assets: InferAssets, folder: Path) -> Path:
    """T = 4, two non-causal temporal layers (the cache changes every frame's outputs)."""
    return _checkpoint(assets, folder, "t4.ckpt", seed=3, temporal_layers=2)


@pytest.fixture(scope="module")
def window4(checkpoint: Path, folder: Path) -> ExportReport:
    with torch_threads(1):
        return export_onnx(checkpoint, folder / "w4" / "model.onnx")


@pytest.fixture(scope="module")
def window1_cli(checkpoint: Path, folder: Path) -> tuple[int, str, Path]:
    """The window-1 model, exported through the command: (exit code, stdout, model path)."""
    import contextlib
    import io

    out = folder / "w1" / "model.onnx"
    printed = io.StringIO()
    with torch_threads(1), contextlib.redirect_stdout(printed):
        code = export_main(["--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out), "--window", "1"])
    return code, printed.getvalue(), out


@pytest.fixture(scope="module")
def no_temporal(assets: InferAssets, folder: Path) -> tuple[Path, ExportReport]:
    """A model with temporal_layers 0 (its outputs never depend on earlier frames) and its export."""
    path = _checkpoint(assets, folder, "t0.ckpt", seed=4, temporal_layers=0)
    with torch_threads(1):
        return path, export_onnx(path, folder / "t0" / "model.onnx")


def frames(count: int = len(SIZES), seed: int = 0) -> list[VideoFrame]:
    images = noisy_frames(count, (256, 256), seed=seed)
    return [
        VideoFrame(i, i + 1, i / 2.0, f"clip/{i + 1:06d}.png", Image.fromarray(array).resize(SIZES[i % len(SIZES)]))
        for i, array in enumerate(images)
    ]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


# ----------------------------------------------------------------------------------------------- raw outputs
def run_both(checkpoint: Path, model_path: Path, window: int) -> list[tuple[dict, dict]]:
    """Stream the test frames through PyTorch's ``stream_step`` (cache on the new frame's grid, as
    ``StreamingPredictor`` keeps it) and through onnxruntime (cache on the largest of its grids); per frame the two
    output dicts (numpy)."""
    import onnxruntime as ort

    predictor = load_model(checkpoint, precision="fp32", window=window)
    model = predictor.model
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    cached = bool(json.loads(model_path.with_suffix(".json").read_text())["cache"])
    torch_cache: list[torch.Tensor] = []
    onnx_cache: list[np.ndarray] = []
    pairs = []
    for frame in frames():
        image = predictor.collate.pixels([[predictor.prepare(frame).image]])[0][0]
        grid = model.backbone.feature_size(*image.shape[-2:])
        reset = not torch_cache
        if reset:
            past_maps = torch.zeros(window - 1, *grid, model.config.hidden_dim)
            past_cells = torch.zeros(window - 1, *grid, dtype=torch.bool)
        else:
            past_maps, past_cells = place_on_grid(torch_cache, grid)
        with torch.no_grad():
            outputs, maps, _ = model.stream_step(image, past_maps, past_cells, torch.tensor(reset))
        expected = {name: getattr(outputs, name).numpy() for name in (*HEADS, "sub_boxes", "obj_boxes")}
        expected["maps"] = maps.numpy()
        feeds = {"pixel_values": image.numpy()}
        if cached:
            if reset:
                feeds.update(
                    past_maps=np.zeros((window - 1, 1, 1, model.config.hidden_dim), np.float32),
                    past_cells=np.zeros((window - 1, 1, 1), bool),
                )
            else:
                on_grid, cells = place_on_grid([torch.from_numpy(m) for m in onnx_cache])
                feeds.update(past_maps=on_grid.numpy(), past_cells=cells.numpy())
            feeds["reset"] = np.array(reset)
        got = dict(zip(names, session.run(None, feeds), strict=True))
        if window > 1:
            torch_cache = (torch_cache + [maps[-1]] * (window - 1 if reset else 1))[-(window - 1) :]
            if cached:
                new = got["next_maps"][-1]
                onnx_cache = (onnx_cache + [new] * (window - 1 if reset else 1))[-(window - 1) :]
        pairs.append((got, expected))
    return pairs


def assert_outputs_match(pairs: list[tuple[dict, dict]], cached: bool) -> None:
    assert len(pairs) == len(SIZES)
    for index, (got, expected) in enumerate(pairs):
        for name in HEADS:
            assert got[name].shape == expected[name].shape, (index, name)
            gap = np.abs(sigmoid(got[name]) - sigmoid(expected[name])).max()
            assert gap <= SCORE_TOLERANCE, (index, name, gap)
        for name in ("sub_boxes", "obj_boxes"):
            assert got[name].shape == expected[name].shape == (1, 4, 4)
            assert np.abs(got[name] - expected[name]).max() <= BOX_TOLERANCE, (index, name)
        if cached:
            assert got["next_maps"].shape == expected["maps"].shape, index
            assert np.abs(got["next_maps"] - expected["maps"]).max() <= SCORE_TOLERANCE, index
            assert got["next_cells"].dtype == np.bool_ and got["next_cells"][-1].all()


def test_window4_matches_stream_step_on_frames_of_two_sizes(checkpoint: Path, window4: ExportReport) -> None:
    pairs = run_both(checkpoint, window4.model_path, window=4)
    assert_outputs_match(pairs, cached=True)
    # the grid follows the frame (resized to 128x96, 96x128, 128x57; stride 32): 3x4, 4x3, 2x4 cells
    assert [got["next_maps"].shape[1:3] for got, _ in pairs] == [(3, 4), (3, 4), (4, 3), (2, 4), (3, 4)]
    # the cache matters: the last frame (128x96, as the first) differs from the first frame's outputs
    assert np.abs(sigmoid(pairs[-1][0]["attention_logits"]) - sigmoid(pairs[0][0]["attention_logits"])).max() > 1e-4


def test_window1_matches_stream_step_and_has_no_cache(checkpoint: Path, window1_cli) -> None:
    code, _, model_path = window1_cli
    assert code == 0
    pairs = run_both(checkpoint, model_path, window=1)
    assert_outputs_match(pairs, cached=False)
    assert set(pairs[0][0]) == set(HEADS) | {"sub_boxes", "obj_boxes"}


# ----------------------------------------------------------------------------------------------- the runner
def graphs_match(got: list[FrameGraph], want: list[FrameGraph]) -> None:
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        assert (a.frame, a.index, a.timestamp) == (b.frame, b.index, b.timestamp)
        for key in FIELDS:
            x, y = a.prediction[key], b.prediction[key]
            assert x.shape == y.shape, (a.frame, key)
            if key == "boxes":  # pixels: normalised by the frame's largest side
                assert (x - y).abs().max().item() <= BOX_TOLERANCE * 200, (a.frame, key)
            elif x.is_floating_point():
                assert (x - y).abs().max().item() <= SCORE_TOLERANCE, (a.frame, key)
            else:
                assert torch.equal(x, y), (a.frame, key)
        triplets_a = {(t.subject_row, t.predicate, t.object_row): t for t in a.triplets}
        triplets_b = {(t.subject_row, t.predicate, t.object_row): t for t in b.triplets}
        assert triplets_a.keys() == triplets_b.keys() and len(triplets_a) > 0
        for key, triplet in triplets_a.items():
            assert triplet.object == triplets_b[key].object
            assert abs(triplet.score - triplets_b[key].score) <= SCORE_TOLERANCE


def test_onnx_predictor_gives_the_streaming_graphs(checkpoint: Path, window4: ExportReport) -> None:
    onnx_predictor = OnnxStreamingPredictor(window4.model_path, top_k=1000, threshold=0.0)
    reference = StreamingPredictor(checkpoint, precision="fp32", window=4, top_k=1000, threshold=0.0)
    stream = frames()
    first, second = stream[:3], stream[3:]
    got = [onnx_predictor.push(f) for f in first]
    want = [reference.push(f) for f in first]
    onnx_predictor.reset()
    reference.reset()
    got += list(onnx_predictor.follow(second))
    want += list(reference.follow(second))
    graphs_match(got, want)
    assert onnx_predictor.frames_seen() == reference.frames_seen() == len(stream)
    # streams are independent and keep their own caches (window - 1 = 3 maps)
    onnx_predictor.push(stream[0], stream="b")
    assert sorted(onnx_predictor.streams) == ["b", "stream"]
    assert len(onnx_predictor._streams["stream"].cache) == 3
    onnx_predictor.close("b")
    assert onnx_predictor.streams == ["stream"] and onnx_predictor.frames_seen("b") == 0


def test_onnx_predictor_without_temporal_layers(no_temporal) -> None:
    checkpoint, report = no_temporal
    assert not report.cache and report.input_names == ("pixel_values",) and len(report.output_names) == 6
    onnx_predictor = OnnxStreamingPredictor(report.model_path, top_k=1000, threshold=0.0)
    reference = StreamingPredictor(checkpoint, precision="fp32", top_k=1000, threshold=0.0)
    stream = frames()[:3]
    graphs_match([onnx_predictor.push(f) for f in stream], [reference.push(f) for f in stream])


def test_onnx_predictor_window1_from_the_cli_export(checkpoint: Path, window1_cli) -> None:
    _, _, model_path = window1_cli
    onnx_predictor = OnnxStreamingPredictor(model_path, top_k=1000, threshold=0.0)
    reference = StreamingPredictor(checkpoint, precision="fp32", window=1, top_k=1000, threshold=0.0)
    stream = frames()[:3]
    graphs_match([onnx_predictor.push(f) for f in stream], [reference.push(f) for f in stream])


# ----------------------------------------------------------------------------------------------- files
def test_the_json_holds_the_checkpoints_settings(checkpoint: Path, window4: ExportReport) -> None:
    settings = json.loads(window4.settings_path.read_text())
    assert window4.settings_path == window4.model_path.with_suffix(".json")
    assert settings["format"] == FORMAT and settings["format_version"] == FORMAT_VERSION
    assert (settings["window"], settings["cache"], settings["task"]) == (4, True, "sgdet")
    assert (settings["hidden_dim"], settings["num_queries"], settings["backbone_stride"]) == (16, 4, 32)
    assert settings["transform"]["resize_shorter"] == TEST_DATA_SETTINGS["resize_shorter"]
    assert settings["transform"]["resize_longer"] == TEST_DATA_SETTINGS["resize_longer"]
    assert settings["transform"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert settings["transform"]["std"] == pytest.approx([0.229, 0.224, 0.225])
    module = load_model(checkpoint)._module
    assert settings["triplet_categories"] == {
        kind: [list(map(int, pair)) for pair in pairs] for kind, pairs in module.hparams["triplet_categories"].items()
    }
    assert settings["clip_triplets"] is True
    assert settings["post"] == {
        "top_k_pairs": None,
        "restrict_to_object_class": False,
        "normalize_attention": True,
        "clip_boxes": True,
    }
    assert settings["inputs"] == ["pixel_values", "past_maps", "past_cells", "reset"]
    assert settings["outputs"] == [*HEADS[:1], "sub_boxes", "obj_boxes", *HEADS[1:], "next_maps", "next_cells"]
    assert settings["checkpoint"] == {"name": "t4.ckpt", "sha256": sha256_file(checkpoint)}
    assert settings["opset"] == window4.opset >= 18 and settings["torch_version"] == torch.__version__
    model = onnx.load(str(window4.model_path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == settings["inputs"]
    assert [o.name for o in model.graph.output] == settings["outputs"]
    assert window4.model_bytes == window4.model_path.stat().st_size > 1_000_000
    assert not list(window4.model_path.parent.glob(".*.tmp"))


def test_a_model_without_its_json_or_of_another_version_is_refused(window4: ExportReport, tmp_path: Path) -> None:
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(window4.model_path.read_bytes())
    with pytest.raises(FileNotFoundError, match=r"lonely\.json"):
        OnnxStreamingPredictor(lonely)
    settings = json.loads(window4.settings_path.read_text())
    (tmp_path / "lonely.json").write_text(json.dumps({**settings, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match=rf"lonely\.json of format version {FORMAT_VERSION} but got"):
        OnnxStreamingPredictor(lonely)
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx"):
        OnnxStreamingPredictor(tmp_path / "missing.onnx")


# ----------------------------------------------------------------------------------------------- the command
def test_the_command_prints_both_files_and_the_names(window1_cli) -> None:
    code, printed, model_path = window1_cli
    assert code == 0
    assert f"wrote {model_path} (" in printed and f"wrote {model_path.with_suffix('.json')} (" in printed
    assert "inputs: pixel_values\n" in printed
    assert "outputs: obj_logits, sub_boxes, obj_boxes, attention_logits, spatial_logits, contacting_logits\n" in printed
    settings = json.loads(model_path.with_suffix(".json").read_text())
    assert (settings["window"], settings["cache"], settings["inputs"]) == (1, False, ["pixel_values"])


def test_the_command_refuses_to_overwrite(checkpoint: Path, window1_cli, capsys) -> None:
    _, _, model_path = window1_cli
    before = model_path.stat().st_mtime_ns
    code = export_main(["--checkpoint", str(checkpoint), "--out", str(model_path), "--window", "1"])
    assert code == 1
    assert f"no file at {model_path}" in capsys.readouterr().err
    assert model_path.stat().st_mtime_ns == before


def test_the_command_names_a_bad_checkpoint(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"not a checkpoint")
    code = export_main(["--checkpoint", str(bad), "--out", str(tmp_path / "model.onnx")])
    assert code == 1
    assert str(bad) in capsys.readouterr().err
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "model.json").exists()


def test_the_command_refuses_bad_arguments(checkpoint: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        export_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--window", "0"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        export_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--format", "tflite"])
    assert exit_info.value.code == 2
    capsys.readouterr()
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--window", "5"]) == 2
    assert "window of 1 to 4 frames" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_a_missing_onnxruntime_names_the_extra(window4: ExportReport, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'arn-lightning\[onnx\]'"):
        OnnxStreamingPredictor(window4.model_path)


def test_infer_stream_runs_the_onnx_model(checkpoint: Path, window4: ExportReport, tmp_path: Path, capsys) -> None:
    """The exported model serves `infer --stream` like its checkpoint: the same frames, triplets and boxes."""
    from arn_lightning.commands import infer

    folder = tmp_path / "frames"
    folder.mkdir()
    for frame in frames()[:4]:
        frame.image.save(folder / f"{frame.source_index:06d}.png")
    args = ["--stream", "--input", str(folder), "--top-k", "1000", "--threshold", "0", "--quiet"]
    assert infer.main(["--checkpoint", str(window4.model_path), *args]) == 0
    from_onnx = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert infer.main(["--checkpoint", str(checkpoint), "--window", "4", "--precision", "fp32", *args]) == 0
    from_checkpoint = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(from_onnx) == len(from_checkpoint) == 4
    for a, b in zip(from_onnx, from_checkpoint, strict=True):
        assert a["frame"] == b["frame"]
        assert [t[:3] for t in a["triplets"][:20]] == [t[:3] for t in b["triplets"][:20]]
        assert max(abs(x - y) for ra, rb in zip(a["boxes"], b["boxes"]) for x, y in zip(ra, rb)) < 1e-2
    assert infer.main(["--checkpoint", str(window4.model_path), "--window", "2", *args]) == infer.EXIT_ERROR
    assert "fixed at export" in capsys.readouterr().err


def test_the_readme_python_examples_run(checkpoint: Path, window4: ExportReport, assets: InferAssets, tmp_path: Path):
    """The README's streaming and ONNX examples, executed as written, in a folder holding the files they name."""
    import contextlib
    import io
    import os
    import re
    import shutil

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Streaming, live video and ONNX") : readme.index("### The notebook")]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2
    shutil.copy(checkpoint, tmp_path / "last.ckpt")
    shutil.copy(window4.model_path, tmp_path / "model.onnx")
    shutil.copy(window4.settings_path, tmp_path / "model.json")
    shutil.copy(assets.video, tmp_path / "my_video.mp4")
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        for block in blocks:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(block, "README.md", "exec"), {})
            lines = printed.getvalue().splitlines()
            assert len(lines) == 4 and lines[0].startswith("  0.0 s [")  # a 2 s video sampled at 2 frames/s
    finally:
        os.chdir(previous)


def test_an_opset_outside_the_working_range_is_refused_at_the_start(checkpoint: Path, tmp_path: Path, capsys) -> None:
    """`--opset 23` / `24` passed onnx.checker and then failed on every frame in onnxruntime; 17 cannot be exported."""
    for opset in ("17", "23", "24"):
        out = tmp_path / f"m{opset}.onnx"
        assert export_main(["--checkpoint", str(checkpoint), "--out", str(out), "--opset", opset]) == 2
        assert "Expected an opset in 18..22 (18: torch's dynamo exporter; above 22: onnxruntime fails on the " in (
            capsys.readouterr().err
        )
        assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def opset23(checkpoint: Path, folder: Path, window4: ExportReport) -> dict:
    """An export at opset 23 with the range check lifted: the onnxruntime check refuses it (nothing is written), and
    a copy of the refused model, with window4's JSON, is kept to feed `infer --stream`."""
    from arn_lightning.inference import onnx_export

    out = folder / "o23" / "model.onnx"
    kept = folder / "o23_kept" / "model.onnx"
    kept.parent.mkdir()
    real_check = onnx_export.check_in_onnxruntime

    def keep_then_check(path, *args):
        kept.write_bytes(Path(path).read_bytes())
        return real_check(path, *args)

    with pytest.MonkeyPatch.context() as patch, torch_threads(1):
        patch.setattr(onnx_export, "OPSET_RANGE", (18, 24))
        patch.setattr(onnx_export, "check_in_onnxruntime", keep_then_check)
        with pytest.raises(RuntimeError) as error:
            export_onnx(checkpoint, out, opset=23)
    settings = json.loads(window4.settings_path.read_text())
    kept.with_suffix(".json").write_text(json.dumps({**settings, "opset": 23}))
    return {"error": str(error.value), "out": out, "kept": kept}


def test_an_export_that_onnxruntime_cannot_run_is_not_written(opset23: dict) -> None:
    import onnxruntime

    out = opset23["out"]
    assert (
        f"Expected {out} (opset 23) to run in onnxruntime {onnxruntime.__version__} but it fails on a frame"
        in (opset23["error"])
    )
    assert "nothing was written" in opset23["error"] and "Attention" in opset23["error"]
    assert sorted(p.name for p in out.parent.iterdir()) == []  # no model, no JSON, no temporary file
    assert opset23["kept"].stat().st_size > 0  # the model passed onnx.checker: it was the runtime that refused it


def test_infer_stream_names_the_model_and_its_opset_when_onnxruntime_fails(opset23: dict, tmp_path: Path, capsys):
    from arn_lightning.commands import infer

    folder = tmp_path / "frames"
    folder.mkdir()
    frames()[0].image.save(folder / "000001.png")
    code = infer.main(["--checkpoint", str(opset23["kept"]), "--stream", "--input", str(folder), "--quiet"])
    err = capsys.readouterr().err
    assert code == infer.EXIT_ERROR
    model = opset23["kept"]
    assert f"Expected {model} (opset 23, exported with torch {torch.__version__}) to run in onnxruntime" in err
    assert "arn-lightning export --opset 22" in err and "Traceback" not in err


def test_a_model_file_onnxruntime_cannot_load_is_named_with_its_opset(window4: ExportReport, tmp_path: Path) -> None:
    from arn_lightning.inference.onnx_predictor import OnnxRunError

    model = tmp_path / "model.onnx"
    model.write_bytes(b"not an onnx model")
    model.with_suffix(".json").write_text(window4.settings_path.read_text())
    with pytest.raises(OnnxRunError, match=rf"^Expected {model} \(opset {window4.opset}, exported with torch "):
        OnnxStreamingPredictor(model)
