"""The code's structure: no import circle in ``models/``, one home per concept, settings retired without breaking
earlier checkpoints."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from arn_lightning.models.config import RETIRED_SETTINGS, ARNConfig, drop_retired_settings
from arn_lightning.training.lit_module import ARNLitModule, drop_retired_hparams
from arn_lightning.triplets import TripletVocabulary

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "arn_lightning"
CATEGORIES = {"attention": [[0, 2], [1, 2]], "spatial": [[3, 2]], "contacting": [[9, 2], [12, 5]]}
TINY_ARCH = dict(
    backbone="resnet18",
    backbone_stride=16,
    hidden_dim=16,
    nheads=2,
    ffn_dim=32,
    enc_layers=1,
    entity_layers=1,
    predicate_layers=2,
    num_queries=4,
    num_frames=2,
    clip_embed_dim=16,
    distill=False,
)


def _imports(path: Path) -> set[str]:
    """Every ``arn_lightning`` module ``path`` imports, at any depth of the file (``TYPE_CHECKING`` blocks too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("arn_lightning"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("arn_lightning"))
    return found


def test_models_package_has_no_import_circle():
    modules = {f"arn_lightning.models.{p.stem}": p for p in (PACKAGE / "models").glob("*.py") if p.stem != "__init__"}
    graph = {name: {m for m in _imports(path) if m in modules} for name, path in modules.items()}
    visiting, done = set(), set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in visiting:
            cycle = trail[trail.index(name) :] + (name,)
            pytest.fail(f"import circle in models/: {' -> '.join(cycle)}")
        if name in done:
            return
        visiting.add(name)
        for target in sorted(graph[name]):
            visit(target, trail + (name,))
        visiting.discard(name)
        done.add(name)

    assert len(modules) >= 8  # the walk saw the package
    for name in sorted(modules):
        visit(name, ())


def test_postprocess_and_criterion_take_the_vocabulary_not_the_matcher_or_the_model():
    assert "arn_lightning.matcher" not in _imports(PACKAGE / "postprocess.py")
    assert "arn_lightning.models.arn" not in _imports(PACKAGE / "postprocess.py")
    assert "arn_lightning.models.arn" not in _imports(PACKAGE / "criterion.py")


@pytest.mark.parametrize("name", ["TASKS", "CONSTRAINTS", "IMAGENET_MEAN", "IMAGENET_STD", "PREDICATE_TYPE_COLORS"])
def test_shared_names_are_defined_once(name):
    homes = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if any(
            isinstance(node, (ast.Assign, ast.AnnAssign))
            and name
            in {
                t.id
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(t, ast.Name)
            }
            for node in ast.parse(p.read_text()).body
        )
    ]
    assert len(homes) == 1, f"{name} is defined in {homes}"


def test_retired_arch_settings_are_dropped_at_their_constant_and_refused_otherwise():
    old = {**TINY_ARCH, **RETIRED_SETTINGS}
    assert drop_retired_settings(old) == TINY_ARCH
    assert drop_retired_settings({**TINY_ARCH, "logit_scale_init": math.log(1 / 0.07)}) == TINY_ARCH
    with pytest.raises(ValueError, match=r"model\.arch\.box_mlp_layers=4 is no longer a setting.*box_mlp_layers=3"):
        drop_retired_settings({**TINY_ARCH, "box_mlp_layers": 4})
    with pytest.raises(ValueError, match=r"num_object_classes=True"):  # a bool is not the number 36
        drop_retired_settings({**TINY_ARCH, "num_object_classes": True})


def test_earlier_checkpoint_hyperparameters_build_the_same_module():
    earlier = {
        "arch": {**TINY_ARCH, **RETIRED_SETTINGS},
        "loss": {"distill": True, "eos_coef": 0.2},  # loss.distill mirrored arch.distill
        "post": {"task": None, "top_k_pairs": 3},
        "optim": {"lr": 2e-4, "lr_drop_gamma": 0.1, "betas": [0.9, 0.999]},
    }
    cleaned = drop_retired_hparams(earlier)
    assert cleaned["arch"] == TINY_ARCH and cleaned["loss"] == {"eos_coef": 0.2}
    assert cleaned["post"] == {"top_k_pairs": 3} and cleaned["optim"] == {"lr": 2e-4}
    module = ARNLitModule(**earlier, triplet_categories=CATEGORIES, init_text_classifiers=False)
    assert module.arch_config == ARNConfig(**TINY_ARCH)
    assert not module.criterion.distill and module.postprocess.task == "sgdet"
    assert module.hparams["arch"] == TINY_ARCH and "distill" not in module.hparams["loss"]  # saved clean
    with pytest.raises(ValueError, match=r"model\.optim\.betas"):
        drop_retired_hparams({**earlier, "optim": {"betas": [0.8, 0.99]}})


def test_one_vocabulary_is_shared_by_model_criterion_and_postprocess():
    module = ARNLitModule(arch=TINY_ARCH, triplet_categories=CATEGORIES, init_text_classifiers=False)
    vocabulary = module.model.vocabulary
    assert isinstance(vocabulary, TripletVocabulary)
    for kind, predicates in vocabulary.triplet_predicates.items():
        assert predicates.tolist() == [p for p, _ in CATEGORIES[kind]]
        assert module.criterion.vocab.triplet_predicates[kind].tolist() == predicates.tolist()
        assert module.model.triplet_objects[kind].tolist() == vocabulary.triplet_objects[kind].tolist()
