"""Runs on disk: one folder per run, the newest ``last.ckpt`` under a folder (what the notebook opens by default
after ``make demo``), and paths given relative to the repository root (or, outside a checkout, the current folder).

A run folder holds its ``config.yaml``, ``checkpoints/``, metrics and ``reports/``. With CSV and TensorBoard loggers
it is the logger's version folder. With W&B it is ``<save_dir>/<project>/<run id>`` (where Lightning puts the
checkpoints), not the shared ``save_dir``, so two W&B runs never write the same file. ``validate`` / ``test`` /
``predict`` and a resumed ``fit`` of a run's checkpoint write into a sub-folder of that run (``test/``,
``resume/``, ``test-1/``, ...; docs/runs.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arn_lightning._types import PathLike

#: The demo's run folder, relative to the repository root (``make demo`` writes ``demo_output/train/...``).
DEMO_RUNS = Path("demo_output") / "train"
#: The latest checkpoint of a run (``checkpoints/last.ckpt``).
LAST_CHECKPOINT = "last.ckpt"


def repository_root(start: PathLike | None = None) -> Path:
    """The folder that relative paths such as ``demo_output/...`` are read from: the nearest folder at or above
    ``start`` (default: the current folder) holding this project's ``pyproject.toml`` (a checkout, where ``make demo``
    writes), else ``start`` itself (an installed package used in any folder). Nothing is read through the package's
    own location."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        project = folder / "pyproject.toml"
        if project.is_file() and 'name = "arn-lightning"' in project.read_text(encoding="utf-8"):
            return folder
    return here


def resolve_from_repository(path: PathLike, start: PathLike | None = None) -> Path:
    """``path`` itself if absolute, else ``path`` relative to :func:`repository_root` (so that a notebook, which runs
    in ``notebooks/``, reads ``demo_output/...`` as a user typing it at the repository root means it; outside a
    checkout, relative to the current folder)."""
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
        raise FileNotFoundError(
            f"Expected a {name} under {folder} but found none: run `make demo` first, or point "
            f"ARN_CHECKPOINT at a checkpoint"
        )
    return found[-1]


#: The sub-folder of a run that each command writes into when it is given one of the run's checkpoints.
STAGE_FOLDERS = {"fit": "resume", "validate": "validate", "test": "test", "predict": "predict"}
#: The file, in a W&B run's folder, that names the W&B run (and the W&B run's config names the folder).
WANDB_LINK_FILE = "wandb_run.json"


def checkpoint_run(ckpt_path: PathLike) -> Path | None:
    """The run folder of a checkpoint ``<run>/checkpoints/<name>.ckpt`` whose ``<run>`` holds a ``config.yaml``, else
    None."""
    path = Path(ckpt_path)
    run = path.parent.parent
    if path.parent.name == "checkpoints" and (run / "config.yaml").is_file():
        return run
    return None


#: ``--ckpt_path`` values that name a checkpoint of a run rather than a file (Lightning's spelling).
CHECKPOINT_ALIASES = ("last", "best")


def run_of_config(config_file: PathLike) -> Path | None:
    """The run folder a ``--config`` file belongs to: its own folder (``<run>/config.yaml``) or the one above it
    (``<run>/test/config.yaml``), whichever holds a ``config.yaml`` and a ``checkpoints/`` folder; else None."""
    folder = Path(config_file).resolve().parent
    for candidate in (folder, folder.parent):
        if (candidate / "config.yaml").is_file() and (candidate / "checkpoints").is_dir():
            return candidate
    return None


