"""Finding runs and their checkpoints on disk: the newest ``last.ckpt`` under a folder (what the notebook opens by
default after ``make demo``) and paths given relative to the repository root."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, Path]
#: The demo's run folder, relative to the repository root (``make demo`` writes ``demo_output/train/...``).
DEMO_RUNS = Path("demo_output") / "train"
#: The latest checkpoint of a run (``checkpoints/last.ckpt``).
LAST_CHECKPOINT = "last.ckpt"


def repository_root(start: Optional[PathLike] = None) -> Path:
    """The checkout this package runs from: the nearest folder at or above ``start`` (default: the current folder)
    holding this project's ``pyproject.toml``, else the folder above the installed package's ``src/``.

    Raises:
        FileNotFoundError: neither exists (an installed, non-editable package outside a checkout).
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        project = folder / "pyproject.toml"
        if project.is_file() and 'name = "arn-lightning"' in project.read_text(encoding="utf-8"):
            return folder
    package_checkout = Path(__file__).resolve().parents[2]
    if (package_checkout / "pyproject.toml").is_file():
        return package_checkout
    raise FileNotFoundError(f"Expected an arn-lightning checkout at or above {here} (a pyproject.toml of the project) "
                            f"but found none")


def resolve_from_repository(path: PathLike, start: Optional[PathLike] = None) -> Path:
    """``path`` itself if absolute, else ``path`` relative to :func:`repository_root` (so that a notebook, which runs
    in ``notebooks/``, reads ``demo_output/...`` as a user typing it at the repository root means it)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else repository_root(start) / path


def latest_checkpoint(folder: PathLike, name: str = LAST_CHECKPOINT) -> Path:
    """The most recently written ``name`` checkpoint anywhere under ``folder`` (e.g. the newest ``make demo`` run's
    ``last.ckpt`` under ``demo_output/train``).

    Raises:
        FileNotFoundError: ``folder`` is missing or holds no such checkpoint (the message says how to make one).
    """
    folder = Path(folder)
    found = sorted(folder.rglob(name), key=lambda p: p.stat().st_mtime_ns) if folder.is_dir() else []
    if not found:
        raise FileNotFoundError(f"Expected a {name} under {folder} but found none: run `make demo` first, or point "
                                f"ARN_CHECKPOINT at a checkpoint")
    return found[-1]


__all__ = ["DEMO_RUNS", "LAST_CHECKPOINT", "latest_checkpoint", "repository_root", "resolve_from_repository"]
