"""The text-embedding cache and the prompt checks on the tiny CLIP (arn_lightning.text.embeddings), and the
atomic writes of the cache files (arn_lightning.text.cache)."""

import os
import pickle

import open_clip
import pytest
import torch

from arn_lightning.text import cache as cache_mod
from arn_lightning.text import embeddings as embeddings_mod
from arn_lightning.text.cache import atomic_save
from arn_lightning.text.clip import create_clip, register_tiny_clip
from arn_lightning.text.config import ClipConfig
from arn_lightning.text.embeddings import (
    encode_prompts,
    prompt_token_ids,
    text_cache_path,
    text_context_length,
    text_embeddings,
)
from arn_lightning.text.prompts import PromptConfig, build_prompts, object_prompts
from arn_lightning.vocab import OBJECT_CLASSES, PREDICATE_TYPES, TYPE_OFFSETS, TYPE_SIZES
from clip_fixtures import CATEGORIES

#: The example of the prompt-length rule: the {object} slot after token 77 ("person": 1 + 3 + 80 + 1 + 1 = 86 tokens).
SLOT_AFTER_CONTEXT = "a photo of" + " very" * 80 + " {object}"


def _cache_files(cfg: ClipConfig):
    return sorted((cache_mod.cache_root(cfg) / "text").glob("*.pt"))


def _forbid_model_loading(monkeypatch):
    def fail(config):
        raise AssertionError("the CLIP model was loaded although the cache should have answered")

    monkeypatch.setattr(embeddings_mod, "create_clip", fail)


def test_text_embeddings_are_normalised_and_match_direct_encoding(tiny_clip):
    embeds = text_embeddings(tiny_clip, PromptConfig(), CATEGORIES)
    assert {k: tuple(v.shape) for k, v in embeds.items()} == {
        "objects": (36, 16),
        "attention": (2, 16),
        "spatial": (1, 16),
        "contacting": (3, 16),
    }
    for value in embeds.values():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value.norm(dim=-1), torch.ones(value.shape[0]))
    model, tokenizer = create_clip(tiny_clip), open_clip.get_tokenizer(tiny_clip.clip_model)
    with torch.no_grad():
        direct = model.encode_text(
            tokenizer(["The chair is in front of the person", "a photo of person and a bag"]), normalize=True
        )
    torch.testing.assert_close(embeds["spatial"][0], direct[0])
    torch.testing.assert_close(embeds["objects"][1], direct[1])  # AG index 2 = bag


def test_cache_hit_needs_no_model_and_prompt_changes_invalidate(tiny_clip, monkeypatch):
    first = text_embeddings(tiny_clip, PromptConfig(), CATEGORIES)
    assert len(_cache_files(tiny_clip)) == 1
    _forbid_model_loading(monkeypatch)
    again = text_embeddings(tiny_clip, PromptConfig(), CATEGORIES)
    assert all(torch.equal(first[k], again[k]) for k in first)
    monkeypatch.undo()

    changed = text_embeddings(tiny_clip, PromptConfig(spatial="The {object} is {predicate} someone"), CATEGORIES)
    assert len(_cache_files(tiny_clip)) == 2
    assert torch.equal(changed["attention"], first["attention"])
    assert not torch.allclose(changed["spatial"], first["spatial"])

    more = dict(CATEGORIES, attention=[[0, 11], [1, 8], [2, 8]])
    assert text_embeddings(tiny_clip, PromptConfig(), more)["attention"].shape == (3, 16)
    assert len(_cache_files(tiny_clip)) == 3


def test_random_weights_are_seeded_and_the_seed_is_part_of_the_key(tiny_clip, tmp_path):
    a = text_embeddings(tiny_clip, None, CATEGORIES)
    b = text_embeddings(ClipConfig(tiny_clip.clip_model, None, cache_dir=str(tmp_path / "other")), None, CATEGORIES)
    assert torch.equal(a["objects"], b["objects"])  # same seed, separate caches
    c = text_embeddings(
        ClipConfig(tiny_clip.clip_model, None, cache_dir=tiny_clip.cache_dir, random_init_seed=1), None, CATEGORIES
    )
    assert not torch.allclose(a["objects"], c["objects"])


