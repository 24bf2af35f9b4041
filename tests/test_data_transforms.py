"""Transforms, targets and collate: resize rule, consistent flips of images and boxes, pixel masks."""

import numpy as np
import pytest
import torch

from arn_lightning.data.ag import FrameAnnotation
from arn_lightning.data.collate import ClipCollator, collate_clips, normalize_batch
from arn_lightning.data.dataset import build_target
from arn_lightning.data.transforms import ClipTransform, flip_boxes_xyxy, normalize_into, resized_hw


@pytest.mark.parametrize(
    "hw, shorter, longer, expected",
    [
        ((240, 320), 600, 1000, (600, 800)),  # shorter side rule
        ((100, 400), 600, 1000, (250, 1000)),  # longer side capped
        ((48, 64), 24, 100, (24, 32)),  # downscale
        ((64, 48), 24, 100, (32, 24)),  # portrait
    ],
)
def test_resized_hw(hw, shorter, longer, expected):
    assert resized_hw(*hw, shorter, longer) == expected


def test_flip_boxes_xyxy():
    boxes = torch.tensor([[1.0, 0.0, 2.0, 2.0], [0.0, 1.0, 6.0, 3.0]])
    assert flip_boxes_xyxy(boxes, width=6, height=4).tolist() == [[4, 0, 5, 2], [0, 1, 6, 3]]


def _marked_image(height=48, width=64):
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    image[0, :, :8] = 255  # a red band on the left
    return image


def test_clip_transform_resizes_and_flips_all_frames_and_boxes():
    images = [_marked_image(), _marked_image()]
    boxes = [torch.tensor([[20.0, 10.0, 40.0, 30.0]]), torch.tensor([[0.0, 0.0, 8.0, 48.0]])]
    transform = ClipTransform(shorter=24, longer=100, flip_prob=1.0)
    out_images, out_boxes, flipped = transform(images, boxes)
    assert flipped
    assert [tuple(i.shape) for i in out_images] == [(3, 24, 32), (3, 24, 32)]
    assert all(i.dtype == torch.uint8 for i in out_images)
    assert out_boxes[0].tolist() == [[12.0, 5.0, 22.0, 15.0]]  # scaled by 0.5 then x -> 32 - x
    assert out_boxes[1].tolist() == [[28.0, 0.0, 32.0, 24.0]]
    for image in out_images:  # the red band moved to the right edge in every frame
        assert image[0, :, -3:].float().mean() > 250 and image[0, :, :3].float().mean() < 5


def test_clip_transform_without_flip_and_seeded_decisions():
    images, boxes = [_marked_image()], [torch.tensor([[20.0, 10.0, 40.0, 30.0]])]
    _, out_boxes, flipped = ClipTransform(48, 100, flip_prob=0.0)(images, boxes)
    assert not flipped and out_boxes[0].tolist() == [[20.0, 10.0, 40.0, 30.0]]
    decisions = [ClipTransform(48, 100, 0.5, torch.Generator().manual_seed(3)).draw_flip() for _ in range(2)]
    assert decisions[0] == decisions[1]
    gen = torch.Generator().manual_seed(0)
    draws = [ClipTransform(48, 100, 0.5, gen).draw_flip() for _ in range(200)]
    assert 60 < sum(draws) < 140


def test_normalize_into():
    image = torch.zeros(3, 2, 2, dtype=torch.uint8)
    image[0] = 255
    out = torch.empty(3, 2, 2)
    normalize_into(out, image)
    torch.testing.assert_close(out[0], torch.full((2, 2), (1 - 0.485) / 0.229))
    torch.testing.assert_close(out[2], torch.full((2, 2), -0.406 / 0.225))


def _frame(num_objects=1):
    boxes = np.array([[10, 5, 40, 45]] + [[20, 10, 40, 30]] * num_objects, dtype=np.float32)
    return FrameAnnotation(
        key="A.mp4/000001.png",
        video="A.mp4",
        number=1,
        split="train",
        width=64,
        height=48,
        boxes_xyxy=boxes,
        labels=np.array([1] + [11] * num_objects),
        attention=np.zeros((num_objects, 3), dtype=np.int64),
        spatial=np.ones((num_objects, 6), dtype=np.int64),
        contacting=np.zeros((num_objects, 17), dtype=np.int64),
    )


