"""AGDataModule on the hand-written fixture: batches, evaluation coverage, subsets, bad frames."""

from collections import Counter

import pytest
import torch

from ag_fixtures import EXPECTED_SGDET_TRAIN_KEYS, EXPECTED_SGDET_TRIPLETS
from arn_lightning.data.collate import normalize_batch
from arn_lightning.data.datamodule import AGDataModule
from arn_lightning.data.frames import FrameError

TEST_KEYS = [
    "C0003.mp4/000100.png",
    "C0003.mp4/000200.png",
    "C0003.mp4/000300.png",
    "D0004.mp4/000001.png",
    "D0004.mp4/000002.png",
    "D0004.mp4/000004.png",
]


def _dm(root, **kwargs):
    options = dict(resize_shorter=24, resize_longer=100, batch_size=2, eval_batch_size=2, flip_prob=0.0)
    options.update(kwargs)
    return AGDataModule(str(root), **options)


def _evaluated(loader):
    return [t["frame"] for batch in loader for t in batch["targets"] if t["evaluate"]]


def test_triplet_categories_without_setup(standard_root_with_frames):
    dm = _dm(standard_root_with_frames)
    assert dm.triplet_categories == EXPECTED_SGDET_TRIPLETS
    assert dm.datasets == {}
    assert dm.vocabulary["objects"][11] == "cup/glass/bottle" and len(dm.vocabulary["contacting"]) == 17


def test_training_batches_follow_the_contract(standard_root_with_frames):
    dm = _dm(standard_root_with_frames)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 3  # one clip per kept train frame
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (2, 3, 3, 24, 32) and batch["pixel_values"].dtype == torch.uint8
    assert batch["pixel_mask"].shape == (2, 3, 24, 32) and batch["pixel_mask"].all()
    assert len(batch["targets"]) == 6
    keys = {t["frame"] for t in batch["targets"]}
    assert keys <= set(EXPECTED_SGDET_TRAIN_KEYS)
    for index, target in enumerate(batch["targets"]):  # the red channel encodes the frame number
        number = int(target["frame"].split("/")[1][:6])
        assert (batch["pixel_values"].view(6, 3, 24, 32)[index, 0] == number).all()  # uint8, normalised on the device
        red = normalize_batch(batch)["pixel_values"].view(6, 3, 24, 32)[index, 0]
        torch.testing.assert_close(red, torch.full_like(red, (number / 255 - 0.485) / 0.229), atol=1e-4, rtol=0)
        assert target["size"].tolist() == [24, 32] and target["orig_size"].tolist() == [48, 64]
    # each training clip marks its key frame (causal windows: the last slot), for loss.frames: key
    assert [t["key"] for t in batch["targets"]] == [False, False, True] * 2
    dm.setup("test")
    assert not any("key" in t for batch in dm.test_dataloader() for t in batch["targets"])


def test_every_test_frame_evaluated_once_in_ground_truth_order(standard_root_with_frames):
    dm = _dm(standard_root_with_frames)
    dm.setup("test")
    evaluated = _evaluated(dm.test_dataloader())
    assert sorted(evaluated) == TEST_KEYS and len(set(evaluated)) == len(evaluated)
    assert [f.key for f in dm.ground_truth("test")] == TEST_KEYS
    dm.setup("fit")  # val uses the test split by default
    assert sorted(_evaluated(dm.val_dataloader())) == TEST_KEYS


def test_subsampling(standard_root_with_frames):
    dm = _dm(standard_root_with_frames, max_eval_frames=4, max_train_frames=2)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 2
    evaluated = _evaluated(dm.val_dataloader())
    assert len(evaluated) == 4 and sorted(evaluated) == sorted(f.key for f in dm.ground_truth("val"))


def test_worker_processes_give_the_same_batches(standard_root_with_frames):
    dm = _dm(standard_root_with_frames, num_workers=1, persistent_workers=True)
    dm.setup("test")
    assert sorted(_evaluated(dm.test_dataloader())) == TEST_KEYS


def test_missing_frame_error_names_the_file(standard_root_with_frames):
    (standard_root_with_frames / "frames" / "D0004.mp4" / "000002.png").unlink()
    with pytest.raises(FrameError, match=r"1 frame image\(s\) of split 'test' are missing .*D0004.mp4/000002.png"):
        _dm(standard_root_with_frames).setup("test")