def test_corrupt_cache_file_is_rebuilt(tiny_clip):
    first = text_embeddings(tiny_clip, None, CATEGORIES)
    [path] = _cache_files(tiny_clip)
    path.write_bytes(b"not a torch file")
    rebuilt = text_embeddings(tiny_clip, None, CATEGORIES)
    assert torch.equal(first["contacting"], rebuilt["contacting"])
    assert torch.load(path, weights_only=True)["prompts"]["spatial"] == ["The chair is in front of the person"]


def test_per_predicate_embeddings_without_triplets(tiny_clip):
    embeds = text_embeddings(tiny_clip, None, None, clip_triplets=False)
    assert [embeds[k].shape[0] for k in ("attention", "spatial", "contacting")] == [3, 6, 17]
    with pytest.raises(ValueError, match="triplet_categories"):
        text_embeddings(tiny_clip, None, None)


def test_local_checkpoint_file_is_loaded_and_its_mtime_keys_the_cache(tiny_clip, tmp_path):
    seeded = ClipConfig(tiny_clip.clip_model, None, random_init_seed=7, cache_dir=tiny_clip.cache_dir)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(create_clip(seeded).state_dict(), checkpoint)
    from_file = ClipConfig(tiny_clip.clip_model, str(checkpoint), cache_dir=tiny_clip.cache_dir)
    expected = text_embeddings(seeded, None, CATEGORIES)["objects"]
    torch.testing.assert_close(text_embeddings(from_file, None, CATEGORIES)["objects"], expected)
    files = len(_cache_files(tiny_clip))
    os.utime(checkpoint, ns=(1, 1))  # a replaced checkpoint must not reuse the old entry
    text_embeddings(from_file, None, CATEGORIES)
    assert len(_cache_files(tiny_clip)) == files + 1


# ----------------------------------------------------------------------------------------------- prompt checks
def test_object_slot_after_the_context_makes_all_classes_identical_and_is_rejected(tiny_clip, monkeypatch):
    config = PromptConfig(objects=SLOT_AFTER_CONTEXT)
    prompts = object_prompts(config)
    # what happened before the check: the tokenizer cuts every prompt before its object, 36 equal embeddings
    tokenizer = open_clip.get_tokenizer(tiny_clip.clip_model)
    tokens = tokenizer(prompts)  # [36, 77]
    assert all(torch.equal(row, tokens[0]) for row in tokens)
    with torch.no_grad():
        embeds = create_clip(tiny_clip).encode_text(tokens, normalize=True)  # [36, 16]
    torch.testing.assert_close(embeds @ embeds.T, torch.ones(36, 36))  # cosine 1.0 for every pair
    # now: an error naming the template, the prompt, its token count and the limit, before any model or cache
    _forbid_model_loading(monkeypatch)
    with pytest.raises(
        ValueError,
        match=r"prompts.objects = 'a photo of very.*' to fit the text tower's context "
        r"of 77 tokens \(start and end tokens included\) but got 86 tokens for "
        r"person: 'a photo of very.* person'",
    ):
        text_embeddings(tiny_clip, config, CATEGORIES)
    assert _cache_files(tiny_clip) == []


def test_an_early_slot_with_a_tail_past_the_context_is_rejected(tiny_clip, monkeypatch):
    _forbid_model_loading(monkeypatch)
    # "The chair is in front of the person" (8 tokens) + 30 x 3 tokens + start and end: 100 tokens
    config = PromptConfig(spatial="The {object} is {predicate} the person" + " in the room" * 30)
    with pytest.raises(ValueError, match=r"prompts.spatial = .* but got 100 tokens for \(in_front_of, chair\)"):
        text_embeddings(tiny_clip, config, CATEGORIES)


