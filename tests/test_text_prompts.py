"""Prompt rendering: the paper's exact wording, per-predicate prompts, validation, token-length and duplicate checks."""

import open_clip
import pytest

from arn_lightning.text.embeddings import prompt_token_ids
from arn_lightning.text.prompts import (
    PromptConfig,
    build_prompts,
    check_prompts,
    object_prompts,
    predicate_prompts,
    prompt_classes,
    triplet_prompts,
)
from arn_lightning.vocab import OBJECT_CLASSES, PREDICATE_TYPES, TYPE_OFFSETS, TYPE_SIZES


def test_object_prompts_follow_the_paper_in_ag_order():
    prompts = object_prompts(PromptConfig())
    assert len(prompts) == 36
    assert prompts[0] == "a photo of person and a person"
    assert prompts[10] == "a photo of person and a cup or glass or bottle"  # AG index 11
    assert prompts[35] == "a photo of person and a window"


def test_triplet_prompts_use_the_branch_templates():
    cfg = PromptConfig()
    assert triplet_prompts(cfg, "attention", [[0, 11], [1, 8]]) == [
        "The person is looking at the cup or glass or bottle",
        "The person is not looking at the chair",
    ]
    assert triplet_prompts(cfg, "spatial", [[5, 8]]) == ["The chair is in front of the person"]
    assert triplet_prompts(cfg, "contacting", [[19, 31], [14, 5]]) == [
        "a photo of a person maybe sitting on the sofa or couch",
        "a photo of a person maybe holding the book",
    ]


def test_predicate_prompts_fill_the_object_slot_with_the_generic_noun():
    cfg = PromptConfig(generic_object="thing")
    attention = predicate_prompts(cfg, "attention")
    assert attention == [
        "The person is looking at the thing",
        "The person is not looking at the thing",
        "The person is unsure whether looking at the thing",
    ]
    assert len(predicate_prompts(cfg, "spatial")) == 6
    assert predicate_prompts(cfg, "contacting")[5] == "a photo of a person maybe holding the thing"


def test_build_prompts_switches_between_triplets_and_predicates():
    cats = {"attention": [[0, 11]], "spatial": [], "contacting": [[9, 2], [14, 2]]}
    on = build_prompts(PromptConfig(), cats)
    assert [len(on[k]) for k in ("objects", "attention", "spatial", "contacting")] == [36, 1, 0, 2]
    off = build_prompts(PromptConfig(), {}, clip_triplets=False)
    assert [len(off[k]) for k in ("objects", "attention", "spatial", "contacting")] == [36, 3, 6, 17]


@pytest.mark.parametrize(
    "kind, categories, message",
    [
        ("attention", [[3, 11]], "attention predicates in \\[0, 3\\)"),  # 3 is spatial
        ("contacting", [[14, 0]], "AG object index"),  # 0 is background
        ("spatial", [[5]], "\\[predicate, object\\] pair"),
        ("posture", [[0, 1]], "predicate type"),
    ],
)
def test_triplet_prompts_reject_bad_categories(kind, categories, message):
    with pytest.raises(ValueError, match=message):
        triplet_prompts(PromptConfig(), kind, categories)


def test_templates_are_validated():
    with pytest.raises(ValueError, match="slots \\['object', 'predicate'\\]"):
        PromptConfig(attention="The person is {predicate}")
    with pytest.raises(ValueError, match="objects template"):
        PromptConfig(objects="a photo of a {thing}")
    with pytest.raises(ValueError, match="valid format string"):
        PromptConfig(spatial="The {object is {predicate}")


def test_missing_branch_categories_are_reported():
    with pytest.raises(ValueError, match="'contacting' is missing"):
        build_prompts(PromptConfig(), {"attention": [], "spatial": []})


# ----------------------------------------------------------------------------------------- token-length check
ALL_TRIPLETS = {
    kind: [
        [p, o]
        for p in range(TYPE_OFFSETS[kind], TYPE_OFFSETS[kind] + TYPE_SIZES[kind])
        for o in range(1, len(OBJECT_CLASSES) + 1)
    ]
    for kind in PREDICATE_TYPES
}


@pytest.fixture(scope="module")
def clip_tokens():
    """The CLIP tokenizer's full token ids of one prompt (start and end tokens included)."""
    tokenizer = open_clip.SimpleTokenizer()
    return lambda text: prompt_token_ids(tokenizer, text)


def _check(config, categories, token_ids, context_length=77, clip_triplets=True):
    prompts = build_prompts(config, categories, clip_triplets)
    check_prompts(config, prompts, prompt_classes(categories, clip_triplets), token_ids, context_length, clip_triplets)
    return prompts


