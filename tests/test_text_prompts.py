"""Prompt rendering: the paper's exact wording, per-predicate prompts, validation."""

import pytest

from arn_lightning.text.prompts import (
    PromptConfig,
    build_prompts,
    object_prompts,
    predicate_prompts,
    triplet_prompts,
)


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
