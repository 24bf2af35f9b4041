"""The one builder (``arn_lightning.build``): the only place that constructs the postprocess and the criterion
around a vocabulary, reads a trained model's settings, and loads pretrained weights into a built model."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import arn_lightning

PACKAGE = Path(arn_lightning.__file__).resolve().parent
#: Calls that make a model's parts or load pretrained weights into it: the builder's alone.
BUILDER_CALLS = (
    "ARN",
    "PostProcess",
    "SetCriterion",
    "load_backbone_weights",
    "load_detr_checkpoint",
    "read_model_folder",
)


def _calls(path: Path) -> set[str]:
    """Names of the functions or classes ``path`` calls (``f(...)`` and ``module.f(...)``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
    return names


@pytest.mark.parametrize("name", BUILDER_CALLS)
def test_model_parts_and_pretrained_weights_come_from_the_builder_only(name: str) -> None:
    callers = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if name in _calls(p))
    assert callers == ["build.py"], f"{name} is called in {callers}"


def test_the_models_read_no_weight_file() -> None:
    for path in (PACKAGE / "models").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(name.startswith("arn_lightning.weights") for name in imported), path.name
        assert not {"load", "fetch_weights", "hf_hub_download"} & _calls(path), path.name  # torch.load, downloads


def test_a_modules_settings_are_its_own_copy() -> None:
    """A default argument's dataclass instance is shared by every call: a setting changed on one module (e.g. a
    test that switches ``loss.frames``) must not reach the modules built after it (found when a later in-process
    training no longer matched the same training in a fresh process)."""
    from arn_lightning.criterion import LossConfig
    from arn_lightning.models.config import ARNConfig
    from arn_lightning.training.lit_module import ARNLitModule, EvalConfig

    categories = {"attention": [[0, 11]], "spatial": [[3, 11]], "contacting": [[9, 11]]}
    arch = ARNConfig(backbone="resnet18", hidden_dim=16, nheads=2, ffn_dim=32, enc_layers=1, num_queries=2)
    arch.entity_layers = arch.predicate_layers = 1
    first = ARNLitModule(arch=arch, triplet_categories=categories, init_text_classifiers=False)
    first.loss_config.frames = "key"
    first.eval_config.ks.append(500)
    first.arch_config.num_queries = 7
    second = ARNLitModule(arch=arch, triplet_categories=categories, init_text_classifiers=False)
    assert second.loss_config == LossConfig() and second.eval_config == EvalConfig()
    assert second.arch_config == arch and arch.num_queries == 2
