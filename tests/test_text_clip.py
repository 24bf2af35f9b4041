"""CLIP loading, the text-embedding cache, offline failure and the frozen image tower (tiny random CLIP)."""

import os
import time

import open_clip
import pytest
import torch
from torch import nn

from arn_lightning.text import clip as clip_mod
from arn_lightning.text.clip import (
    ClipConfig,
    ClipWeightsUnavailable,
    FrozenClipImageEncoder,
    create_clip,
    register_tiny_clip,
    resolve_weights,
    text_embeddings,
)
from arn_lightning.text.prompts import PromptConfig

CATEGORIES = {"attention": [[0, 11], [1, 8]], "spatial": [[5, 8]], "contacting": [[14, 11], [19, 8], [9, 2]]}
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@pytest.fixture
def tiny(tmp_path) -> ClipConfig:
    return ClipConfig(clip_model=register_tiny_clip(), clip_pretrained=None, cache_dir=str(tmp_path / "cache"))


def _cache_files(cfg: ClipConfig):
    return sorted((clip_mod.cache_root(cfg) / "text").glob("*.pt"))


def _forbid_model_loading(monkeypatch):
    def fail(config):
        raise AssertionError("the CLIP model was loaded although the cache should have answered")

    monkeypatch.setattr(clip_mod, "create_clip", fail)


def test_register_tiny_clip_is_idempotent_and_refuses_a_taken_name():
    assert register_tiny_clip() == register_tiny_clip() == "arn-tiny-clip"
    assert open_clip.get_model_config("arn-tiny-clip")["embed_dim"] == 16
    with pytest.raises(ValueError, match="another config"):
        register_tiny_clip("ViT-B-32")


def test_text_embeddings_are_normalised_and_match_direct_encoding(tiny):
    embeds = text_embeddings(tiny, PromptConfig(), CATEGORIES)
    assert {k: tuple(v.shape) for k, v in embeds.items()} == {
        "objects": (36, 16), "attention": (2, 16), "spatial": (1, 16), "contacting": (3, 16)}
    for value in embeds.values():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value.norm(dim=-1), torch.ones(value.shape[0]))
    model, tokenizer = create_clip(tiny), open_clip.get_tokenizer(tiny.clip_model)
    with torch.no_grad():
        direct = model.encode_text(tokenizer(["The chair is in front of the person",
                                              "a photo of person and a bag"]), normalize=True)
    torch.testing.assert_close(embeds["spatial"][0], direct[0])
    torch.testing.assert_close(embeds["objects"][1], direct[1])  # AG index 2 = bag


def test_cache_hit_needs_no_model_and_prompt_changes_invalidate(tiny, monkeypatch):
    first = text_embeddings(tiny, PromptConfig(), CATEGORIES)
    assert len(_cache_files(tiny)) == 1
    _forbid_model_loading(monkeypatch)
    again = text_embeddings(tiny, PromptConfig(), CATEGORIES)
    assert all(torch.equal(first[k], again[k]) for k in first)
    monkeypatch.undo()

    changed = text_embeddings(tiny, PromptConfig(spatial="The {object} is {predicate} someone"), CATEGORIES)
    assert len(_cache_files(tiny)) == 2
    assert torch.equal(changed["attention"], first["attention"])
    assert not torch.allclose(changed["spatial"], first["spatial"])

    more = dict(CATEGORIES, attention=[[0, 11], [1, 8], [2, 8]])
    assert text_embeddings(tiny, PromptConfig(), more)["attention"].shape == (3, 16)
    assert len(_cache_files(tiny)) == 3


def test_random_weights_are_seeded_and_the_seed_is_part_of_the_key(tiny, tmp_path):
    a = text_embeddings(tiny, None, CATEGORIES)
    b = text_embeddings(ClipConfig(tiny.clip_model, None, cache_dir=str(tmp_path / "other")), None, CATEGORIES)
    assert torch.equal(a["objects"], b["objects"])  # same seed, separate caches
    c = text_embeddings(ClipConfig(tiny.clip_model, None, cache_dir=tiny.cache_dir, random_init_seed=1),
                        None, CATEGORIES)
    assert not torch.allclose(a["objects"], c["objects"])


def test_corrupt_cache_file_is_rebuilt(tiny):
    first = text_embeddings(tiny, None, CATEGORIES)
    [path] = _cache_files(tiny)
    path.write_bytes(b"not a torch file")
    rebuilt = text_embeddings(tiny, None, CATEGORIES)
    assert torch.equal(first["contacting"], rebuilt["contacting"])
    assert torch.load(path, weights_only=True)["prompts"]["spatial"] == ["The chair is in front of the person"]


def test_per_predicate_embeddings_without_triplets(tiny):
    embeds = text_embeddings(tiny, None, None, clip_triplets=False)
    assert [embeds[k].shape[0] for k in ("attention", "spatial", "contacting")] == [3, 6, 17]
    with pytest.raises(ValueError, match="triplet_categories"):
        text_embeddings(tiny, None, None)


def test_local_checkpoint_file_is_loaded_and_its_mtime_keys_the_cache(tiny, tmp_path):
    seeded = ClipConfig(tiny.clip_model, None, random_init_seed=7, cache_dir=tiny.cache_dir)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(create_clip(seeded).state_dict(), checkpoint)
    from_file = ClipConfig(tiny.clip_model, str(checkpoint), cache_dir=tiny.cache_dir)
    expected = text_embeddings(seeded, None, CATEGORIES)["objects"]
    torch.testing.assert_close(text_embeddings(from_file, None, CATEGORIES)["objects"], expected)
    files = len(_cache_files(tiny))
    os.utime(checkpoint, ns=(1, 1))  # a replaced checkpoint must not reuse the old entry
    text_embeddings(from_file, None, CATEGORIES)
    assert len(_cache_files(tiny)) == files + 1