def test_classes_with_identical_tokens_are_rejected(tiny_clip, monkeypatch):
    _forbid_model_loading(monkeypatch)
    config = PromptConfig(objects="a photo of a {object:.3}")  # closet/cabinet and clothes -> "clo"
    with pytest.raises(
        ValueError,
        match=r"distinct prompts for the objects classes of prompts.objects = "
        r"'a photo of a \{object:.3\}' but got identical tokens for closet/cabinet",
    ):
        text_embeddings(tiny_clip, config, CATEGORIES)
    config = PromptConfig(contacting="a person touching something{object:.0} by {predicate}")
    with pytest.raises(
        ValueError,
        match=r"contacting classes .* \(holding, cup/glass/bottle\) .* and "
        r"\(holding, chair\)",
    ):
        text_embeddings(tiny_clip, config, {**CATEGORIES, "contacting": [[14, 11], [14, 8]]})


def test_a_cached_embedding_of_a_bad_prompt_is_never_reused(tiny_clip):
    config = PromptConfig(objects=SLOT_AFTER_CONTEXT)
    prompts = build_prompts(config, CATEGORIES)
    planted = text_cache_path(tiny_clip, config, prompts)  # e.g. left by a version without the check
    fake = {kind: torch.nn.functional.normalize(torch.ones(len(prompts[kind]), 16), dim=-1) for kind in prompts}
    atomic_save({"format": cache_mod.CACHE_FORMAT_VERSION, "prompts": prompts, "embeddings": fake}, planted)
    before = planted.read_bytes()
    with pytest.raises(ValueError, match="but got 86 tokens"):
        text_embeddings(tiny_clip, config, CATEGORIES)
    assert planted.read_bytes() == before and _cache_files(tiny_clip) == [planted]


def test_default_prompts_pass_for_all_objects_and_triplets(tiny_clip):
    every = {
        kind: [
            [p, o]
            for p in range(TYPE_OFFSETS[kind], TYPE_OFFSETS[kind] + TYPE_SIZES[kind])
            for o in range(1, len(OBJECT_CLASSES) + 1)
        ]
        for kind in PREDICATE_TYPES
    }
    embeds = text_embeddings(tiny_clip, None, every)
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


def test_encode_prompts_refuses_a_prompt_it_would_cut(tiny_clip):
    model, tokenizer = create_clip(tiny_clip), open_clip.get_tokenizer(tiny_clip.clip_model)
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
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        atomic_save({"f": lambda: None}, path)  # a lambda cannot be pickled: torch.save fails half way
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert sorted(p.name for p in path.parent.iterdir()) == ["value.pt"]  # no temporary file left


def test_the_text_cache_key_changes_with_each_input_once(tiny_clip, tmp_path):
    """Every input that determines the embeddings names its own cache file; the same inputs name the same file."""
    prompts = {"objects": ["a person"], "attention": ["looking at a cup"]}
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"w" * 10)
    base = ClipConfig(tiny_clip.clip_model, str(checkpoint), cache_dir=tiny_clip.cache_dir)

    def path(clip=base, templates=PromptConfig(), rendered=prompts):
        return text_cache_path(clip, templates, rendered)

    changed = [
        path(clip=ClipConfig(**{**vars(base), "quick_gelu": True})),
        path(clip=ClipConfig(tiny_clip.clip_model, None, cache_dir=tiny_clip.cache_dir)),  # random weights
        path(templates=PromptConfig(spatial="The {object} is {predicate} someone")),
        path(rendered={**prompts, "objects": ["a chair"]}),
    ]
    same = path()
    checkpoint.write_bytes(b"w" * 11)  # other weights in the same file
    changed.append(path())
    assert len({same, *changed}) == 1 + len(changed)
    assert path() == changed[-1] and path().parent == tmp_path / "cache" / "text"