def test_build_target_normalised_cxcywh_and_flipped_ground_truth():
    frame = _frame()
    target = build_target(frame, torch.from_numpy(frame.boxes_xyxy), (48, 64), flipped=False, evaluate=True)
    torch.testing.assert_close(target["sub_boxes"], torch.tensor([[25 / 64, 25 / 48, 30 / 64, 40 / 48]]))
    torch.testing.assert_close(target["obj_boxes"], torch.tensor([[30 / 64, 20 / 48, 20 / 64, 20 / 48]]))
    assert target["orig_size"].tolist() == [48, 64] and target["size"].tolist() == [48, 64]
    assert target["obj_labels"].tolist() == [11] and target["labels"].tolist() == [1, 11]
    assert target["evaluate"] is True and target["frame"] == "A.mp4/000001.png"
    flipped = build_target(frame, torch.from_numpy(frame.boxes_xyxy), (48, 64), flipped=True, evaluate=False)
    assert flipped["boxes"].tolist() == [[24, 5, 54, 45], [24, 10, 44, 30]]


def test_build_target_clips_boxes_to_the_image_and_accepts_no_objects():
    frame = _frame(0)
    target = build_target(frame, torch.tensor([[-10.0, 5.0, 40.0, 60.0]]), (48, 64), False, True)
    assert target["sub_boxes"].shape == (0, 4) and target["obj_boxes"].shape == (0, 4)
    assert target["attention"].shape == (0, 3) and target["contacting"].shape == (0, 17)
    frame = _frame()
    target = build_target(frame, torch.tensor([[-10.0, 5.0, 40.0, 60.0], [0, 0, 8, 8]]), (48, 64), False, True)
    torch.testing.assert_close(target["sub_boxes"], torch.tensor([[20 / 64, 26.5 / 48, 40 / 64, 43 / 48]]))


def _sample(height, width, value, name):
    return {"image": torch.full((3, height, width), value, dtype=torch.uint8), "target": {"frame": name}}


def test_collate_pads_to_largest_frame_with_explicit_mask():
    clips = [[_sample(4, 6, 255, "a0"), _sample(4, 6, 0, "a1")], [_sample(5, 3, 255, "b0"), _sample(2, 2, 255, "b1")]]
    batch = collate_clips(clips)
    assert batch["pixel_values"].shape == (2, 2, 3, 5, 6) and batch["pixel_values"].dtype == torch.float32
    assert batch["pixel_mask"].shape == (2, 2, 5, 6) and batch["pixel_mask"].dtype == torch.bool
    assert [t["frame"] for t in batch["targets"]] == ["a0", "a1", "b0", "b1"]  # frame-major
    mask = batch["pixel_mask"]
    assert mask[0, 0, :4, :6].all() and not mask[0, 0, 4:].any()
    assert mask[1, 0, :5, :3].all() and not mask[1, 0, :, 3:].any()
    assert int(mask[1, 1].sum()) == 4
    values = batch["pixel_values"]
    assert (values[~mask.unsqueeze(2).expand_as(values)] == 0).all()  # padding is zero
    torch.testing.assert_close(values[0, 0, 0, 0, 0], torch.tensor((1 - 0.485) / 0.229))
    torch.testing.assert_close(values[0, 1, 1, 0, 0], torch.tensor(-0.456 / 0.224))


def test_collate_rejects_bad_input():
    with pytest.raises(ValueError, match="Expected every clip to have 2 > 0 frames but got \\[2, 1\\]"):
        collate_clips([[_sample(2, 2, 0, "a"), _sample(2, 2, 0, "b")], [_sample(2, 2, 0, "c")]])
    bad = {"image": torch.zeros(3, 2, 2), "target": {}}
    with pytest.raises(ValueError, match="Expected sample 0 to hold a uint8"):
        collate_clips([[bad]])
    with pytest.raises(ValueError, match="Expected 3 means and 3 positive stds"):
        ClipCollator(std=(1.0, 0.0, 1.0))