def test_openai_offline_without_cache_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(open_clip, "download_pretrained", lambda *a, **k: pytest.fail("tried to download"))
    cfg = ClipConfig(weights_dir=str(tmp_path / "weights"), cache_dir=str(tmp_path / "cache"))
    start = time.monotonic()
    with pytest.raises(ClipWeightsUnavailable, match="HF_HUB_OFFLINE is set.*local\\s+checkpoint file"):
        text_embeddings(cfg, None, CATEGORIES)
    assert time.monotonic() - start < 5.0


def test_unreachable_hub_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(clip_mod, "host_reachable", lambda url, timeout_s: False)
    monkeypatch.setattr(open_clip, "download_pretrained", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(ClipWeightsUnavailable, match="huggingface.co is unreachable within 3.0 s"):
        resolve_weights(ClipConfig(weights_dir=str(tmp_path)))


def test_tag_weights_are_found_in_the_local_hub_cache(tmp_path):
    repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    weights = repo / "snapshots" / "abc123" / "open_clip_pytorch_model.bin"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    resolved = resolve_weights(ClipConfig(weights_dir=str(tmp_path)))
    assert resolved.path == str(weights)
    assert resolved.quick_gelu is True  # the OpenAI tag was trained with QuickGELU


def test_bad_model_or_tag_is_rejected(tiny):
    with pytest.raises(ValueError, match="open_clip architecture"):
        resolve_weights(ClipConfig(clip_model="no-such-model"))
    with pytest.raises(ValueError, match="pretrained tag of ViT-B-32"):
        resolve_weights(ClipConfig(clip_pretrained="not-a-tag-nor-a-file"))
    with pytest.raises(ValueError, match="image_resize"):
        ClipConfig(image_resize="stretch")


# ----------------------------------------------------------------------------------------------- image tower
def _normalised(images01: torch.Tensor) -> torch.Tensor:
    return (images01 - IMAGENET_MEAN) / IMAGENET_STD


def _clip_normalised(encoder: FrozenClipImageEncoder, images01: torch.Tensor) -> torch.Tensor:
    return (images01 - encoder.clip_mean) / encoder.clip_std


def test_image_tower_is_invisible_to_state_dict_parameters_and_train(tiny):
    parent = nn.Module()
    parent.head = nn.Linear(2, 2)
    parent.clip = FrozenClipImageEncoder(tiny)
    assert set(parent.state_dict()) == {"head.weight", "head.bias"}
    assert [p.shape for p in parent.parameters()] == [torch.Size([2, 2]), torch.Size([2])]
    fresh = nn.Module()
    fresh.head = nn.Linear(2, 2)
    fresh.clip = FrozenClipImageEncoder(tiny)
    fresh.load_state_dict(parent.state_dict(), strict=True)
    parent.train()
    assert parent.clip.training and not parent.clip.tower.training
    assert all(not p.requires_grad for p in parent.clip.tower.parameters())
    parent.to(torch.float64)
    assert next(parent.clip.tower.parameters()).dtype == torch.float64


def test_preprocess_crops_the_valid_region(tiny):
    encoder = FrozenClipImageEncoder(tiny)  # 32x32 input
    image = torch.rand(3, 32, 64)
    padded = torch.zeros(1, 3, 40, 80)
    padded[0, :, :32, :64] = _normalised(image)
    mask = torch.zeros(1, 40, 80, dtype=torch.bool)
    mask[0, :32, :64] = True
    out = encoder.preprocess(padded, mask)  # shorter side already 32: centre crop of columns 16..48
    torch.testing.assert_close(out[0], _clip_normalised(encoder, image[:, :, 16:48]), atol=1e-5, rtol=0)


def test_squash_keeps_the_whole_frame(tiny):
    encoder = FrozenClipImageEncoder(ClipConfig(**{**vars(tiny), "image_resize": "squash"}))
    image = torch.zeros(3, 16, 64)
    image[:, :, :32] = 1.0  # left half white: squashed, the left 16 columns stay white
    out = encoder.preprocess(_normalised(image)[None], torch.ones(1, 16, 64, dtype=torch.bool))
    expected = _clip_normalised(encoder, torch.ones(3, 32, 32))
    torch.testing.assert_close(out[0, :, :, :14], expected[:, :, :14], atol=1e-5, rtol=0)
    assert out.shape == (1, 3, 32, 32)


def test_forward_gives_unit_embeddings_independent_of_padding(tiny):
    encoder = FrozenClipImageEncoder(tiny)
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


def test_embed_uses_the_per_frame_cache(tiny):
    encoder = FrozenClipImageEncoder(ClipConfig(**{**vars(tiny), "image_cache": True}))
    first_pixels = torch.randn(2, 3, 32, 32)
    mask = torch.ones(2, 32, 32, dtype=torch.bool)
    first = encoder.embed(first_pixels, mask, ["a.mp4/000001.png", "a.mp4/000002.png"])
    assert len(list(encoder.cache_path.rglob("*.pt"))) == 2
    second = encoder.embed(torch.randn(2, 3, 32, 32), mask, ["a.mp4/000002.png", "b.mp4/000001.png"])
    torch.testing.assert_close(second[0], first[1])  # cached: the new pixels are ignored
    assert not torch.allclose(second[1], first[1])
    assert len(list(encoder.cache_path.rglob("*.pt"))) == 3
    with pytest.raises(ValueError, match="frame keys"):
        encoder.embed(first_pixels, mask, ["only-one"])