def test_default_templates_fit_clip_for_every_object_and_triplet(clip_tokens):
    assert sum(len(v) for v in ALL_TRIPLETS.values()) == 26 * 36
    prompts = _check(PromptConfig(), ALL_TRIPLETS, clip_tokens)
    assert max(len(clip_tokens(p)) for kind in prompts for p in prompts[kind]) <= 77
    per_predicate = _check(PromptConfig(), {}, clip_tokens, clip_triplets=False)
    assert [len(per_predicate[k]) for k in PREDICATE_TYPES] == [3, 6, 17]


def test_object_slot_after_the_context_is_rejected(clip_tokens):
    config = PromptConfig(objects="a photo of" + " very" * 80 + " {object}")
    assert len(clip_tokens(object_prompts(config)[0])) == 86  # "person": 1 + 3 + 80 + 1 + 1
    message = (
        r"Expected every prompt of prompts.objects = 'a photo of very .* \{object\}' to fit the text tower's "
        r"context of 77 tokens \(start and end tokens included\) but got 86 tokens for person: "
        r"'a photo of very .* very person'"
    )
    with pytest.raises(ValueError, match=message):
        _check(config, {kind: [] for kind in PREDICATE_TYPES}, clip_tokens)


def test_a_long_tail_after_an_early_slot_is_rejected(clip_tokens):
    config = PromptConfig(contacting="a person {predicate} the {object}" + " in a room" * 25)  # 1 + 5 + 75 + 1
    with pytest.raises(ValueError, match=r"prompts.contacting = .* but got 82 tokens for \(holding, book\)"):
        _check(config, {"attention": [], "spatial": [], "contacting": [[14, 5]]}, clip_tokens)
    # the limit is a parameter (the model's context), not a constant 77
    _check(config, {"attention": [], "spatial": [], "contacting": [[14, 5]]}, clip_tokens, context_length=82)


def test_classes_rendering_to_the_same_tokens_are_rejected(clip_tokens):
    # A format spec that keeps 3 letters of the name renders "closet/cabinet" and "clothes" alike ("clo").
    config = PromptConfig(objects="a photo of a {object:.3}")
    with pytest.raises(
        ValueError,
        match=r"Expected distinct prompts for the objects classes of prompts.objects = "
        r"'a photo of a \{object:.3\}' but got identical tokens for closet/cabinet "
        r"\('a photo of a clo'\) and clothes \('a photo of a clo'\)",
    ):
        _check(config, {kind: [] for kind in PREDICATE_TYPES}, clip_tokens)


def test_a_template_whose_slot_renders_nothing_gives_identical_classes(clip_tokens):
    # A template must name its slots (validated above); "{object:.0}" names it but renders no character, so every
    # object of a predicate gets the same prompt.
    config = PromptConfig(attention="The person is {predicate} at something{object:.0}")
    with pytest.raises(
        ValueError,
        match=r"attention classes of prompts.attention = .* identical tokens for "
        r"\(looking_at, bag\) .* and \(looking_at, chair\)",
    ):
        _check(config, {"attention": [[0, 2], [0, 8]], "spatial": [], "contacting": []}, clip_tokens)
    # the generic noun of the per-predicate prompts is the same for every class on purpose: no duplicate there
    _check(PromptConfig(), {}, clip_tokens, clip_triplets=False)


def test_prompts_differing_only_in_case_or_spacing_are_duplicates(clip_tokens):
    # CLIP's tokenizer lowercases and collapses whitespace: these two prompts are one token sequence
    prompts = {"objects": ["a photo of a Cup", "a photo of  a cup"], "attention": [], "spatial": [], "contacting": []}
    classes = {"objects": ["cup", "mug"], "attention": [], "spatial": [], "contacting": []}
    with pytest.raises(ValueError, match=r"identical tokens for cup \('a photo of a Cup'\) and mug"):
        check_prompts(PromptConfig(), prompts, classes, clip_tokens, 77)
    with pytest.raises(ValueError, match="one class name per objects prompt"):
        check_prompts(PromptConfig(), prompts, {**classes, "objects": ["cup"]}, clip_tokens, 77)


def test_prompt_classes_name_objects_triplets_and_predicates():
    classes = prompt_classes({"attention": [[0, 11]], "spatial": [[5, 8]], "contacting": []})
    assert classes["objects"][10] == "cup/glass/bottle" and len(classes["objects"]) == 36
    assert classes["attention"] == ["(looking_at, cup/glass/bottle)"] and classes["spatial"] == ["(in_front_of, chair)"]
    assert prompt_classes({}, clip_triplets=False)["attention"] == ["looking_at", "not_looking_at", "unsure"]