def test_collate_in_a_worker_equals_the_main_process(monkeypatch):
    """Main process: numpy (huge page) memory; DataLoader worker: shared memory. Same values, same layout."""
    import arn_lightning.data.collate as collate_module

    rng = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=rng) for h, w in [(5, 7), (6, 4), (3, 3)]]
    images.append(images[0].permute(1, 2, 0).contiguous().permute(2, 0, 1))  # channels-last, as decoded / resized
    clips = [[{"image": images[0], "target": {}}, {"image": images[1], "target": {}}]]
    clips.append([{"image": images[2], "target": {}}, {"image": images[3], "target": {}}])
    main = collate_clips(clips)
    monkeypatch.setattr(collate_module, "get_worker_info", lambda: object())
    worker = collate_clips(clips)
    assert worker["pixel_values"].is_shared() and not main["pixel_values"].is_shared()
    for key in ("pixel_values", "pixel_mask"):
        assert main[key].is_contiguous() and worker[key].is_contiguous()
        assert main[key].dtype == worker[key].dtype and torch.equal(main[key], worker[key])
    torch.testing.assert_close(main["pixel_values"][1, 1], main["pixel_values"][0, 0], rtol=0, atol=0)
    expected = torch.empty(3, 5, 7)
    normalize_into(expected, images[0])
    assert torch.equal(main["pixel_values"][0, 0, :, :5, :7], expected)
    assert main["pixel_mask"].sum().item() == 35 + 24 + 9 + 35


def test_batch_targets_pickle_packed_and_unpickle_equal():
    """Targets cross the worker -> main process boundary packed (one tensor per dtype) and come back equal."""
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  registers the shared-memory tensor pickling with ForkingPickler

    targets = [build_target(_frame(n), torch.from_numpy(_frame(n).boxes_xyxy), (48, 64), n == 1, True) for n in (0, 2)]
    targets[1]["unreadable"] = {"reason": "x", "ground_truth": {"boxes": torch.ones(2, 4), "n": (torch.arange(3),)}}
    batch = collate_clips([[{"image": torch.zeros(3, 4, 4, dtype=torch.uint8), "target": t}] for t in targets])
    assert isinstance(batch["targets"], list)
    for data in (pickle.dumps(batch["targets"]), bytes(ForkingPickler.dumps(batch["targets"]))):
        back = pickle.loads(data)
        assert type(back) is list and len(back) == len(targets)
        for ours, sent in zip(back, targets, strict=True):
            assert ours.keys() == sent.keys()
            for key, value in sent.items():
                if isinstance(value, torch.Tensor):
                    assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
                elif key != "unreadable":
                    assert ours[key] == value
        gt = back[1]["unreadable"]["ground_truth"]
        assert torch.equal(gt["boxes"], torch.ones(2, 4)) and torch.equal(gt["n"][0], torch.arange(3))


def test_batch_targets_copy_is_shallow():
    import copy

    targets = collate_clips([[_sample(2, 2, 0, "a"), _sample(2, 2, 0, "b")]])["targets"]
    clone = copy.copy(targets)
    assert clone == targets and clone is not targets and all(a is b for a, b in zip(clone, targets, strict=True))


def _bits(values: torch.Tensor) -> torch.Tensor:
    """The float32 values' bit patterns (``torch.equal`` alone would take -0.0 for 0.0)."""
    return values.contiguous().view(torch.int32)


def _random_clips(seed: int) -> list[list[dict]]:
    rng = torch.Generator().manual_seed(seed)
    sizes = [(5, 7), (6, 4), (3, 3), (6, 7)]
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=rng) for h, w in sizes]
    images.append(images[0].permute(1, 2, 0).contiguous().permute(2, 0, 1))  # channels-last, as decoded / resized
    images.append(torch.full((3, 2, 5), 0, dtype=torch.uint8))  # black: its normalised pixels are not 0.0
    return [[{"image": image, "target": {"frame": str(i)}} for image in images[i : i + 2]] for i in (0, 2, 4)]


