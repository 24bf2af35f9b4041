"""The code's structure: no import circle in ``models/``, one home per concept, settings retired without breaking
earlier checkpoints."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from arn_lightning.build import check_stored_settings
from arn_lightning.checkpoint_file import CheckpointError
from arn_lightning.models.config import ARNConfig
from arn_lightning.training.lit_module import ARNLitModule
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


@pytest.mark.parametrize("name", ["TASKS", "CONSTRAINTS", "IMAGENET_MEAN", "IMAGENET_STD"])
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


def test_a_setting_of_an_older_format_is_refused_with_one_error_naming_file_and_setting():
    stored = {"arch": {**TINY_ARCH, "box_mlp_layers": 3}, "optim": {"lr": 2e-4}}
    with pytest.raises(
        CheckpointError, match=r"old\.ckpt: .*model\.arch\.box_mlp_layers is a setting of an older format"
    ):
        check_stored_settings(stored, "old.ckpt", ARNLitModule.stored_configs())
    with pytest.raises(CheckpointError, match=r"model\.optim\.betas .*retrain the model with this version"):
        check_stored_settings({"optim": {"betas": [0.9, 0.999]}}, "old.ckpt", ARNLitModule.stored_configs())
    check_stored_settings({"arch": TINY_ARCH, "post": {}}, "new.ckpt", ARNLitModule.stored_configs())  # this format


def test_retired_settings_are_gone():
    import arn_lightning.models.config as model_config

    assert not (PACKAGE / "hparams.py").exists()
    assert not hasattr(model_config, "RETIRED_SETTINGS") and not hasattr(model_config, "drop_retired_settings")
    with pytest.raises(ValueError, match=r"got unknown \['num_object_classes'\]"):
        ARNLitModule(arch={**TINY_ARCH, "num_object_classes": 36}, triplet_categories=CATEGORIES)
    module = ARNLitModule(arch=TINY_ARCH, triplet_categories=CATEGORIES, init_text_classifiers=False)
    assert module.arch_config == ARNConfig(**TINY_ARCH) and module.hparams["arch"] == TINY_ARCH


def test_one_vocabulary_is_shared_by_model_criterion_and_postprocess():
    module = ARNLitModule(arch=TINY_ARCH, triplet_categories=CATEGORIES, init_text_classifiers=False)
    vocabulary = module.model.vocabulary
    assert isinstance(vocabulary, TripletVocabulary)
    for kind, predicates in vocabulary.triplet_predicates.items():
        assert predicates.tolist() == [p for p, _ in CATEGORIES[kind]]
        assert module.criterion.vocab.triplet_predicates[kind].tolist() == predicates.tolist()
        assert module.model.triplet_objects[kind].tolist() == vocabulary.triplet_objects[kind].tolist()
