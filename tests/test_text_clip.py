"""CLIP loading, the text-embedding cache, prompt checks, offline failure and the frozen image tower (tiny CLIP)."""

import os
import time
from pathlib import Path

import huggingface_hub.constants
import open_clip
import pytest
import torch
from torch import nn

from arn_lightning.text import clip as clip_mod
from arn_lightning.download import WeightsUnavailable
from arn_lightning.text.clip import (
    ClipConfig,
    ClipWeightsUnavailable,
    FrozenClipImageEncoder,
    atomic_save,
    create_clip,
    encode_prompts,
    host_reachable,
    prompt_token_ids,
    register_tiny_clip,
    resolve_weights,
    text_cache_path,
    text_context_length,
    text_embeddings,
)
from arn_lightning.text.prompts import PromptConfig, build_prompts, object_prompts
from arn_lightning.vocab import OBJECT_CLASSES, PREDICATE_TYPES, TYPE_OFFSETS, TYPE_SIZES
from net_fixtures import PROXY_VARS, FakeHub, FileServer, SilentServer, closed_port_url

CATEGORIES = {"attention": [[0, 11], [1, 8]], "spatial": [[5, 8]], "contacting": [[14, 11], [19, 8], [9, 2]]}
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
#: The example of the prompt-length rule: the {object} slot after token 77 ("person": 1 + 3 + 80 + 1 + 1 = 86 tokens).
SLOT_AFTER_CONTEXT = "a photo of" + " very" * 80 + " {object}"
NO_HANG_S = 30.0


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