@pytest.mark.parametrize("in_worker", [False, True])
@pytest.mark.parametrize("stats", [{}, {"mean": (0.5, 0.25, 0.125), "std": (0.3, 0.7, 0.11)}])
def test_uint8_batches_normalised_later_equal_the_float_batch_bit_for_bit(monkeypatch, in_worker, stats):
    """The data module's uint8 batch + ``normalize_batch`` (the training module's device step) == the float batch
    the collate builds itself (what inference uses), bit for bit, padding included (exactly +0.0)."""
    import arn_lightning.data.collate as collate_module

    if in_worker:  # a DataLoader worker's collate writes into shared memory
        monkeypatch.setattr(collate_module, "get_worker_info", lambda: object())
    clips = _random_clips(1)
    floats = ClipCollator(**stats)(clips)
    raw = ClipCollator(**stats, normalize=False)(clips)
    assert raw["pixel_values"].dtype == torch.uint8 and raw["pixel_values"].is_shared() == in_worker
    assert raw["pixel_values"].permute(0, 1, 3, 4, 2).is_contiguous()  # channels-last in memory, as decoded
    assert torch.equal(raw["pixel_mask"], floats["pixel_mask"]) and raw["targets"] == floats["targets"]
    padding = ~raw["pixel_mask"].unsqueeze(2).expand_as(raw["pixel_values"])
    assert int(padding.sum()) > 0 and not raw["pixel_values"][padding].any()  # uint8 padding: zeros
    normalised = normalize_batch(raw, **stats)
    assert normalised["pixel_values"].dtype == torch.float32 and normalised["targets"] is raw["targets"]
    assert torch.equal(_bits(normalised["pixel_values"]), _bits(floats["pixel_values"]))
    assert torch.equal(_bits(normalised["pixel_values"][padding]), torch.zeros(int(padding.sum()), dtype=torch.int32))
    black = normalised["pixel_values"][2, 1, :, :2, :5]  # a real black pixel is the normalised 0, not 0.0
    assert (black != 0).all() and raw["pixel_values"].dtype == torch.uint8  # the input batch is left as it was


def test_uint8_batches_from_a_loader_worker_normalise_to_the_float_batch():
    """Through a real worker process (shared memory, pickling with the channels-last strides)."""
    from torch.utils.data import DataLoader

    clips = _random_clips(4)
    loader = DataLoader(clips, batch_size=len(clips), collate_fn=ClipCollator(normalize=False), num_workers=1)
    (raw,) = list(loader)
    assert raw["pixel_values"].dtype == torch.uint8 and raw["pixel_values"].permute(0, 1, 3, 4, 2).is_contiguous()
    assert torch.equal(_bits(normalize_batch(raw)["pixel_values"]), _bits(collate_clips(clips)["pixel_values"]))


def test_uint8_batches_without_padding_normalise_to_the_float_batch():
    """No padding (every frame the same size): the CPU skips the padding pass, the values are still the same."""
    rng = torch.Generator().manual_seed(5)
    clips = [[{"image": torch.randint(0, 256, (3, 4, 6), dtype=torch.uint8, generator=rng), "target": {}}] * 2] * 2
    raw = ClipCollator(normalize=False)(clips)
    assert raw["pixel_mask"].all()
    assert torch.equal(_bits(normalize_batch(raw)["pixel_values"]), _bits(collate_clips(clips)["pixel_values"]))


def test_normalize_batch_passes_float_batches_and_rejects_a_bad_mask():
    floats = collate_clips(_random_clips(2))
    assert normalize_batch(floats) is floats
    raw = ClipCollator(normalize=False)(_random_clips(2))
    with pytest.raises(ValueError, match=r"Expected a pixel_mask of shape \[..., H, W\] for pixel_values"):
        normalize_batch({**raw, "pixel_mask": raw["pixel_mask"][..., :-1]})
    with pytest.raises(ValueError, match="but got None"):
        normalize_batch({"pixel_values": raw["pixel_values"]})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_normalising_on_the_gpu_equals_the_cpu_collate_bit_for_bit():
    clips = _random_clips(3)
    raw = ClipCollator(normalize=False)(clips)
    on_gpu = normalize_batch({key: raw[key].cuda() for key in ("pixel_values", "pixel_mask")})
    assert torch.equal(_bits(on_gpu["pixel_values"].cpu()), _bits(collate_clips(clips)["pixel_values"]))
