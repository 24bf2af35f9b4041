"""Causal evaluation (``data.eval_scheme: causal``): every frame scored as the last frame of its own causal window,
through the model's streaming step, many videos side by side.

The reference is streaming inference (:class:`~arn_lightning.inference.streaming.StreamingPredictor`, what
``infer --stream`` runs), itself tested equal to ``infer --causal`` in ``test_streaming.py``: a test run of the data
module in the causal scheme gives every frame the prediction that streaming gives the same frames of its video.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

from arn_lightning.data.ag import load_annotations
from arn_lightning.data.clips import evaluation_clips, geometry_mismatch, stream_steps
from arn_lightning.data.datamodule import AGDataModule
from arn_lightning.data.synth import generate
from arn_lightning.inference.streaming import StreamingPredictor
from arn_lightning.training.checkpoints import save_untrained_checkpoint
from arn_lightning.training.lit_module import ARNLitModule
from infer_fixtures import TEST_DATA_SETTINGS, InferAssets, tiny_module, torch_threads

pytestmark = pytest.mark.usefixtures("one_thread")

#: Largest difference allowed between causal evaluation and streaming (float32, boxes normalised by their largest).
TOLERANCE = 1e-5
FIELDS = ("boxes", "labels", "scores", "pairs", "attention", "spatial", "contacting")


# ----------------------------------------------------------------------------------------------- the schedule
def test_stream_steps_plays_each_video_in_order_in_consecutive_steps() -> None:
    videos = [["a0", "a1", "a2"], ["b0"], ["c0", "c1"]]
    assert stream_steps(videos, 2) == [["a0", "c0"], ["a1", "c1"], ["a2", "b0"]]
    assert stream_steps(videos, 1) == [["a0"], ["a1"], ["a2"], ["c0"], ["c1"], ["b0"]]
    assert stream_steps(videos, 5) == [["a0", "c0", "b0"], ["a1", "c1"], ["a2"]]  # lanes in LPT order
    assert stream_steps([], 3) == []


def test_stream_steps_balances_the_lanes() -> None:
    lengths = [7, 1, 4, 4, 9, 2, 3, 3, 5]
    videos = [[(v, i) for i in range(n)] for v, n in enumerate(lengths)]
    steps = stream_steps(videos, 3)
    items = [item for step in steps for item in step]
    assert sorted(items) == sorted(item for video in videos for item in video)  # every frame exactly once
    assert len(steps) == 13  # 38 frames on 3 lanes: LPT reaches the bound ceil(38 / 3), lanes of 13, 13, 12
    for step in steps:
        assert len({v for v, _ in step}) == len(step)  # one frame per video and step
    for video in range(len(lengths)):  # consecutive steps, time order
        where = [s for s, step in enumerate(steps) for v, _ in step if v == video]
        assert where == list(range(where[0], where[0] + lengths[video]))
        assert [i for step in steps for v, i in step if v == video] == list(range(lengths[video]))


def test_stream_steps_refuses_no_lane() -> None:
    with pytest.raises(ValueError, match=r"at least 1 lane \(data.eval_batch_size\)"):
        stream_steps([[1]], 0)


def test_causal_clips_are_single_frames_of_their_video() -> None:
    clips = evaluation_clips([[0, 1, 2], [3, 4]], 3, scheme="causal")
    assert [(c.frames, c.evaluate, c.stream) for c in clips] == [
        ((0,), (True,), (0, 3)),
        ((1,), (True,), (0, 3)),
        ((2,), (True,), (0, 3)),
        ((3,), (True,), (1, 3)),
        ((4,), (True,), (1, 3)),
    ]


@pytest.mark.parametrize(
    ("frames", "window", "scheme", "warns"),
    [
        ("all", "causal", "tiled", False),
        ("all", "causal", "causal", False),
        ("all", "centred", "causal", False),
        ("key", "causal", "tiled", True),
        ("key", "causal", "causal", False),
        ("key", "causal", "keyframe", False),
        ("key", "centred", "causal", True),
        ("key", "centred", "tiled", True),
        ("key", "centred", "keyframe", False),
    ],
)
def test_geometry_mismatch(frames: str, window: str, scheme: str, warns: bool) -> None:
    message = geometry_mismatch(frames, window, scheme)
    assert (message is not None) == warns
    if warns:
        assert f"data.eval_scheme={scheme}" in message and "loss.frames=key" in message


# ----------------------------------------------------------------------------------------------- the model step
def test_stream_frames_equals_stream_step_for_streams_of_different_sizes(assets: InferAssets) -> None:
    """Three streams of different frame sizes side by side, one starting late: each frame's outputs equal
    ``stream_step`` on that frame and its own stream's cache."""
    categories = load_annotations(assets.data_root, "sgdet").triplet_categories("train")
    torch.manual_seed(5)
    model = tiny_module(categories, num_frames=3, temporal_layers=2).model.eval()
    sizes = {"a": (64, 96), "b": (96, 64), "c": (48, 80)}
    images = {name: [torch.randn(3, *hw) for _ in range(4)] for name, hw in sizes.items()}
    schedule = [["a", "b"], ["a", "b", "c"], ["a", "c"], ["a", "b", "c"]]  # b pauses at step 2 (still its video)
    caches: dict[str, list[torch.Tensor]] = {name: [] for name in sizes}
    seen = {name: 0 for name in sizes}
    with torch.no_grad():
        for step in schedule:
            frames = [images[name][seen[name]] for name in step]
            outputs, maps = model.stream_frames(frames, [caches[name] for name in step], 3)
            for b, name in enumerate(step):
                image, cache = frames[b][None], caches[name]
                grid = model.backbone.feature_size(*image.shape[-2:])
                past = torch.zeros(2, *grid, 16) if not cache else torch.stack(cache)
                cells = torch.ones(2, *grid, dtype=torch.bool)
                want, _, _ = model.stream_step(image, past, cells, torch.tensor(not cache))
                for field in ("obj_logits", "sub_boxes", "obj_boxes", "attention_logits", "contacting_logits"):
                    got = getattr(outputs, field)[b]
                    assert (got - getattr(want, field)[0]).abs().max().item() <= TOLERANCE, (name, field)
                caches[name] = (cache or [maps[b]] * 2)[-1:] + [maps[b]]
                seen[name] += 1


