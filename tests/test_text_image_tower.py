"""The frozen CLIP image tower of the distillation target on the tiny CLIP (arn_lightning.text.image_tower)."""

import pytest
import torch
from torch import nn

from arn_lightning.text.config import ClipConfig
from arn_lightning.text.image_tower import FrozenClipImageEncoder

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _normalised(images01: torch.Tensor) -> torch.Tensor:
    return (images01 - IMAGENET_MEAN) / IMAGENET_STD


def _clip_normalised(encoder: FrozenClipImageEncoder, images01: torch.Tensor) -> torch.Tensor:
    return (images01 - encoder.clip_mean) / encoder.clip_std


def test_image_tower_is_invisible_to_state_dict_parameters_and_train(tiny_clip):
    parent = nn.Module()
    parent.head = nn.Linear(2, 2)
    parent.clip = FrozenClipImageEncoder(tiny_clip)
    assert set(parent.state_dict()) == {"head.weight", "head.bias"}
    assert [p.shape for p in parent.parameters()] == [torch.Size([2, 2]), torch.Size([2])]
    fresh = nn.Module()
    fresh.head = nn.Linear(2, 2)
    fresh.clip = FrozenClipImageEncoder(tiny_clip)
    fresh.load_state_dict(parent.state_dict(), strict=True)
    parent.train()
    assert parent.clip.training and not parent.clip.tower.training
    assert all(not p.requires_grad for p in parent.clip.tower.parameters())
    parent.to(torch.float64)
    assert next(parent.clip.tower.parameters()).dtype == torch.float64


def test_preprocess_crops_the_valid_region(tiny_clip):
    encoder = FrozenClipImageEncoder(tiny_clip)  # 32x32 input
    image = torch.rand(3, 32, 64)
    padded = torch.zeros(1, 3, 40, 80)
    padded[0, :, :32, :64] = _normalised(image)
    mask = torch.zeros(1, 40, 80, dtype=torch.bool)
    mask[0, :32, :64] = True
    out = encoder.preprocess(padded, mask)  # shorter side already 32: centre crop of columns 16..48
    torch.testing.assert_close(out[0], _clip_normalised(encoder, image[:, :, 16:48]), atol=1e-5, rtol=0)


def test_squash_keeps_the_whole_frame(tiny_clip):
    encoder = FrozenClipImageEncoder(ClipConfig(**{**vars(tiny_clip), "image_resize": "squash"}))
    image = torch.zeros(3, 16, 64)
    image[:, :, :32] = 1.0  # left half white: squashed, the left 16 columns stay white
    out = encoder.preprocess(_normalised(image)[None], torch.ones(1, 16, 64, dtype=torch.bool))
    expected = _clip_normalised(encoder, torch.ones(3, 32, 32))
    torch.testing.assert_close(out[0, :, :, :14], expected[:, :, :14], atol=1e-5, rtol=0)
    assert out.shape == (1, 3, 32, 32)


def test_letterbox_keeps_the_whole_frame_and_its_aspect(tiny_clip):
    """A 16:9 frame: centre crop drops 44 % of it; letterbox keeps it all, unstretched, in a band of CLIP's mean
    colour (0 after CLIP's normalisation)."""
    encoder = FrozenClipImageEncoder(ClipConfig(**{**vars(tiny_clip), "image_resize": "letterbox"}))
    image = torch.zeros(3, 18, 64)
    image[:, :, :4] = 1.0  # a white strip at the left edge, which a centre crop would cut off
    out = encoder.preprocess(_normalised(image)[None], torch.ones(1, 18, 64, dtype=torch.bool))
    assert out.shape == (1, 3, 32, 32)
    # 64 -> 32 columns: the frame is 9 rows high (rows 11..19), the bands above and below are exactly 0
    assert out[0, :, :11].abs().max().item() < 1e-6 and out[0, :, 20:].abs().max().item() < 1e-6
    white = _clip_normalised(encoder, torch.ones(3, 1, 1))[:, 0, 0]
    torch.testing.assert_close(out[0, :, 15, 0], white, atol=1e-4, rtol=0)  # the left edge survives
    cropped = FrozenClipImageEncoder(tiny_clip).preprocess(
        _normalised(image)[None], torch.ones(1, 18, 64, dtype=torch.bool)
    )
    assert (cropped[0, :, :, :4] - white[:, None, None]).abs().min().item() > 0.1  # centre crop lost it