def test_missing_frame_skipped_with_warning(standard_root_with_frames):
    (standard_root_with_frames / "frames" / "D0004.mp4" / "000002.png").unlink()
    dm = _dm(standard_root_with_frames, on_bad_frame="skip")
    with pytest.warns(RuntimeWarning, match="Skipping 1 frame image"):
        dm.setup("test")
    assert dm.skipped_frames == {"test": ["D0004.mp4/000002.png"]}
    expected = [k for k in TEST_KEYS if k != "D0004.mp4/000002.png"]
    with pytest.warns(RuntimeWarning, match="Skipping a bad frame"):
        assert sorted(_evaluated(dm.test_dataloader())) == expected
    # the missing frame is still part of the scored split (recall 0), as `arn-lightning evaluate` counts it
    assert [f.key for f in dm.ground_truth("test")] == TEST_KEYS
    unreadable = [t["unreadable"] for b in dm.test_dataloader() for t in b["targets"] if "unreadable" in t]
    assert [u["ground_truth"]["frame"] for u in unreadable] == ["D0004.mp4/000002.png"]


def test_corrupt_frame_error_names_the_file(standard_root_with_frames):
    (standard_root_with_frames / "frames" / "C0003.mp4" / "000200.png").write_bytes(b"\x89PNG garbage")
    dm = _dm(standard_root_with_frames)
    dm.setup("test")
    with pytest.raises(FrameError, match=r"C0003.mp4/000200.png: Expected a readable frame image"):
        list(dm.test_dataloader())


def test_corrupt_frame_skipped_and_counted(standard_root_with_frames):
    (standard_root_with_frames / "frames" / "C0003.mp4" / "000200.png").write_bytes(b"\x89PNG garbage")
    dm = _dm(standard_root_with_frames, on_bad_frame="skip")
    dm.setup("test")
    with pytest.warns(RuntimeWarning, match="Skipping a bad frame: .*C0003.mp4/000200.png"):
        clip = dm.datasets["test"][0]
    assert [s["target"]["frame"] for s in clip] == [
        "C0003.mp4/000100.png",
        "C0003.mp4/000100.png",
        "C0003.mp4/000300.png",
    ]
    assert [s["target"]["evaluate"] for s in clip] == [True, False, True]
    assert dm.datasets["test"].bad_frames == ["C0003.mp4/000200.png"]


def test_frame_of_wrong_size(standard_root_with_frames):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(standard_root_with_frames / "frames" / "C0003.mp4" / "000100.png")
    dm = _dm(standard_root_with_frames)
    dm.setup("test")
    with pytest.raises(
        FrameError,
        match=r"000100.png: Expected a 64x48 frame \(bbox_size of person_bbox.pkl\) but "
        r"got 32x32",
    ):
        dm.datasets["test"][0]


def test_bad_options(standard_root_with_frames):
    with pytest.raises(ValueError, match="Expected window in"):
        _dm(standard_root_with_frames, window="future")
    with pytest.raises(ValueError, match="Expected on_bad_frame in"):
        _dm(standard_root_with_frames, on_bad_frame="ignore")
    with pytest.raises(ValueError, match="Expected 1 <= shorter <= longer"):
        _dm(standard_root_with_frames, resize_shorter=100, resize_longer=50)
    dm = _dm(standard_root_with_frames, val_split="val")
    with pytest.raises(
        ValueError, match=r"Expected the split 'val' in data.root=.*, which has the splits \['test', 'train'\]"
    ):
        dm.setup("validate")
    with pytest.raises(RuntimeError, match="Expected setup"):
        _dm(standard_root_with_frames).test_dataloader()


def test_missing_annotations_fail_in_prepare_data(tmp_path):
    with pytest.raises(ValueError, match="person_bbox.pkl but it does not exist"):
        _dm(tmp_path / "nothing").prepare_data()


def test_synthetic_root_generated_on_demand(tmp_path):
    dm = _dm(tmp_path / "synthetic", synthetic=True, synthetic_videos=4, synthetic_frames=4)
    dm.prepare_data()
    assert (tmp_path / "synthetic" / "annotations" / "person_bbox.pkl").is_file()
    assert sum(len(v) for v in dm.triplet_categories.values()) > 0
    assert Counter(p.name.split(".gen-")[0] for p in tmp_path.iterdir()) == Counter({"synthetic": 1})