@pytest.fixture
def network(monkeypatch):
    """Downloads allowed (conftest sets HF_HUB_OFFLINE=1), no proxy variables, no ARN_OFFLINE."""
    for name in PROXY_VARS + ("ARN_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    # conftest's HF_HUB_OFFLINE=1 was frozen into huggingface_hub at its import; an online process has False
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def silent():
    with SilentServer() as server:
        yield server


@pytest.mark.parametrize("switch", ["HF_HUB_OFFLINE", "ARN_OFFLINE"])
def test_openai_offline_without_cache_fails_at_once(tmp_path, monkeypatch, network, silent, switch):
    monkeypatch.setenv("HF_ENDPOINT", silent.url)  # a connection would be seen (and hang without the timeouts)
    monkeypatch.setenv(switch, "1")
    cfg = ClipConfig(weights_dir=str(tmp_path / "weights"), cache_dir=str(tmp_path / "cache"))
    start = time.monotonic()
    with pytest.raises(ClipWeightsUnavailable, match=f"{switch} is set.*local\\s+checkpoint file"):
        text_embeddings(cfg, None, CATEGORIES)
    assert time.monotonic() - start < 5.0
    assert silent.settle() == 0
    assert not (tmp_path / "cache").exists()  # nothing cached for a failure


def test_unreachable_hub_fails_at_once(tmp_path, monkeypatch, network):
    endpoint = closed_port_url()  # connections refused at once
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(ClipWeightsUnavailable, match=f"{endpoint} is unreachable within 3.0 s"):
        resolve_weights(ClipConfig(weights_dir=str(tmp_path)))


def test_huggingface_hub_imported_offline_is_reported_without_connection(tmp_path, monkeypatch, network, silent):
    monkeypatch.setenv("HF_ENDPOINT", silent.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as read at its import
    with pytest.raises(ClipWeightsUnavailable, match="huggingface_hub is in offline mode"):
        resolve_weights(ClipConfig(weights_dir=str(tmp_path), network_timeout_s=1.0))
    assert silent.settle() == 0


def test_a_hub_that_accepts_and_never_answers_fails_in_seconds(tmp_path, monkeypatch, network, silent):
    monkeypatch.setenv("HF_ENDPOINT", silent.url)
    start = time.monotonic()
    with pytest.raises(ClipWeightsUnavailable, match=f"{silent.url}/timm/vit_base_patch32_clip_224.openai/resolve/"
                                                     f"main/open_clip_model.safetensors gave no answer within 1 s"):
        resolve_weights(ClipConfig(weights_dir=str(tmp_path), network_timeout_s=1.0))
    assert time.monotonic() - start < NO_HANG_S
    assert silent.connections >= 1
    assert isinstance(ClipWeightsUnavailable("x"), WeightsUnavailable)


def test_hub_weights_are_downloaded_then_found_in_the_cache_offline(tmp_path, monkeypatch, network):
    with FakeHub({"open_clip_pytorch_model.bin": b"fake clip weights"}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        cfg = ClipConfig(weights_dir=str(tmp_path), network_timeout_s=2.0)
        resolved = resolve_weights(cfg)
        # the safetensors variant is asked for first (404 here), then the .bin, as open_clip does
        assert [p.rsplit("/", 1)[-1] for _, p in hub.requests[:2]] == [
            "open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    assert Path(resolved.path).read_bytes() == b"fake clip weights"
    assert Path(resolved.path).parent.name == FakeHub.COMMIT
    monkeypatch.setenv("ARN_OFFLINE", "1")  # the hub is gone: the cache answers
    assert resolve_weights(cfg).path == resolved.path


def test_reachability_probe_goes_through_the_configured_proxy(monkeypatch, network, silent):
    monkeypatch.setenv("HTTPS_PROXY", silent.url)
    assert host_reachable("https://huggingface.co", 2.0)  # the proxy accepts; the host itself is never contacted
    assert silent.settle() >= 1
    monkeypatch.setenv("NO_PROXY", "huggingface.co")
    monkeypatch.setenv("HTTPS_PROXY", closed_port_url())
    assert not host_reachable("https://example.invalid", 2.0)  # via the refusing proxy


def test_url_weights_are_downloaded_with_a_timeout(tmp_path, network, silent):
    served = tmp_path / "served"
    served.mkdir()
    (served / "tiny.pt").write_bytes(b"tiny weights")
    cfg = ClipConfig(weights_dir=str(tmp_path / "weights"), network_timeout_s=1.0)
    with FileServer(served) as server:
        path = clip_mod._download(cfg, {"url": f"{server.url}/tiny.pt"})
    assert Path(path) == tmp_path / "weights" / "tiny.pt" and Path(path).read_bytes() == b"tiny weights"
    start = time.monotonic()
    with pytest.raises(ClipWeightsUnavailable, match="gave no answer within 1 s.*under the file name other.pt"):
        clip_mod._download(cfg, {"url": f"{silent.url}/other.pt"})
    assert time.monotonic() - start < NO_HANG_S


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


# ----------------------------------------------------------------------------------------------- prompt checks
def test_object_slot_after_the_context_makes_all_classes_identical_and_is_rejected(tiny, monkeypatch):
    config = PromptConfig(objects=SLOT_AFTER_CONTEXT)
    prompts = object_prompts(config)
    # what happened before the check: the tokenizer cuts every prompt before its object, 36 equal embeddings
    tokenizer = open_clip.get_tokenizer(tiny.clip_model)
    tokens = tokenizer(prompts)  # [36, 77]
    assert all(torch.equal(row, tokens[0]) for row in tokens)
    with torch.no_grad():
        embeds = create_clip(tiny).encode_text(tokens, normalize=True)  # [36, 16]
    torch.testing.assert_close(embeds @ embeds.T, torch.ones(36, 36))  # cosine 1.0 for every pair
    # now: an error naming the template, the prompt, its token count and the limit, before any model or cache
    _forbid_model_loading(monkeypatch)
    with pytest.raises(ValueError, match=r"prompts.objects = 'a photo of very.*' to fit the text tower's context "
                                         r"of 77 tokens \(start and end tokens included\) but got 86 tokens for "
                                         r"person: 'a photo of very.* person'"):
        text_embeddings(tiny, config, CATEGORIES)
    assert _cache_files(tiny) == []


def test_an_early_slot_with_a_tail_past_the_context_is_rejected(tiny, monkeypatch):
    _forbid_model_loading(monkeypatch)
    # "The chair is in front of the person" (8 tokens) + 30 x 3 tokens + start and end: 100 tokens
    config = PromptConfig(spatial="The {object} is {predicate} the person" + " in the room" * 30)
    with pytest.raises(ValueError, match=r"prompts.spatial = .* but got 100 tokens for \(in_front_of, chair\)"):
        text_embeddings(tiny, config, CATEGORIES)


def test_classes_with_identical_tokens_are_rejected(tiny, monkeypatch):
    _forbid_model_loading(monkeypatch)
    config = PromptConfig(objects="a photo of a {object:.3}")  # closet/cabinet and clothes -> "clo"
    with pytest.raises(ValueError, match=r"distinct prompts for the objects classes of prompts.objects = "
                                         r"'a photo of a \{object:.3\}' but got identical tokens for closet/cabinet"):
        text_embeddings(tiny, config, CATEGORIES)
    config = PromptConfig(contacting="a person touching something{object:.0} by {predicate}")
    with pytest.raises(ValueError, match=r"contacting classes .* \(holding, cup/glass/bottle\) .* and "
                                         r"\(holding, chair\)"):
        text_embeddings(tiny, config, {**CATEGORIES, "contacting": [[14, 11], [14, 8]]})


def test_a_cached_embedding_of_a_bad_prompt_is_never_reused(tiny):
    config = PromptConfig(objects=SLOT_AFTER_CONTEXT)
    prompts = build_prompts(config, CATEGORIES)
    planted = text_cache_path(tiny, config, prompts)  # e.g. left by a version without the check
    fake = {kind: torch.nn.functional.normalize(torch.ones(len(prompts[kind]), 16), dim=-1) for kind in prompts}
    atomic_save({"format": clip_mod.CACHE_FORMAT_VERSION, "prompts": prompts, "embeddings": fake}, planted)
    before = planted.read_bytes()
    with pytest.raises(ValueError, match="but got 86 tokens"):
        text_embeddings(tiny, config, CATEGORIES)
    assert planted.read_bytes() == before and _cache_files(tiny) == [planted]


def test_default_prompts_pass_for_all_objects_and_triplets(tiny):
    every = {kind: [[p, o] for p in range(TYPE_OFFSETS[kind], TYPE_OFFSETS[kind] + TYPE_SIZES[kind])
                    for o in range(1, len(OBJECT_CLASSES) + 1)] for kind in PREDICATE_TYPES}
    embeds = text_embeddings(tiny, None, every)
    assert [embeds[k].shape[0] for k in ("objects", *PREDICATE_TYPES)] == [36, 3 * 36, 6 * 36, 17 * 36]


def test_the_limit_is_the_models_context_length(tmp_path, monkeypatch):
    name = register_tiny_clip("arn-tiny-clip-context-12", context_length=12)
    cfg = ClipConfig(clip_model=name, clip_pretrained=None, cache_dir=str(tmp_path / "cache"))
    assert text_context_length(cfg, open_clip.get_tokenizer(name)) == 12
    _forbid_model_loading(monkeypatch)
    # "a photo of person and a cup or glass or bottle": 1 + 6 + 5 + 1 tokens
    with pytest.raises(ValueError, match=r"context of 12 tokens .* but got 13 tokens for cup/glass/bottle"):
        text_embeddings(cfg, None, CATEGORIES)
    with pytest.raises(ValueError, match="another config"):
        register_tiny_clip("arn-tiny-clip-context-12", context_length=16)


def test_encode_prompts_refuses_a_prompt_it_would_cut(tiny):
    model, tokenizer = create_clip(tiny), open_clip.get_tokenizer(tiny.clip_model)
    assert encode_prompts(model, tokenizer, ["a photo of a cup"], 4).shape == (1, 16)
    with pytest.raises(ValueError, match=r"Expected at most 77 tokens .* but got 86 tokens for prompt 1"):
        encode_prompts(model, tokenizer, ["a cup", SLOT_AFTER_CONTEXT.format(object="person")], 4)


def test_prompt_token_ids_include_start_end_and_read_wrapped_hf_tokenizers():
    simple = open_clip.SimpleTokenizer()
    ids = prompt_token_ids(simple, "a photo of a cup")
    assert ids[0] == simple.sot_token_id and ids[-1] == simple.eot_token_id and len(ids) == 7
    assert torch.equal(simple(["a photo of a cup"])[0, :7], torch.tensor(ids))  # what the tower would read

    class FakeHF:  # the call signature of a Hugging Face tokenizer, adding [101] ... [102]
        bos_token_id, eos_token_id, cls_token_id = 1, 2, 3

        def __call__(self, text, add_special_tokens=True, truncation=True):
            words = [len(w) + 10 for w in text.split()]
            return {"input_ids": [101, *words, 102] if add_special_tokens else words}

    class Wrapped:
        tokenizer, context_length, tokenizer_mode = FakeHF(), 64, ""

        @staticmethod
        def clean_fn(text):
            return " ".join(text.split())

    assert prompt_token_ids(Wrapped(), "a  cup") == [101, 11, 13, 102]
    Wrapped.tokenizer_mode = "clips"
    assert prompt_token_ids(Wrapped(), "a cup") == [1, 11, 13, 2, 3]
    with pytest.raises(TypeError, match="Expected an open_clip SimpleTokenizer .* but got str"):
        prompt_token_ids("not a tokenizer", "a cup")


def test_atomic_save_leaves_the_old_file_when_a_write_fails(tmp_path):
    path = tmp_path / "sub" / "value.pt"
    atomic_save({"a": torch.ones(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    with pytest.raises(Exception):
        atomic_save({"f": lambda: None}, path)  # a lambda cannot be pickled: torch.save fails half way
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert sorted(p.name for p in path.parent.iterdir()) == ["value.pt"]  # no temporary file left