def best_checkpoint(checkpoints: PathLike, monitor: str) -> Path:
    """The best checkpoint of a run's ``checkpoints/`` folder on ``monitor``, from Lightning's own bookkeeping: every
    checkpoint of the folder records the ``ModelCheckpoint``'s best file and score when it was saved; of the
    recorded files still there (looked up by name when the run folder was moved), the one with the best score (the
    callback's ``mode``). Not only ``last.ckpt``'s record: it is saved at the epoch's last batch, before that epoch's
    validation, so it records the best of the epochs before, and a resumed fit restarts from that record.

    Raises:
        FileNotFoundError: no recorded best checkpoint is in the folder (a run that never validated).
        CheckpointError: a checkpoint of the folder cannot be read (names the file).
    """
    from arn_lightning.checkpoint_file import load_checkpoint_file

    checkpoints = Path(checkpoints)
    scores: dict[Path, float] = {}
    sign = 1.0
    for path in sorted(checkpoints.glob("*.ckpt")):
        checkpoint = load_checkpoint_file(path, mmap=True)
        for key, state in (checkpoint.get("callbacks") or {}).items():
            if not isinstance(state, dict) or state.get("monitor") != monitor or state.get("best_model_score") is None:
                continue
            sign = -1.0 if "'mode': 'min'" in str(key) else 1.0
            recorded = Path(str(state.get("best_model_path") or ""))
            found = next((p for p in (recorded, checkpoints / recorded.name) if recorded.name and p.is_file()), None)
            if found is not None:
                scores[found] = float(state["best_model_score"])
        del checkpoint
    if not scores:
        raise FileNotFoundError(
            f"Expected a checkpoint in {checkpoints} to record a best checkpoint on {monitor} that is still there but "
            f"none does (a run that never validated has no best checkpoint); use --ckpt_path last or a checkpoint's "
            f"path"
        )
    return max(scores, key=lambda path: (sign * scores[path], path.stat().st_mtime_ns))


def resolve_checkpoint_alias(alias: str, checkpoints: PathLike, monitor: str) -> Path:
    """The file ``--ckpt_path last`` / ``best`` names in a run's ``checkpoints/`` folder: ``last.ckpt``, or
    :func:`best_checkpoint` on ``monitor``.

    Raises:
        ValueError: ``alias`` is neither ``last`` nor ``best``.
        FileNotFoundError: the checkpoint it names is not there (the message names the file).
    """
    checkpoints = Path(checkpoints)
    if alias == "best":
        return best_checkpoint(checkpoints, monitor)
    if alias != "last":
        raise ValueError(f"Expected --ckpt_path to be one of {list(CHECKPOINT_ALIASES)} or a file but got {alias!r}")
    last = checkpoints / LAST_CHECKPOINT
    if not last.is_file():
        raise FileNotFoundError(f"Expected the run's latest checkpoint {last} but there is no such file")
    return last


def next_free_folder(parent: PathLike, stem: str) -> Path:
    """``parent/stem`` if it does not exist, else the first free ``parent/stem-1``, ``stem-2``, ... (an earlier
    output is never reused)."""
    parent = Path(parent)
    candidate, number = parent / stem, 0
    while candidate.exists():
        number += 1
        candidate = parent / f"{stem}-{number}"
    return candidate


def run_folder(trainer: Any) -> Path:
    """The folder of the trainer's run (module docstring): set by the CLI for a run of another run's checkpoint,
    else ``<save_dir>/<project>/<run id>`` with a W&B logger, else ``trainer.log_dir`` (broadcast from rank 0, so
    every process must call it)."""
    from lightning.pytorch.loggers import WandbLogger

    planned = getattr(trainer, "arn_run_folder", None)
    if planned is not None:
        return Path(planned)
    logger = trainer.logger
    if isinstance(logger, WandbLogger):
        folder = None
        if trainer.is_global_zero:
            folder = str(Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / str(logger.version))
        return Path(trainer.strategy.broadcast(folder))
    return Path(trainer.log_dir or trainer.default_root_dir)


__all__ = [
    "CHECKPOINT_ALIASES",
    "DEMO_RUNS",
    "LAST_CHECKPOINT",
    "STAGE_FOLDERS",
    "WANDB_LINK_FILE",
    "best_checkpoint",
    "checkpoint_run",
    "latest_checkpoint",
    "next_free_folder",
    "repository_root",
    "resolve_checkpoint_alias",
    "resolve_from_repository",
    "run_folder",
    "run_of_config",
]
