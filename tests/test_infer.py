"""``arn-lightning infer`` and the Python inference API end to end, on a tiny checkpoint and synthetic AG frames."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from arn_lightning import cli
from arn_lightning.commands.infer import main as infer_main
from arn_lightning.data.collate import normalize_batch
from arn_lightning.data.datamodule import AGDataModule
from arn_lightning.drawing.annotate import panel_width
from arn_lightning.drawing.timeline import MAX_ROWS, timeline_size
from arn_lightning.inference.api import CheckpointError, SceneGraphPredictor, load_model, predict_video
from arn_lightning.inference.clips import ClipJob
from arn_lightning.metrics.predictions import read_predictions
from arn_lightning.training.checkpoints import save_untrained_checkpoint
from arn_lightning.video.files import open_frames
from arn_lightning.vocab import OBJECT_CLASSES, PREDICATES
from infer_fixtures import (
    SYNTH_SIZE,
    TEST_DATA_SETTINGS,
    VIDEO_FPS,
    InferAssets,
    headers_only_mkv,
    mp4_without_streams,
    tiny_module,
    torch_threads,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # a tiny model: seconds per test

SAMPLE_FPS = VIDEO_FPS // 2
TOP_K = 5


@pytest.fixture(scope="module")
def run_dir(assets: InferAssets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One successful CLI run on the mp4, shared by the output checks."""
    out = tmp_path_factory.mktemp("infer_run") / "graphs"
    with torch_threads(1):
        code = infer_main(
            [
                "--checkpoint",
                str(assets.checkpoint),
                "--input",
                str(assets.video),
                "--out",
                str(out),
                "--fps",
                str(SAMPLE_FPS),
                "--top-k",
                str(TOP_K),
                "--threshold",
                "0",
                "--batch-size",
                "2",
                "--save-frames",
                "--quiet",
            ]
        )
    assert code == 0
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "scene_graphs.jsonl").read_text().splitlines()]


def _expected_frames(assets: InferAssets) -> int:
    return assets.num_video_frames * SAMPLE_FPS // VIDEO_FPS