def test_forward_gives_unit_embeddings_independent_of_padding(tiny_clip):
    encoder = FrozenClipImageEncoder(tiny_clip)
    image = _normalised(torch.rand(3, 48, 40))
    padded = torch.full((2, 3, 64, 64), 3.0)  # garbage in the padding
    padded[:, :, :48, :40] = image
    mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    mask[:, :48, :40] = True
    out = encoder(padded, mask)
    assert out.shape == (2, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(out[0], encoder(image[None], torch.ones(1, 48, 40, dtype=torch.bool))[0])
    with pytest.raises(ValueError, match="valid \\(True\\) pixels"):
        encoder(padded, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="pixel_mask"):
        encoder(padded, mask[:, :10])


def test_embed_uses_the_per_frame_cache_keyed_by_content(tiny_clip):
    """The cache was keyed by frame key only: a data root whose images changed under the same keys got the old
    images' embeddings (a fit on it added 0 entries)."""
    encoder = FrozenClipImageEncoder(ClipConfig(**{**vars(tiny_clip), "image_cache": True}))
    first_pixels = torch.randn(2, 3, 32, 32)
    mask = torch.ones(2, 32, 32, dtype=torch.bool)
    first = encoder.embed(first_pixels, mask, ["a.mp4/000001.png", "a.mp4/000002.png"])
    assert len(list(encoder.cache_path.rglob("*.pt"))) == 2
    again = encoder.embed(first_pixels.flip(0), mask, ["a.mp4/000002.png", "a.mp4/000001.png"])
    torch.testing.assert_close(again, first.flip(0), rtol=0, atol=0)  # read back, no new entry
    assert len(list(encoder.cache_path.rglob("*.pt"))) == 2
    changed = torch.randn(2, 3, 32, 32)  # other images under the same keys
    second = encoder.embed(changed, mask, ["a.mp4/000001.png", "a.mp4/000002.png"])
    torch.testing.assert_close(second, encoder(changed, mask))
    assert not torch.allclose(second[0], first[0])
    assert len(list(encoder.cache_path.rglob("*.pt"))) == 4
    # Padding outside the valid region does not change the entry; the region's size does.
    padded, padded_mask = torch.zeros(1, 3, 40, 40), torch.zeros(1, 40, 40, dtype=torch.bool)
    padded[0, :, :32, :32], padded_mask[0, :32, :32] = first_pixels[0], True
    torch.testing.assert_close(encoder.embed(padded, padded_mask, ["x"]), first[:1], rtol=0, atol=0)
    assert len(list(encoder.cache_path.rglob("*.pt"))) == 4
    cropped_mask = padded_mask.clone()
    cropped_mask[0, 31] = False
    encoder.embed(padded, cropped_mask, ["x"])
    assert len(list(encoder.cache_path.rglob("*.pt"))) == 5
    with pytest.raises(ValueError, match="frame keys"):
        encoder.embed(first_pixels, mask, ["only-one"])


def test_the_image_cache_folder_names_the_model_weights_and_preprocessing(tiny_clip):
    base = FrozenClipImageEncoder(tiny_clip).cache_path
    seeded = FrozenClipImageEncoder(ClipConfig(**{**vars(tiny_clip), "random_init_seed": 5})).cache_path
    resized = FrozenClipImageEncoder(ClipConfig(**{**vars(tiny_clip), "image_resize": "squash"})).cache_path
    normalised = FrozenClipImageEncoder(tiny_clip, input_mean=(0.5, 0.5, 0.5)).cache_path
    assert len({base, seeded, resized, normalised}) == 4
    assert FrozenClipImageEncoder(tiny_clip).cache_path == base
