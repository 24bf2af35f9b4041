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


def _assert_no_circle(graph: dict[str, set[str]], where: str) -> None:
    """Fail naming the first import circle of ``graph`` (module -> the modules it imports), if any."""
    visiting, done = set(), set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in visiting:
            cycle = trail[trail.index(name) :] + (name,)
            pytest.fail(f"import circle in {where}: {' -> '.join(cycle)}")
        if name in done:
            return
        visiting.add(name)
        for target in sorted(graph[name]):
            visit(target, trail + (name,))
        visiting.discard(name)
        done.add(name)

    for name in sorted(graph):
        visit(name, ())


def test_models_package_has_no_import_circle():
    modules = {f"arn_lightning.models.{p.stem}": p for p in (PACKAGE / "models").glob("*.py") if p.stem != "__init__"}
    graph = {name: {m for m in _imports(path) if m in modules} for name, path in modules.items()}
    assert len(modules) >= 8  # the walk saw the package
    _assert_no_circle(graph, "models/")


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


# --- Layers of the whole package (docs/ARCHITECTURE.md, "Layers") ---------------------------------------------------


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _edges(name: str) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (inside functions and ``TYPE_CHECKING`` too);
    ``from arn_lightning.x import y`` counts as an import of ``x.y`` when that is a module, else of ``x``."""
    path, found = MODULES[name], set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {target for target in found if target in MODULES and target != name}


GRAPH = {name: _edges(name) for name in MODULES}


def _area(module: str) -> str:
    """The package a module belongs to (``training``, ``models``, ...), or ``root`` for a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or MODULES[module].name == "__init__.py" and len(parts) > 1 else "root"


def _crossings(source: str, target: str) -> list[str]:
    return sorted(
        f"{name} -> {dep}"
        for name, deps in GRAPH.items()
        if _area(name) == source
        for dep in deps
        if _area(dep) == target
    )


def test_the_import_graph_sees_the_whole_package():
    assert len(MODULES) > 100 and len(GRAPH["arn_lightning.criterion"]) >= 3
    assert _area("arn_lightning.training.lit_module") == "training" and _area("arn_lightning.vocab") == "root"


def test_no_import_circle_anywhere_in_the_package():
    _assert_no_circle(GRAPH, "the package")


#: Areas a package may never import, per package (the layers of docs/ARCHITECTURE.md).
FORBIDDEN = {
    "models": {"weights", "training", "inference", "data", "video", "drawing", "app", "experiments", "benchmarks"},
    "training": {"inference", "app"},
    "inference": {"training", "app"},
    "weights": {"training", "inference", "data", "app"},
    "video": {"data", "training", "inference", "models", "app"},
    "drawing": {"training", "inference", "models", "app", "data"},
    "data": {"training", "inference", "models", "app", "weights"},
    # scoring.py reads the AG ground truth (data/ag.py) that a prediction file is scored against
    "metrics": {"training", "inference", "models", "app", "weights", "video", "drawing"},
    "text": {"training", "inference", "app", "data"},
}


@pytest.mark.parametrize("source", sorted(FORBIDDEN))
def test_layers(source):
    crossings = [c for target in sorted(FORBIDDEN[source]) for c in _crossings(source, target)]
    assert not crossings, f"{source}/ imports what it must not: {crossings}"


@pytest.mark.parametrize("target", ["commands", "experiments"])
def test_nothing_in_the_library_imports_the_drivers(target):
    """Commands parse arguments and call the library; experiments use it. Only commands import experiments, and
    nothing imports a command (``cli.py`` names them as strings)."""
    allowed = {"commands", target} if target == "commands" else {"commands", "experiments"}
    importers = sorted(
        f"{name} -> {dep}"
        for name, deps in GRAPH.items()
        if _area(name) not in allowed
        for dep in deps
        if _area(dep) == target
    )
    assert not importers, f"library modules import {target}/: {importers}"


def test_the_package_never_reads_the_checkout():
    readers = sorted(p.relative_to(PACKAGE).as_posix() for p in MODULES.values() if "__file__" in p.read_text())
    assert not readers, f"modules that find files through __file__ (use importlib.resources): {readers}"


def _module_map() -> set[str]:
    """The files named by the module map of docs/ARCHITECTURE.md: a tree of names, two spaces per level, with
    descriptions and their continuation lines indented past the names."""
    text = (PACKAGE.parents[1] / "docs" / "ARCHITECTURE.md").read_text()
    block = text.split("## Module map", 1)[1].split("```", 2)[1]
    named, stack = set(), []
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        token = line.strip().split(" ", 1)[0]
        if not line.strip() or indent % 2 or indent > 8 or not (token.endswith((".py", "/")) and len(token) > 1):
            continue
        level = indent // 2
        stack[level:] = [token]
        if token.endswith(".py"):
            named.add("".join(stack))
    return named


def test_the_module_map_of_the_architecture_page_is_the_tree():
    named = _module_map()
    files = {"src/" + p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*.py")}
    files = {f for f in files if not f.endswith("__init__.py") and not f.endswith("__main__.py")}
    assert len(named) > 50
    assert not files - named, f"source files missing from docs/ARCHITECTURE.md's module map: {sorted(files - named)}"
    assert not named - files, f"the module map names files that do not exist: {sorted(named - files)}"


# --- One home per concept (docs/ARCHITECTURE.md, "Layers"; the builder's row is tests/test_build.py, the decode
# loop's tests/test_video.py, the recall chart's tests/test_recall_chart.py) -----------------------------------------

#: Names whose use means a connection to the outside: only weights/ downloads (registry files, CLIP, the Hub).
NETWORK_NAMES = {"urlopen", "build_opener", "HTTPConnection", "HTTPSConnection", "hf_hub_download", "snapshot_download"}
NETWORK_MODULES = {"requests", "httpx", "huggingface_hub", "urllib.request", "http.client", "torch.hub"}


def _network_use(path: Path) -> set[str]:
    used = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in NETWORK_NAMES | {"load_state_dict_from_url"}:
            used.add(node.attr)
        elif isinstance(node, ast.Name) and node.id in NETWORK_NAMES:
            used.add(node.id)
        elif isinstance(node, ast.ImportFrom) and node.module in NETWORK_MODULES:
            used.add(node.module)
        elif isinstance(node, ast.Import):
            used.update(alias.name for alias in node.names if alias.name in NETWORK_MODULES)
    return used


def test_only_the_weights_package_goes_on_the_network():
    users = {name: _network_use(path) for name, path in MODULES.items()}
    outside = sorted(f"{name}: {sorted(used)}" for name, used in users.items() if used and _area(name) != "weights")
    assert not outside, f"network access outside weights/ (one downloader): {outside}"
    assert _network_use(MODULES["arn_lightning.weights.download"]), "the walk saw the downloader"


def test_a_prediction_file_is_scored_in_metrics_and_the_command_only_parses():
    homes = sorted(
        name
        for name, path in MODULES.items()
        if any(isinstance(n, ast.FunctionDef) and n.name == "evaluate" for n in ast.parse(path.read_text()).body)
    )
    assert homes == ["arn_lightning.metrics.scoring"]
    command = ast.parse(MODULES["arn_lightning.commands.evaluate"].read_text())
    defined = sorted(n.name for n in command.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)))
    assert set(defined) <= {"build_parser", "main"}, f"library code in commands/evaluate.py: {defined}"
