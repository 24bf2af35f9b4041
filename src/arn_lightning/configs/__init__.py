"""The configs that ship with the package, and how a config is found by name.

The YAML files beside this module are package data: the paper's configs (``ag_sgdet``, ``ag_sgcls``,
``ag_predcls``), the demo's (``synthetic_demo``), the trainer layers (``trainer/gpu_bf16``, ...) and the ablation
rows (``ablation/t3_row1_baseline_ce``, ...). In a checkout, the repository's ``configs`` is a link to this folder,
so ``--config configs/ag_sgdet.yaml`` names the same file.

A ``--config`` value is a file when one exists at that path (relative to the current folder; a name without a suffix
also finds ``<name>.yaml`` there, e.g. the copy ``arn-lightning configs copy ag_sgdet`` wrote), else the packaged
config of that name (``ag_sgdet``, ``ag_sgdet.yaml``, ``trainer/gpu_bf16``, ``configs/trainer/gpu_bf16.yaml``):
a local file always wins. :func:`resolve_config_args` applies the rule to a command line once, for
``arn-lightning fit | validate | test | predict`` (:mod:`arn_lightning.training.lightning_cli`), the demo and the
ablation runner.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from arn_lightning._types import PathLike

#: The suffix of a config file; a name may leave it out.
SUFFIX = ".yaml"
#: A prefix a name may carry (the checkout's link): ``configs/ag_sgdet.yaml`` names ``ag_sgdet``.
CHECKOUT_PREFIX = "configs/"
#: The options of a command line that take a config file (LightningCLI / jsonargparse).
CONFIG_OPTIONS = ("--config", "-c")


def config_folder() -> Path:
    """The folder of the packaged configs (inside the installed package).

    Raises:
        RuntimeError: the package is not installed as plain files (a zip import), so the configs have no path.
    """
    folder = resources.files(__name__)
    if not isinstance(folder, Path):
        raise RuntimeError(f"Expected the arn_lightning package as files on disk but it is imported from {folder}")
    return folder


def config_names() -> list[str]:
    """The names of the packaged configs, sorted: ``ablation/t3_row1_baseline_ce``, ..., ``trainer/gpu_bf16``."""
    folder = config_folder()
    return sorted(path.relative_to(folder).with_suffix("").as_posix() for path in folder.rglob(f"*{SUFFIX}"))


def config_name(value: str) -> str:
    """``value`` as a packaged config name: without a leading ``configs/`` and without the ``.yaml`` suffix."""
    name = value.replace("\\", "/")
    name = name[len(CHECKOUT_PREFIX) :] if name.startswith(CHECKOUT_PREFIX) else name
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name


def packaged_config(name: str) -> Path:
    """The file of the packaged config ``name`` (any form :func:`config_name` reads).

    Raises:
        ValueError: no packaged config has that name (the message lists the names).
    """
    names = config_names()
    found = config_name(name)
    if found not in names:
        raise ValueError(f"Expected a packaged config name ({', '.join(names)}) but got {name!r}")
    return config_folder() / f"{found}{SUFFIX}"


def resolve_config(value: PathLike) -> Path:
    """The config a ``--config`` value means: the file at ``value`` if there is one (a local file wins), else the
    packaged config of that name, else ``value`` unchanged (the caller reports the missing file)."""
    path = Path(value).expanduser()
    if path.exists():
        return path
    if not path.suffix and path.with_suffix(SUFFIX).is_file():  # `configs copy ag_sgdet` wrote ./ag_sgdet.yaml
        return path.with_suffix(SUFFIX)
    try:
        return packaged_config(str(value))
    except ValueError:
        return path


def resolve_config_args(args: list[str]) -> list[str]:
    """A command line with each config value (``--config X``, ``--config=X``, ``-c X``) replaced by
    :func:`resolve_config`'s file; every other argument unchanged."""
    resolved = list(args)
    for i, arg in enumerate(resolved):
        option, equals, value = arg.partition("=")
        if option not in CONFIG_OPTIONS:
            continue
        if equals:
            resolved[i] = f"{option}={_resolved_text(value)}"
        elif i + 1 < len(resolved):
            resolved[i + 1] = _resolved_text(resolved[i + 1])
    return resolved


def _resolved_text(value: str) -> str:
    """:func:`resolve_config` of a command-line value, as text; a value that is neither stays as typed."""
    path = resolve_config(value)
    return value if path == Path(value).expanduser() else str(path)


__all__ = ["config_folder", "config_name", "config_names", "packaged_config", "resolve_config", "resolve_config_args"]