def test_json_lines_one_per_sampled_frame_with_fields(run_dir: Path, assets: InferAssets) -> None:
    records = _records(run_dir)
    count = _expected_frames(assets)
    assert [r["index"] for r in records] == list(range(count))
    # 1-based decode order, as the Action Genome toolkit's ffmpeg numbers frames: every second frame is sampled
    numbers = list(range(1, assets.num_video_frames + 1, VIDEO_FPS // SAMPLE_FPS))
    assert [r["frame_index"] for r in records] == numbers
    assert [r["frame"] for r in records] == [f"synthetic.mp4/{n:06d}.png" for n in numbers]
    assert records[0]["frame"] == "synthetic.mp4/000001.png" and records[1]["frame"] == "synthetic.mp4/000003.png"
    assert [r["timestamp"] for r in records] == pytest.approx([i / SAMPLE_FPS for i in range(count)])
    expected = {
        "index",
        "frame_index",
        "timestamp",
        "frame",
        "boxes",
        "labels",
        "label_names",
        "scores",
        "pairs",
        "attention",
        "spatial",
        "contacting",
        "triplets",
        "triplet_rows",
    }
    assert all(set(r) == expected for r in records)


def test_json_names_come_from_the_vocabulary_and_triplets_are_sorted(run_dir: Path) -> None:
    records = _records(run_dir)
    assert records
    for record in records:
        assert record["label_names"] == [OBJECT_CLASSES[label - 1] for label in record["labels"]]
        triplets = record["triplets"]
        assert len(triplets) == TOP_K  # threshold 0: every frame has 4 pairs x 26 candidates
        scores = [t[3] for t in triplets]
        assert scores == sorted(scores, reverse=True)
        assert len(record["triplet_rows"]) == len(triplets)
        for (subject, predicate, obj, _), (sub_row, pred_index, obj_row) in zip(
            triplets, record["triplet_rows"], strict=True
        ):
            assert predicate == PREDICATES[pred_index]
            assert subject == record["label_names"][sub_row] and obj == record["label_names"][obj_row]
            assert subject in OBJECT_CLASSES and obj in OBJECT_CLASSES


def test_json_lines_read_back_as_prediction_file(run_dir: Path, assets: InferAssets) -> None:
    predictions = list(read_predictions(run_dir / "scene_graphs.jsonl"))
    assert len(predictions) == _expected_frames(assets)
    assert predictions[0]["contacting"].shape[1] == 17


def test_annotated_video_frame_count_and_size(run_dir: Path, assets: InferAssets) -> None:
    with av.open(str(run_dir / "annotated.mp4")) as container:
        stream = container.streams.video[0]
        frames = [frame.to_image() for frame in container.decode(stream)]
        rate = float(stream.average_rate)
    width, height = SYNTH_SIZE
    assert len(frames) == _expected_frames(assets)
    assert frames[0].size == (width + panel_width(height), height)  # even already: no padding
    assert rate == pytest.approx(SAMPLE_FPS)
    pngs = sorted((run_dir / "frames").iterdir())
    # named by the number of each frame's key (1-based source frame number), as in the JSON lines
    assert [p.name for p in pngs] == [r["frame"].rsplit("/", 1)[1] for r in _records(run_dir)]
    assert len(pngs) == len(frames) and pngs[0].name == "000001.png"
    assert Image.open(pngs[0]).size == frames[0].size


def test_timeline_is_a_png_of_the_expected_size(run_dir: Path) -> None:
    rows = {" ".join(t[:3]) for record in _records(run_dir) for t in record["triplets"]}
    with Image.open(run_dir / "timeline.png") as image:
        assert image.format == "PNG"
        assert image.size == timeline_size(min(len(rows), MAX_ROWS))


def test_output_folder_holds_only_the_results(run_dir: Path) -> None:
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".arn-lightning-output",
        "annotated.mp4",
        "frames",
        "scene_graphs.jsonl",
        "timeline.png",
    ]
    assert [p.name for p in run_dir.parent.iterdir()] == ["graphs"]  # no staging folder left


def test_api_gives_the_cli_triplets(run_dir: Path, assets: InferAssets, predictor: SceneGraphPredictor) -> None:
    # The CLI run's batch size and thread count: other ones may change a score by an ulp, which can flip the sixth
    # decimal of the JSON line (seen on an Intel Xeon, not on an AMD EPYC).
    with torch_threads(1):
        graphs = predict_video(assets.video, predictor, fps=SAMPLE_FPS, top_k=TOP_K, threshold=0.0, batch_size=2)
    records = _records(run_dir)
    assert [g.to_json()["triplets"] for g in graphs] == [r["triplets"] for r in records]
    assert [g.timestamp for g in graphs] == pytest.approx([r["timestamp"] for r in records])


def test_batching_does_not_change_predictions(assets: InferAssets, predictor: SceneGraphPredictor) -> None:
    one = predict_video(assets.video, predictor, fps=SAMPLE_FPS, batch_size=1, threshold=0.0)
    three = predict_video(assets.video, predictor, fps=SAMPLE_FPS, batch_size=3, threshold=0.0)
    assert len(one) == len(three) == _expected_frames(assets) > 0
    for a, b in zip(one, three, strict=True):
        torch.testing.assert_close(a.prediction["contacting"], b.prediction["contacting"])
        torch.testing.assert_close(a.prediction["boxes"], b.prediction["boxes"])


@pytest.mark.parametrize("causal", [False, True])
def test_each_frame_is_predicted_with_its_scheduled_context(
    assets: InferAssets, predictor: SceneGraphPredictor, causal: bool
) -> None:
    frames = list(open_frames(assets.video, SAMPLE_FPS))[:3]
    streamed = [graph.prediction for _, graph in predictor.stream(frames, causal=causal, threshold=0.0)]
    prepared = [predictor.prepare(f) for f in frames]
    # T = 2. Windows: (0, 1) then (1, 2) keeping frame 2 only; causal: (0, 0), (0, 1), (1, 2), each keeping the last.
    if causal:
        jobs = [
            ClipJob((prepared[0], prepared[0]), (1,)),
            ClipJob((prepared[0], prepared[1]), (1,)),
            ClipJob((prepared[1], prepared[2]), (1,)),
        ]
    else:
        jobs = [ClipJob((prepared[0], prepared[1]), (0, 1)), ClipJob((prepared[1], prepared[2]), (1,))]
    direct = [prediction for job in jobs for _, prediction in predictor.predict_clips([job])]
    assert len(streamed) == len(direct) == 3
    for got, want in zip(streamed, direct, strict=True):
        assert got["frame"] == want["frame"]
        torch.testing.assert_close(got["spatial"], want["spatial"])
    assert not torch.allclose(streamed[0]["spatial"], streamed[1]["spatial"])


def test_preprocessing_matches_the_evaluation_batches(assets: InferAssets, predictor: SceneGraphPredictor) -> None:
    data = AGDataModule(root=str(assets.data_root), clip_len=2, eval_batch_size=1, **TEST_DATA_SETTINGS)
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    keys = [t["frame"] for t in batch["targets"]]
    folder = assets.data_root / "frames" / keys[0].split("/")[0]
    frames = {f.key: f for f in open_frames(folder)}
    ours = predictor.collate([[{"image": predictor.prepare(frames[k]).image, "target": {}} for k in keys]])
    assert batch["pixel_values"].dtype == torch.uint8  # the loader's batch, normalised on the device in training
    assert torch.equal(ours["pixel_values"], normalize_batch(batch)["pixel_values"])
    assert torch.equal(ours["pixel_mask"], batch["pixel_mask"])


def test_frame_folder_input_keeps_action_genome_keys(assets: InferAssets, tmp_path: Path) -> None:
    folder = sorted((assets.data_root / "frames").iterdir())[0]
    out = tmp_path / "folder_graphs"
    assert (
        infer_main(
            [
                "--checkpoint",
                str(assets.checkpoint),
                "--input",
                str(folder),
                "--out",
                str(out),
                "--fps",
                "1",
                "--causal",
                "--quiet",
            ]
        )
        == 0
    )
    records = _records(out)
    files = sorted(folder.glob("*.png"))
    assert [r["frame"] for r in records] == [f"{folder.name}/{p.name}" for p in files]
    assert [r["frame_index"] for r in records] == [int(p.stem) for p in files]  # the AG frame numbers
    assert [r["timestamp"] for r in records] == [float(i) for i in range(len(records))]


def test_default_out_and_overwrite(assets: InferAssets, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(assets.video.read_bytes())
    args = ["--checkpoint", str(assets.checkpoint), "--input", str(video), "--quiet"]
    assert infer_main(args) == 0
    out = tmp_path / "clip_scene_graphs"
    (out / "keep.txt").write_text("mine")
    assert infer_main(args) == 1
    assert "not empty (pass --overwrite)" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert infer_main([*args, "--overwrite"]) == 0  # an earlier output of infer: replaced
    assert not (out / "keep.txt").exists() and (out / "timeline.png").is_file()
    user = tmp_path / "user_folder"  # never replaced, --overwrite or not
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    assert infer_main([*args, "--out", str(user), "--overwrite"]) == 1
    assert f"{user} holds other files; it is left as it is" in capsys.readouterr().err
    assert [p.name for p in user.iterdir()] == ["notes.txt"] and (user / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "clip_scene_graphs", "user_folder"]


# ----------------------------------------------------------------------------------------------- errors
def _fails(args: list[str], out: Path, capsys: pytest.CaptureFixture, *messages: str) -> None:
    assert infer_main([*args, "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert all(message in err for message in messages), err
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []


def test_corrupt_video_is_an_error(assets: InferAssets, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    video = tmp_path / "corrupt.mp4"
    video.write_bytes(np.random.default_rng(0).bytes(5000))
    _fails(
        ["--checkpoint", str(assets.checkpoint), "--input", str(video)],
        tmp_path / "out",
        capsys,
        f"could not open {video}",
    )


def test_empty_videos_are_errors(assets: InferAssets, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = mp4_without_streams(tmp_path / "empty.mp4")
    _fails(
        ["--checkpoint", str(assets.checkpoint), "--input", str(empty)],
        tmp_path / "out",
        capsys,
        f"{empty} but found no stream at all (empty video)",
    )
    # A stream whose frames are all missing fails only while decoding, after the model was loaded.
    headers = headers_only_mkv(tmp_path / "headers_only.mkv")
    _fails(
        ["--checkpoint", str(assets.checkpoint), "--input", str(headers)],
        tmp_path / "out2",
        capsys,
        f"decodable video frame in {headers} but found none (empty video)",
    )


def test_folder_without_images_is_an_error(assets: InferAssets, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    _fails(
        ["--checkpoint", str(assets.checkpoint), "--input", str(folder)],
        tmp_path / "out",
        capsys,
        f"in the frame folder {folder} but found none",
    )


class _OtherModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)


def _other_lightning_checkpoint(path: Path) -> Path:
    import lightning as L

    class Other(L.LightningModule):
        def __init__(self, width: int = 2) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(width, width)

    return save_untrained_checkpoint(Other(), path)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "does not exist"),
        ("directory", "is a directory"),
        ("random", "Expected a PyTorch checkpoint (a zip archive) but"),
        ("state_dict", "Expected a Lightning checkpoint in"),
        ("other_model", "Expected a Lightning checkpoint of ARNLitModule but"),
    ],
)
def test_wrong_checkpoints_are_errors(
    assets: InferAssets, tmp_path: Path, capsys: pytest.CaptureFixture, kind: str, message: str
) -> None:
    checkpoint = tmp_path / f"{kind}.ckpt"
    if kind == "directory":
        checkpoint.mkdir()
    elif kind == "random":
        checkpoint.write_bytes(np.random.default_rng(1).bytes(3000))
    elif kind == "state_dict":
        torch.save(_OtherModel().state_dict(), checkpoint)
    elif kind == "other_model":
        _other_lightning_checkpoint(checkpoint)
    _fails(
        ["--checkpoint", str(checkpoint), "--input", str(assets.video)],
        tmp_path / "out",
        capsys,
        message,
        str(checkpoint),
    )


def test_error_messages_name_the_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "weights.ckpt"
    torch.save({"weights": torch.zeros(2)}, checkpoint)
    with pytest.raises(CheckpointError, match=f"Expected a Lightning checkpoint in {checkpoint}"):
        load_model(checkpoint)


def test_predcls_checkpoint_is_refused(assets: InferAssets, tmp_path: Path) -> None:
    from arn_lightning.data.ag import load_annotations

    predcls = tiny_module(load_annotations(assets.data_root, "sgdet").triplet_categories("train"), task="predcls")
    with pytest.raises(CheckpointError, match="trained for SGDet .* task 'predcls'"):
        load_model(save_untrained_checkpoint(predcls, tmp_path / "predcls.ckpt"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without GPU")
def test_cuda_without_gpu_is_an_error(assets: InferAssets, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _fails(
        ["--checkpoint", str(assets.checkpoint), "--input", str(assets.video), "--device", "cuda"],
        tmp_path / "out",
        capsys,
        "torch finds no GPU",
    )


def test_dispatcher_runs_infer_and_rejects_bad_arguments(
    assets: InferAssets, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (
        cli.main(
            [
                "infer",
                "--checkpoint",
                str(tmp_path / "nope.ckpt"),
                "--input",
                str(assets.video),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 1
    )
    assert f"{tmp_path / 'nope.ckpt'} does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["infer", "--checkpoint", "x", "--input", "y", "--top-k", "0"])
    assert exit_info.value.code == 2
    assert os.listdir(tmp_path) == []