def test_stream_frames_refuses_a_window_beyond_the_model(assets: InferAssets) -> None:
    categories = load_annotations(assets.data_root, "sgdet").triplet_categories("train")
    model = tiny_module(categories, num_frames=2).model.eval()
    with pytest.raises(ValueError, match=r"window in \[1, 2\] frames but got 3"):
        model.stream_frames([torch.randn(3, 32, 32)], [[]], 3)


# ----------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def causal_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic AG whose test split has several videos of different lengths (the lanes switch videos)."""
    root = tmp_path_factory.mktemp("causal_ag") / "ag"
    generate(root, videos=10, frames=4, size=(160, 120), seed=4, test_fraction=0.5)
    return root


@pytest.fixture(scope="module")
def t3_checkpoint(causal_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SGDet checkpoint with T = 3 and two temporal layers (random weights)."""
    path = tmp_path_factory.mktemp("causal") / "t3.ckpt"
    categories = load_annotations(causal_root, "sgdet").triplet_categories("train")
    with torch_threads(1):
        torch.manual_seed(7)
        save_untrained_checkpoint(tiny_module(categories, num_frames=3, temporal_layers=2), path)
    return path


def causal_data(root: Path, lanes: int, scheme: str = "causal", **settings) -> AGDataModule:
    """The test split of ``root`` as the predict split, ``T`` = 3, evaluated with ``scheme``."""
    return AGDataModule(
        root=root,
        clip_len=3,
        eval_scheme=scheme,
        eval_batch_size=lanes,
        predict_split="test",
        **TEST_DATA_SETTINGS,
        **settings,
    )


def trainer(tmp_path: Path) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)


@pytest.mark.parametrize("lanes", [1, 2])
def test_causal_evaluation_equals_infer_stream(causal_root: Path, t3_checkpoint: Path, tmp_path: Path, lanes: int):
    """``predict`` in the causal scheme gives each test frame what ``StreamingPredictor`` (``infer --stream``) gives
    it when its video's frames are pushed in order, one stream per video."""
    module = ARNLitModule.load_from_checkpoint(t3_checkpoint, predictions_dir=str(tmp_path / "out"))
    data = causal_data(causal_root, lanes)
    batches = trainer(tmp_path).predict(module, data)
    got = {pred["frame"]: pred for batch in batches for pred in batch}
    streaming = StreamingPredictor(t3_checkpoint, precision="fp32", window=3, top_k=1000, threshold=0.0)
    frames = data.datasets["predict"].frames
    expected = {}
    for index in range(len(frames)):
        key = frames[index].key
        video = key.split("/")[0]
        image = Image.open(data.frames_dir / key).convert("RGB")
        expected[key] = streaming.push(image, stream=video).prediction
    assert sorted(got) == sorted(expected) and len(got) == len(frames)
    assert len({key.split("/")[0] for key in got}) > lanes  # more videos than lanes: a lane moves to a next video
    for key, want in expected.items():
        for field in FIELDS:
            a, b = got[key][field], want[field]
            assert a.shape == b.shape, (key, field)
            if field == "boxes":
                scale = max(b.abs().max().item(), 1.0)
                a, b = a / scale, b / scale
            if a.is_floating_point():
                assert (a - b).abs().max().item() <= TOLERANCE, (key, field, (a - b).abs().max().item())
            else:
                assert torch.equal(a, b), (key, field)


def test_causal_test_scores_every_frame_once_and_caches_one_map_per_playing_video(
    causal_root: Path, t3_checkpoint: Path, tmp_path: Path
) -> None:
    module = ARNLitModule.load_from_checkpoint(t3_checkpoint, predictions_dir=str(tmp_path / "out"))
    sizes = []

    class Watch(L.Callback):
        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
            sizes.append((len(batch["targets"]), len(pl_module._stream_caches)))

    data = causal_data(causal_root, 2)
    run = trainer(tmp_path)
    run.callbacks.append(Watch())
    run.test(module, data)
    frames = len(data.datasets["test"].frames)
    assert module.last_metrics["frames/predicted"] == frames
    assert sum(n for n, _ in sizes) == frames
    assert all(cached == n <= 2 for n, cached in sizes)  # the caches of the batch's videos only
    assert module._stream_caches == {}  # dropped at the end of the epoch


def test_a_key_frame_loss_with_tiled_evaluation_is_logged(assets: InferAssets, tmp_path: Path) -> None:
    categories = load_annotations(assets.data_root, "sgdet").triplet_categories("train")
    module = tiny_module(categories, num_frames=2, distill=False)  # validation computes the losses: no CLIP tower
    module.loss_config.frames = "key"  # this module's own copy: ARNLitModule's default LossConfig stays as it is
    assert tiny_module(categories, num_frames=2).loss_config.frames == "all"
    data = AGDataModule(root=assets.data_root, clip_len=2, eval_scheme="tiled", **TEST_DATA_SETTINGS)
    with pytest.warns(UserWarning, match=r"loss.frames=key .* data.eval_scheme=tiled"):
        trainer(tmp_path).validate(module, data)
    data = AGDataModule(root=assets.data_root, clip_len=2, eval_scheme="causal", **TEST_DATA_SETTINGS)
    with torch_threads(1), pytest.warns() as caught:
        trainer(tmp_path).validate(module, data)
    assert not [w for w in caught if "loss.frames=key" in str(w.message)]


def test_frames_of_different_sizes_in_one_batch(assets: InferAssets, tmp_path: Path) -> None:
    """Videos of two frame sizes side by side: the same predictions as each video alone (lanes 1)."""
    root = tmp_path / "ag"
    generate(root, videos=10, frames=4, size=(160, 120), seed=4, test_fraction=0.5)
    person_file = root / "annotations" / "person_bbox.pkl"
    people = pickle.loads(person_file.read_bytes())
    videos = sorted(load_annotations(root, "sgdet").videos("test"))
    for key, entry in people.items():
        if key.split("/")[0] in videos[1::2]:  # every other test video at another size (its boxes are kept)
            entry["bbox_size"] = (200, 100)
            path = root / "frames" / key
            if path.exists():
                Image.open(path).resize((200, 100)).save(path)
    person_file.write_bytes(pickle.dumps(people))
    categories = load_annotations(root, "sgdet").triplet_categories("train")
    torch.manual_seed(2)
    module = tiny_module(categories, num_frames=3).eval()
    runs = {}
    sizes = {(f.width, f.height) for f in causal_data(root, 1).annotations.frames("test")}
    assert sizes == {(160, 120), (200, 100)}  # resized to 128x96 and 128x64
    for lanes in (1, 4):
        data = causal_data(root, lanes)
        batches = trainer(tmp_path).predict(module, data)
        runs[lanes] = {p["frame"]: p for batch in batches for p in batch}
    assert runs[1].keys() == runs[4].keys()
    for key in runs[1]:
        assert (runs[1][key]["scores"] - runs[4][key]["scores"]).abs().max().item() <= TOLERANCE, key


def test_processes_share_the_videos_and_an_idle_process_gets_an_unscored_step(causal_root: Path) -> None:
    """Under DDP each process plays every ``world``-th video; every frame is scored exactly once over the processes,
    and a process without a video takes one padding step (no frame scored) so that it still joins the reductions."""
    data = causal_data(causal_root, 2)
    data.setup("test")
    frames = [f.key for f in data.datasets["test"].frames]
    for world in (2, 5):
        scored = []
        for rank in range(world):
            data._world = lambda rank=rank, world=world: (rank, world)  # what the attached trainer reports
            batches = list(data.test_dataloader())
            targets = [t for batch in batches for t in batch["targets"]]
            scored += [t["frame"] for t in targets if t["evaluate"]]
            if not [t for t in targets if t["evaluate"]]:
                assert len(batches) == 1 and all(t.get("padding") for t in targets)
        assert sorted(scored) == sorted(frames)


@pytest.mark.parametrize("task", ["sgdet", "sgcls", "predcls"])
def test_causal_evaluation_equals_recomputed_causal_windows(causal_root: Path, tmp_path: Path, task: str) -> None:
    """Every task: the streaming step gives each frame what the full model gives its causal window recomputed
    (``eval_scheme: keyframe`` with causal windows, ``T`` frames per frame); SGCls / PredCls read the ground truth
    of the new frames."""
    categories = load_annotations(causal_root, task).triplet_categories("train")
    torch.manual_seed(11)
    module = tiny_module(categories, num_frames=3, task=task, temporal_layers=2).eval()
    runs = {}
    for scheme in ("causal", "keyframe"):
        data = causal_data(causal_root, 2, scheme, task=task)
        batches = trainer(tmp_path).predict(module, data)
        runs[scheme] = {p["frame"]: p for batch in batches for p in batch}
    assert runs["causal"].keys() == runs["keyframe"].keys() and len(runs["causal"]) > 4
    for key, want in runs["keyframe"].items():
        for field in FIELDS:
            a, b = runs["causal"][key][field], want[field]
            if a.is_floating_point():
                assert (a - b).abs().max().item() <= 1e-4 * max(1.0, b.abs().max().item()), (key, field)
            else:
                assert torch.equal(a, b), (key, field)
