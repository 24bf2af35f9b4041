"""Action Genome vocabularies: object classes, predicates, their raw spellings and readable names.

Indices follow ``docs/action_genome.md`` section 1.3: object index 0 is background, 1 is ``person``;
predicates use one global index 0..25 (attention 0-2, spatial 3-8, contacting 9-25).
"""

from __future__ import annotations

#: Object classes in pickle spelling; index i+1 is the AG object index (0 = background is not listed).
OBJECT_CLASSES: tuple[str, ...] = (
    "person",
    "bag",
    "bed",
    "blanket",
    "book",
    "box",
    "broom",
    "chair",
    "closet/cabinet",
    "clothes",
    "cup/glass/bottle",
    "dish",
    "door",
    "doorknob",
    "doorway",
    "floor",
    "food",
    "groceries",
    "laptop",
    "light",
    "medicine",
    "mirror",
    "paper/notebook",
    "phone/camera",
    "picture",
    "pillow",
    "refrigerator",
    "sandwich",
    "shelf",
    "shoe",
    "sofa/couch",
    "table",
    "television",
    "towel",
    "vacuum",
    "window",
)
NUM_OBJECT_CLASSES = len(OBJECT_CLASSES)  # 36, person included
PERSON_LABEL = 1

ATTENTION_PREDICATES: tuple[str, ...] = ("looking_at", "not_looking_at", "unsure")
SPATIAL_PREDICATES: tuple[str, ...] = ("above", "beneath", "in_front_of", "behind", "on_the_side_of", "in")
CONTACTING_PREDICATES: tuple[str, ...] = (
    "carrying",
    "covered_by",
    "drinking_from",
    "eating",
    "have_it_on_the_back",
    "holding",
    "leaning_on",
    "lying_on",
    "not_contacting",
    "other_relationship",
    "sitting_on",
    "standing_on",
    "touching",
    "twisting",
    "wearing",
    "wiping",
    "writing_on",
)
#: All predicates in global index order.
PREDICATES: tuple[str, ...] = ATTENTION_PREDICATES + SPATIAL_PREDICATES + CONTACTING_PREDICATES
NUM_PREDICATES = len(PREDICATES)  # 26

#: The three predicate types (branches), in the order the model and the prediction file use.
PREDICATE_TYPES: tuple[str, ...] = ("attention", "spatial", "contacting")
#: Global predicate index of the first predicate of each type.
TYPE_OFFSETS: dict[str, int] = {"attention": 0, "spatial": 3, "contacting": 9}
TYPE_SIZES: dict[str, int] = {"attention": 3, "spatial": 6, "contacting": 17}
TYPE_PREDICATES: dict[str, tuple[str, ...]] = {
    "attention": ATTENTION_PREDICATES,
    "spatial": SPATIAL_PREDICATES,
    "contacting": CONTACTING_PREDICATES,
}

#: The three Action Genome tasks (``docs/action_genome.md`` sections 2-3): boxes and labels predicted (SGDet), labels
#: predicted on ground-truth boxes (SGCls), only predicates predicted (PredCls).
TASKS: tuple[str, ...] = ("sgdet", "sgcls", "predcls")
#: The three graph constraints of the protocol (``docs/action_genome.md`` section 3): one predicate per pair per type
#: ("with"), the top attention predicate plus every spatial / contacting one above a threshold ("semi"), any
#: number ("no").
CONSTRAINTS: tuple[str, ...] = ("with", "semi", "no")

OBJECT_INDEX: dict[str, int] = {name: i + 1 for i, name in enumerate(OBJECT_CLASSES)}
PREDICATE_INDEX: dict[str, int] = {name: i for i, name in enumerate(PREDICATES)}


def raw_spelling(name: str) -> str:
    """The spelling of ``name`` in the release's ``*_classes.txt`` files (separators removed)."""
    return name.replace("/", "").replace("_", "")


#: Raw class-file spelling -> pickle spelling.
RAW_OBJECT_NAMES: dict[str, str] = {raw_spelling(n): n for n in OBJECT_CLASSES}
RAW_PREDICATE_NAMES: dict[str, str] = {raw_spelling(n): n for n in PREDICATES}


def predicate_type(global_index: int) -> str:
    """Predicate type ("attention" / "spatial" / "contacting") of a global predicate index."""
    if not 0 <= global_index < NUM_PREDICATES:
        raise ValueError(f"Expected a predicate index in [0, {NUM_PREDICATES}) but got {global_index}")
    for kind in reversed(PREDICATE_TYPES):
        if global_index >= TYPE_OFFSETS[kind]:
            return kind
    raise AssertionError("unreachable")


def readable_object(name: str) -> str:
    """Prompt-friendly object name: ``cup/glass/bottle`` -> ``cup or glass or bottle``."""
    return " or ".join(part.replace("_", " ") for part in name.split("/"))


#: Prompt-friendly predicate names (the paper's prompts read "The person is looking at the cup").
_READABLE_PREDICATES: dict[str, str] = {
    "looking_at": "looking",
    "not_looking_at": "not looking",
    "unsure": "unsure whether looking",
    "in_front_of": "in front of",
    "on_the_side_of": "on the side of",
    "covered_by": "covered by",
    "drinking_from": "drinking from",
    "have_it_on_the_back": "having it on the back of",
    "leaning_on": "leaning on",
    "lying_on": "lying on",
    "not_contacting": "not contacting",
    "other_relationship": "otherwise related to",
    "sitting_on": "sitting on",
    "standing_on": "standing on",
    "writing_on": "writing on",
}


def readable_predicate(name: str) -> str:
    """Prompt-friendly predicate name: ``looking_at`` -> ``looking``, ``in_front_of`` -> ``in front of``."""
    return _READABLE_PREDICATES.get(name, name.replace("_", " "))


def object_names() -> list[str]:
    """Object class names in AG index order, index 0 = ``__background__``."""
    return ["__background__", *OBJECT_CLASSES]
