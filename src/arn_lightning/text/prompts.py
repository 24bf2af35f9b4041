"""Text prompts for the CLIP semantic cues (paper Sec. 3.2, ``docs/model.md`` section 3).

Four families of prompts become CLIP text embeddings that initialise the cosine classifiers:

* ``objects``: one prompt per AG object class (36, ``person`` included, AG index order), template
  ``"a photo of person and a {object}"``;
* ``attention`` / ``spatial`` / ``contacting``: one prompt per triplet category ``(predicate, object)`` of the branch
  (``ARCHITECTURE.md`` section 3), with the paper's branch templates.

With ``clip_triplets`` off the branch classifiers score predicates, not triplets. Their prompts are the same branch
templates with the object slot filled by the neutral noun ``PromptConfig.generic_object`` ("object"), e.g.
``"The person is looking at the object"`` or ``"The object is in front of the person"``: the predicate wording
stays identical to the triplet prompts, so the two settings differ only in the object-specific part.

Names are rendered readable with :func:`arn_lightning.vocab.readable_predicate` (``looking_at`` -> ``looking``)
and :func:`arn_lightning.vocab.readable_object` (``cup/glass/bottle`` -> ``cup or glass or bottle``).

A text tower reads a fixed number of tokens (77 for the CLIP models, start and end tokens included) and its tokenizer
cuts longer prompts silently: a template whose ``{object}`` slot lies past the limit gives every class the same
embedding. :func:`check_prompts` (called by :func:`arn_lightning.text.embeddings.text_embeddings` before any encoding or
cache access) rejects every prompt longer than the limit and any two classes of one family whose prompts tokenize
identically.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from arn_lightning.vocab import (
    OBJECT_CLASSES,
    PREDICATE_TYPES,
    PREDICATES,
    TYPE_OFFSETS,
    TYPE_PREDICATES,
    TYPE_SIZES,
    readable_object,
    readable_predicate,
)

#: Keys of a prompt / text-embedding dictionary, in a fixed order.
PROMPT_KINDS = ("objects", *PREDICATE_TYPES)


@dataclass
class PromptConfig:
    """Prompt templates (defaults: the paper's exact wording, Sec. 3.2).

    Attributes:
        objects: object-class template, with an ``{object}`` slot.
        attention: attention-triplet template, with ``{predicate}`` and ``{object}`` slots.
        spatial: spatial-triplet template (the object is the sentence's subject: AG annotates spatial relations
            from the object to the person).
        contacting: contacting-triplet template.
        generic_object: the noun put in the ``{object}`` slot of the branch templates when ``clip_triplets`` is off
            (per-predicate prompts).
    """

    objects: str = "a photo of person and a {object}"
    attention: str = "The person is {predicate} at the {object}"
    spatial: str = "The {object} is {predicate} the person"
    contacting: str = "a photo of a person maybe {predicate} the {object}"
    generic_object: str = "object"

    def __post_init__(self) -> None:
        _check_slots("objects", self.objects, {"object"})
        for kind in PREDICATE_TYPES:
            _check_slots(kind, getattr(self, kind), {"predicate", "object"})
        if not self.generic_object.strip():
            raise ValueError(f"Expected a non-empty generic_object but got {self.generic_object!r}")


def _check_slots(name: str, template: str, expected: set) -> None:
    """Raise ``ValueError`` unless ``template`` has exactly the named ``{slots}`` of ``expected``."""
    try:
        slots = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as error:
        raise ValueError(f"Expected a valid format string for the {name} template but got {template!r}") from error
    if slots != expected:
        raise ValueError(
            f"Expected the {name} template to have the slots {sorted(expected)} but got {sorted(slots)} in {template!r}"
        )


def object_prompts(config: PromptConfig) -> list[str]:
    """One prompt per AG object class, in AG index order (``prompts[c]`` is AG index ``c + 1``; 36 prompts)."""
    return [config.objects.format(object=readable_object(name)) for name in OBJECT_CLASSES]


def _check_category(kind: str, predicate: int, obj: int) -> None:
    offset = TYPE_OFFSETS[kind]
    if not offset <= predicate < offset + TYPE_SIZES[kind]:
        raise ValueError(f"Expected {kind} predicates in [{offset}, {offset + TYPE_SIZES[kind]}) but got {predicate}")
    if not 1 <= obj <= len(OBJECT_CLASSES):
        raise ValueError(f"Expected an AG object index in [1, {len(OBJECT_CLASSES)}] but got {obj} ({kind})")


def triplet_prompts(config: PromptConfig, kind: str, categories: Sequence[Sequence[int]]) -> list[str]:
    """Prompts of one branch's triplet categories.

    Args:
        config: the templates.
        kind: ``"attention"``, ``"spatial"`` or ``"contacting"``.
        categories: ``[[global predicate index, AG object index], ...]`` of that branch (``ARCHITECTURE.md`` 3).

    Returns:
        One prompt per category, in the given order.
    """
    if kind not in PREDICATE_TYPES:
        raise ValueError(f"Expected a predicate type in {PREDICATE_TYPES} but got {kind!r}")
    prompts = []
    for category in categories:
        if len(category) != 2:
            raise ValueError(f"Expected a [predicate, object] pair in the {kind} categories but got {category}")
        predicate, obj = int(category[0]), int(category[1])
        _check_category(kind, predicate, obj)
        prompts.append(_render(config, kind, PREDICATES[predicate], readable_object(OBJECT_CLASSES[obj - 1])))
    return prompts


def predicate_prompts(config: PromptConfig, kind: str) -> list[str]:
    """Per-predicate prompts of one branch (``clip_triplets`` off), in the branch's predicate order."""
    if kind not in PREDICATE_TYPES:
        raise ValueError(f"Expected a predicate type in {PREDICATE_TYPES} but got {kind!r}")
    return [_render(config, kind, name, config.generic_object) for name in TYPE_PREDICATES[kind]]


def _render(config: PromptConfig, kind: str, predicate_name: str, object_text: str) -> str:
    return getattr(config, kind).format(predicate=readable_predicate(predicate_name), object=object_text)


def build_prompts(
    config: PromptConfig,
    triplet_categories: Mapping[str, Sequence[Sequence[int]]],
    clip_triplets: bool = True,
) -> dict[str, list[str]]:
    """Every prompt the model's classifiers need.

    Args:
        config: the templates.
        triplet_categories: per predicate type the ``[predicate, object]`` pairs of the training split (unused when
            ``clip_triplets`` is off, may then be empty).
        clip_triplets: triplet prompts (True) or per-predicate prompts (False) for the three branches.

    Returns:
        ``{"objects": [36 prompts], "attention": [K_A], "spatial": [K_S], "contacting": [K_C]}`` (with
        ``clip_triplets`` off ``K`` is the branch's number of predicates: 3, 6, 17).
    """
    prompts = {"objects": object_prompts(config)}
    for kind in PREDICATE_TYPES:
        if not clip_triplets:
            prompts[kind] = predicate_prompts(config, kind)
        elif kind not in triplet_categories:
            raise ValueError(
                f"Expected triplet categories for {PREDICATE_TYPES} but {kind!r} is missing "
                f"(got {sorted(triplet_categories)})"
            )
        else:
            prompts[kind] = triplet_prompts(config, kind, triplet_categories[kind])
    return prompts


def prompt_classes(
    triplet_categories: Mapping[str, Sequence[Sequence[int]]], clip_triplets: bool = True
) -> dict[str, list[str]]:
    """Class names of the prompts of :func:`build_prompts`, same keys and order (for error messages).

    Returns:
        ``{"objects": ["person", ...] (36), "attention": ["(looking_at, cup/glass/bottle)", ...], ...}`` with triplet
        categories, or the branch's predicate names (``"looking_at"``, ...) with ``clip_triplets`` off.
    """
    classes = {"objects": list(OBJECT_CLASSES)}
    for kind in PREDICATE_TYPES:
        if not clip_triplets:
            classes[kind] = list(TYPE_PREDICATES[kind])
        else:
            classes[kind] = [
                f"({PREDICATES[int(p)]}, {OBJECT_CLASSES[int(o) - 1]})" for p, o in triplet_categories.get(kind, [])
            ]
    return classes


def prompt_setting(config: PromptConfig, kind: str, clip_triplets: bool = True) -> str:
    """The setting that renders the ``kind`` prompts, for messages: ``"prompts.objects = 'a photo of ...'"``
    (with ``clip_triplets`` off, the branch template filled with ``prompts.generic_object``)."""
    text = f"prompts.{kind} = {getattr(config, kind)!r}"
    if kind != "objects" and not clip_triplets:
        text += f" (per-predicate prompts, prompts.generic_object = {config.generic_object!r})"
    return text


def check_prompts(
    config: PromptConfig,
    prompts: Mapping[str, Sequence[str]],
    classes: Mapping[str, Sequence[str]],
    token_ids: Callable[[str], Sequence[int]],
    context_length: int,
    clip_triplets: bool = True,
) -> None:
    """Check that a text tower reads every prompt whole and tells the classes of each family apart.

    Args:
        config: the templates that rendered ``prompts`` (named in the errors).
        prompts: ``{kind: [prompt per class]}`` of :func:`build_prompts`.
        classes: ``{kind: [class name per prompt]}`` of :func:`prompt_classes` (same lengths).
        token_ids: the tokenizer's full, untruncated token ids of one prompt, start and end tokens included
            (:func:`arn_lightning.text.embeddings.prompt_token_ids`).
        context_length: tokens the text tower reads (the model's / tokenizer's ``context_length``, 77 for CLIP).
        clip_triplets: whether the branch prompts are triplet prompts (only changes the messages).

    Raises:
        ValueError: a prompt has more than ``context_length`` tokens (the tokenizer would cut its end; the message
            names the template setting, the prompt, its token count and the limit), or two classes of one family
            (two objects, or two categories of one branch) render to identical token sequences (the message names
            both classes, their prompts and the template setting). Lengths are checked first, family by family.
    """
    if context_length < 1:
        raise ValueError(f"Expected a text-tower context_length >= 1 but got {context_length}")
    tokens = {
        kind: _fitting_tokens(config, kind, prompts, classes, token_ids, context_length, clip_triplets)
        for kind in PROMPT_KINDS
    }
    for kind in PROMPT_KINDS:
        _check_distinct(config, kind, prompts, classes, tokens[kind], clip_triplets)


def _fitting_tokens(
    config: PromptConfig,
    kind: str,
    prompts: Mapping[str, Sequence[str]],
    classes: Mapping[str, Sequence[str]],
    token_ids: Callable[[str], Sequence[int]],
    context_length: int,
    clip_triplets: bool,
) -> list[tuple]:
    """The token ids of the ``kind`` prompts; raises ``ValueError`` on a missing class name or a prompt longer than
    ``context_length`` (:func:`check_prompts`)."""
    texts, names = list(prompts.get(kind, [])), list(classes.get(kind, []))
    if len(texts) != len(names):
        raise ValueError(f"Expected one class name per {kind} prompt ({len(texts)}) but got {len(names)}")
    tokens = [tuple(int(t) for t in token_ids(text)) for text in texts]
    for text, name, ids in zip(texts, names, tokens):
        if len(ids) > context_length:
            raise ValueError(
                f"Expected every prompt of {prompt_setting(config, kind, clip_triplets)} to fit the text "
                f"tower's context of {context_length} tokens (start and end tokens included) but got "
                f"{len(ids)} tokens for {name}: {text!r} (the tokenizer would cut its end silently; shorten the "
                f"template)"
            )
    return tokens


def _check_distinct(
    config: PromptConfig,
    kind: str,
    prompts: Mapping[str, Sequence[str]],
    classes: Mapping[str, Sequence[str]],
    tokens: list[tuple],
    clip_triplets: bool,
) -> None:
    """Raise ``ValueError`` when two ``kind`` classes have the same token ids ``tokens`` (:func:`check_prompts`)."""
    first: dict[tuple, int] = {}
    setting = prompt_setting(config, kind, clip_triplets)
    for i, ids in enumerate(tokens):
        j = first.setdefault(ids, i)
        if j != i:
            raise ValueError(
                f"Expected distinct prompts for the {kind} classes of {setting} but got identical tokens for "
                f"{classes[kind][j]} ({prompts[kind][j]!r}) and {classes[kind][i]} "
                f"({prompts[kind][i]!r}): the classifier could not tell them apart"
            )
