"""The ablation study of the paper's Tables 3 and 4 on the synthetic Action Genome (``arn-lightning ablate``).

Each row of a table is a packaged config ``ablation/<row>`` layered on the packaged base config ``synthetic_demo``
(:mod:`arn_lightning.configs`: the files ship inside the package, so the study runs from any folder);
each (row, seed) run trains through the LightningCLI and tests its best checkpoint exactly as ``make demo`` does
(:func:`arn_lightning.experiments.demo.run_cli`, :func:`arn_lightning.experiments.demo.score_checkpoint`), in its own
folder
``<out>/runs/<row>/seed<k>/``:

- ``settings.json``: the settings of the run (written first; a later command with other settings is refused);
- ``train/``: the fit's run folder (CSV logs, ``config.yaml``, ``checkpoints/last.ckpt`` and the best checkpoint);
- ``metrics_test.json`` and ``predictions_test.jsonl``: the test of the best checkpoint (its presence marks the run
  finished); ``run.json``: the wall time of the run.

Rerunning the same command skips finished runs, resumes an interrupted fit from its ``last.ckpt`` (exact resume,
``docs/runs.md``) and refits a run that stopped before its first checkpoint. ``ablation.json`` and ``ablation.md``
are rewritten (atomically) after every finished run. The paper's numbers are those of Tables 3 and 4 (SGDet on
Action Genome, no constraint); see ``docs/ablation.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arn_lightning.atomic import atomic_write_json, atomic_write_text
from arn_lightning.configs import packaged_config

#: The packaged base config of every row (``make demo``'s).
BASE_CONFIG_NAME = "synthetic_demo"

#: Rows of each table, in the paper's order, with their titles.
TABLES: dict[str, list[tuple[str, str]]] = {
    "t3": [
        ("t3_row1_baseline_ce", "Baseline (CE)"),
        ("t3_row2_focal", "+ focal"),
        ("t3_row3_clip", "+ CLIP"),
        ("t3_row4_pap", "+ PAP"),
        ("t3_row5_full", "+ HA (full ARN)"),
    ],
    "t4": [
        ("t4_model1_add", "Model I (add)"),
        ("t4_model2_mlp", "Model II (mlp)"),
        ("t4_ours_conditional", "Ours (conditional)"),
    ],
}
ROW_CHOICES = ("t3", "t4", "all")
#: The columns of the paper's tables (no constraint), then the other mR definition (docs/metrics.md).
PAPER_COLUMNS = ("no/R@10", "no/R@50", "no/mR@10", "no/mR@50")
COLUMNS = (*PAPER_COLUMNS, "no/mR_per_frame@10", "no/mR_per_frame@50")
#: The paper's numbers in % (SGDet, Action Genome, no constraint: R@10, R@50, mR@10, mR@50); Tables 3 and 4.
PAPER: dict[str, tuple[float, float, float, float]] = {
    "t3_row1_baseline_ce": (28.4, 44.3, 19.6, 39.3),
    "t3_row2_focal": (31.7, 45.4, 25.6, 44.8),
    "t3_row3_clip": (34.4, 51.7, 27.1, 48.5),
    "t3_row4_pap": (35.3, 52.2, 27.9, 49.8),
    "t3_row5_full": (37.6, 54.1, 29.7, 51.9),
    "t4_model1_add": (35.0, 51.5, 27.3, 48.9),
    "t4_model2_mlp": (36.9, 53.0, 29.3, 51.4),
    "t4_ours_conditional": (37.6, 54.1, 29.7, 51.9),
}
#: Association strength of the generated root unless ``--association`` is given (docs/ablation.md).
DEFAULT_ASSOCIATION = 0.9
#: The test output of a run (``prediction_writer.METRICS_FILE``; not imported, which would load Lightning).
METRICS_FILE = "metrics_test.json"
SETTINGS_FILE = "settings.json"
OUT_SETTINGS_FILE = "ablation_settings.json"
#: Version of the run layout and of the settings; a change makes earlier results incomparable.
LAYOUT_VERSION = 1


@dataclass(frozen=True)
class Size:
    """One size of the study: the synthetic root's generation settings and the LightningCLI overrides of training.

    Attributes:
        videos: synthetic videos (train + test).
        frames: annotated frames per video.
        frame_size: ``(width, height)`` of the frames in pixels.
        data_seed: seed of the synthetic root.
        overrides: LightningCLI arguments applied after the base and row configs.
    """

    videos: int
    frames: int
    frame_size: tuple[int, int]
    data_seed: int
    overrides: tuple[str, ...]


#: ``demo``: the data and training of ``make demo`` (``arn-lightning demo``'s defaults: 240 videos of 8 frames at
#: 320x240, seed 0; the packaged ``synthetic_demo`` config unchanged: 4 epochs). ``tiny``: a seconds-long run for
#: tests and the wheel's smoke test (a 16-video root, a 16-wide model, 3 training steps).
SIZES: dict[str, Size] = {
    "demo": Size(videos=240, frames=8, frame_size=(320, 240), data_seed=0, overrides=()),
    "tiny": Size(
        videos=16,
        frames=4,
        frame_size=(160, 120),
        data_seed=0,
        overrides=(
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=3",
            "--trainer.limit_val_batches=1",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--model.arch.hidden_dim=16",
            "--model.arch.nheads=2",
            "--model.arch.ffn_dim=32",
            "--model.arch.enc_layers=1",
            "--model.arch.entity_layers=1",
            "--model.arch.predicate_layers=1",
            "--model.arch.num_queries=4",
            "--model.optim.lr_drop_epoch=2",
            "--data.resize_shorter=48",
            "--data.resize_longer=64",
            "--data.batch_size=2",
            "--data.eval_batch_size=4",
            "--report.num_images=1",
        ),
    ),
}


class AblationError(Exception):
    """A setting or input of the study is wrong; ``exit_code`` is what the command exits with (1 or 2)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def rows_of(choice: str) -> list[str]:
    """The row names of ``--rows``: ``t3``, ``t4`` or ``all`` (Table 3 then Table 4), or a comma-separated list of
    row names (e.g. ``t3_row3_clip,t3_row5_full``: re-measure some rows), in the paper's order.

    Raises:
        AblationError: (exit 2) any other value, naming the choices.
    """
    every = [row for table in TABLES.values() for row, _ in table]
    if choice in ROW_CHOICES:
        tables = list(TABLES) if choice == "all" else [choice]
        return [row for table in tables for row, _ in TABLES[table]]
    names = [name.strip() for name in choice.split(",") if name.strip()]
    unknown = [name for name in names if name not in every]
    if not names or unknown:
        raise AblationError(
            f"--rows: Expected one of {', '.join(ROW_CHOICES)} or comma-separated row names of {', '.join(every)} "
            f"but got {choice!r}",
            exit_code=2,
        )
    return [row for row in every if row in names]


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def base_config() -> Path:
    """The packaged base config file of every row (:data:`BASE_CONFIG_NAME`)."""
    return packaged_config(BASE_CONFIG_NAME)


def row_config(row: str) -> Path:
    """The packaged ablation config file of ``row`` (``ablation/<row>``, in the package's ``configs/``)."""
    return packaged_config(f"ablation/{row}")


def study_settings(size: str, root: Path, association: float | None, accelerator: str) -> dict[str, Any]:
    """The settings every run of one ``--out`` must share (``ablation_settings.json``).

    Args:
        size: ``demo`` or ``tiny``.
        root: the dataset root (resolved).
        association: the generation strength of the root; None for a root given with ``--root``.
        accelerator: Lightning's accelerator of the fits.
    """
    return {
        "layout": LAYOUT_VERSION,
        "size": size,
        "root": str(root),
        "association": association,
        "accelerator": accelerator,
        "base_config_sha256": file_sha256(base_config()),
    }


def settings_difference(stored: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first setting whose value differs, as ``"<name>: <stored> there, <current> now"``; None if all agree."""
    for key in sorted(set(stored) | set(current)):
        if stored.get(key) != current.get(key):
            return f"{key}: {stored.get(key)!r} there, {current.get(key)!r} now"
    return None


def check_settings(path: Path, current: dict[str, Any]) -> None:
    """Refuse a folder whose stored settings (``path``, JSON) differ from ``current``.

    Raises:
        AblationError: (exit 2) a differing setting, named, or an unreadable settings file.
    """
    if not path.is_file():
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AblationError(f"{path}: Expected the JSON settings of an earlier ablation but got: {exc}", 2) from exc
    difference = settings_difference(stored, current)
    if difference is not None:
        raise AblationError(
            f"{path}: the results there were made with other settings ({difference}); refusing to mix them: "
            "use another --out or the same settings",
            exit_code=2,
        )


def prepare_out(out: Path) -> None:
    """Create ``out`` and check that it is writable.

    Raises:
        AblationError: (exit 1) ``out`` cannot be created or written, named with the reason.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise AblationError(f"--out {out}: Expected a writable folder but got: {exc}") from exc


def prepare_root(root: Path | None, out: Path, size: Size, association: float) -> tuple[Path, float | None]:
    """The dataset root of the study: ``root`` as given (checked), or ``<out>/data`` generated unless there.

    Args:
        root: the ``--root`` folder, or None to generate one.
        out: the study's folder.
        size: the size's generation settings.
        association: generation strength (both rules; :func:`arn_lightning.data.synth.generate`).

    Returns:
        The resolved root and the association it was generated with (None for a given root).

    Raises:
        AblationError: (exit 1) the root is not an AG-format root (the loader's message), or ``<out>/data`` holds a
            root generated with another strength.
    """
    from arn_lightning.data.synth import generate, read_association

    if root is None:
        root = out / "data"
        if not (root / "annotations").is_dir():
            print(f"[ablate] generating the synthetic Action Genome (association {association:g}) into {root}")
            generate(
                root,
                videos=size.videos,
                frames=size.frames,
                size=size.frame_size,
                seed=size.data_seed,
                association=association,
            )
        found = read_association(root)
        if found != {"object": association, "predicate": association}:
            raise AblationError(
                f"{root}: Expected a synthetic root generated with association {association:g} but it holds "
                f"{found}; use another --out"
            )
        return root.resolve(), association
    check_root(root)
    return root.resolve(), None


def check_root(root: Path) -> None:
    """Check that ``root`` is an AG-format root with a train and a test split (SGDet filtering).

    Raises:
        AblationError: (exit 1) the loader's message, naming the file.
    """
    from arn_lightning.data.ag import AnnotationError, load_annotations

    try:
        annotations = load_annotations(root, "sgdet")
        missing = [split for split in ("train", "test") if not annotations.frames(split)]
    except (AnnotationError, ValueError, OSError) as exc:
        raise AblationError(f"--root {root}: Expected an Action Genome root but got: {exc}") from exc
    if missing:
        raise AblationError(f"--root {root}: Expected kept frames in the train and test splits but {missing} has none")


def measured_association(root: Path) -> dict[str, Any]:
    """The association strength present in ``root`` per split (``arn-lightning stats``, ``docs/stats.md``)."""
    from arn_lightning.data.ag import load_annotations
    from arn_lightning.data.stats import association_stats

    annotations = load_annotations(root, "sgdet")
    return {split: association_stats(annotations.frames(split)) for split in ("train", "test")}


def run_folder(out: Path, row: str, seed: int) -> Path:
    """The folder of one (row, seed) run."""
    return out / "runs" / row / f"seed{seed}"


def _fit_run_folder(run: Path) -> Path | None:
    """The fit's run folder under ``<run>/train`` (the one holding ``checkpoints/last.ckpt``), if any.

    Raises:
        AblationError: (exit 1) more than one such folder (a run folder not made by this command).
    """
    found = sorted(p.parent.parent for p in (run / "train").glob("**/checkpoints/last.ckpt"))
    if len(found) > 1:
        raise AblationError(f"{run}: Expected one fit with a last.ckpt under train/ but found {len(found)}")
    return found[0] if found else None


def train_and_test(run: Path, root: Path, row: str, seed: int, size: Size, accelerator: str) -> dict[str, float]:
    """Fit one (row, seed) run (resuming from its ``last.ckpt`` if one is there) and test its best checkpoint.

    Returns:
        The test metrics (also in ``<run>/metrics_test.json``).
    """
    from arn_lightning.experiments.demo import score_checkpoint

    previous = _fit_run_folder(run)
    if previous is not None:
        fit, fit_folder = _resume_fit(previous, row, seed)
    else:
        fit, fit_folder = _fresh_fit(run, root, row, seed, size, accelerator)
    best_path = fit.trainer.checkpoint_callback.best_model_path
    best = Path(best_path) if best_path else fit_folder / "checkpoints" / "last.ckpt"
    print(f"[ablate] testing {row} seed {seed}: {best.name}")
    return score_checkpoint(fit_folder / "config.yaml", root, run, best, [])


def _resume_fit(previous: Path, row: str, seed: int) -> tuple[Any, Path]:
    """Continue the fit of run folder ``previous`` from its ``last.ckpt``: ``(the finished CLI, previous)``."""
    from arn_lightning.experiments.demo import run_cli

    print(f"[ablate] resuming {row} seed {seed} from {previous / 'checkpoints' / 'last.ckpt'}")
    fit = run_cli(
        [
            "fit",
            "--config",
            str(previous / "config.yaml"),
            f"--ckpt_path={previous / 'checkpoints' / 'last.ckpt'}",
        ]
    )
    return fit, previous


def _fresh_fit(run: Path, root: Path, row: str, seed: int, size: Size, accelerator: str) -> tuple[Any, Path]:
    """Fit row ``row`` at ``seed`` from scratch under ``<run>/train``: ``(the finished CLI, its run folder)``."""
    from arn_lightning.experiments.demo import run_cli

    shutil.rmtree(run / "train", ignore_errors=True)  # a fit stopped before its first checkpoint: start again
    print(f"[ablate] training {row} seed {seed}")
    fit = run_cli(
        [
            "fit",
            "--config",
            str(base_config()),
            "--config",
            str(row_config(row)),
            f"--data.root={root}",
            f"--trainer.default_root_dir={run / 'train'}",
            f"--trainer.logger.init_args.save_dir={run / 'train'}",
            f"--trainer.accelerator={accelerator}",
            f"--seed_everything={seed}",
            f"--data.seed={seed}",
            *size.overrides,
        ]
    )
    return fit, Path(fit.trainer.log_dir)


def read_metrics(run: Path) -> dict[str, Any] | None:
    """The ``metrics_test.json`` of a finished run (None if the run has not finished)."""
    path = run / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise AblationError(f"{path}: Expected the JSON test metrics of a finished run but got: {error}", 2) from error


def _summary(values: list[float]) -> dict[str, float | None]:
    """Mean, sample standard deviation (ddof 1; None with one value), min and max of ``values``."""
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if array.size > 1 else None,
        "min": float(array.min()),
        "max": float(array.max()),
    }


def build_table(out: Path, rows: list[str], seeds: int) -> dict[str, list[dict[str, Any]]]:
    """The table rows of the finished runs in ``out``, per table (``t3``, ``t4``), in the paper's order.

    Each row: ``row``, ``title``, ``paper`` (column -> %), ``seeds`` (finished), ``runs`` (seed -> column ->
    value, the values of the run's ``metrics_test.json``), ``summary`` (column -> mean / std / min / max; empty
    with no finished seed).
    """
    tables: dict[str, list[dict[str, Any]]] = {}
    for table, entries in TABLES.items():
        for row, title in entries:
            if row not in rows:
                continue
            runs = {}
            for seed in range(seeds):
                metrics = read_metrics(run_folder(out, row, seed))
                if metrics is not None:
                    runs[str(seed)] = {column: float(metrics[column]) for column in COLUMNS}
            summary = {column: _summary([r[column] for r in runs.values()]) for column in COLUMNS} if runs else {}
            tables.setdefault(table, []).append(
                {
                    "row": row,
                    "title": title,
                    "paper": dict(zip(PAPER_COLUMNS, PAPER[row])),
                    "seeds": [int(s) for s in runs],
                    "runs": runs,
                    "summary": summary,
                }
            )
    return tables


def _cell(summary: dict[str, Any], column: str) -> str:
    """``mean ± std`` in % (``mean`` alone with one seed; ``-`` with none)."""
    if not summary:
        return "-"
    stats = summary[column]
    text = f"{100 * stats['mean']:.1f}"
    return text if stats["std"] is None else f"{text} ± {100 * stats['std']:.1f}"


def _uc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_markdown(report: dict[str, Any]) -> str:
    """``ablation.md``: the tables in % with the paper's numbers, the settings and the measured association."""
    settings = report["settings"]
    lines = [
        "# Ablation of ARN on the synthetic Action Genome (paper Tables 3 and 4)",
        "",
        f"Size `{settings['size']}`, accelerator `{settings['accelerator']}`, root `{settings['root']}` "
        f"(generated with association {settings['association']}; None: given with --root), "
        f"seeds 0..{report['seeds'] - 1}.",
        "",
        "SGDet, no constraint, in %: **mean ± sample std over the finished seeds** (mean alone with one seed). "
        "`mR` is the project's default, aggregated mean recall (the paper's columns); `mRpf` is the per-frame "
        "definition (docs/metrics.md). `paper` is the paper's figure on Action Genome, for reference only.",
        "",
    ]
    lines += _markdown_tables(report["tables"])
    lines += _markdown_association(report["association_measured"])
    return "\n".join(lines) + "\n"


def _markdown_tables(tables: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One Markdown table per paper table (:func:`build_table`'s rows), each followed by an empty line."""
    lines: list[str] = []
    names = {"R@10": "R@10", "R@50": "R@50", "mR@10": "mR@10", "mR@50": "mR@50"}
    for table, rows in tables.items():
        lines += [f"## Table {table[1:]}", ""]
        head = ["row", "seeds"] + [f"{n} (paper)" for n in names] + ["mRpf@10", "mRpf@50"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in rows:
            cells = [row["title"], str(len(row["seeds"]))]
            cells += [f"{_cell(row['summary'], column)} ({row['paper'][column]:.1f})" for column in PAPER_COLUMNS]
            cells += [_cell(row["summary"], column) for column in COLUMNS[len(PAPER_COLUMNS) :]]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _markdown_association(association: dict[str, Any]) -> list[str]:
    """The section on the association measured in the root (split -> ``arn-lightning stats`` coefficients)."""
    lines = [
        "## Association present in the root",
        "",
        "Uncertainty coefficient U(Y|X) (0: X tells nothing about Y, 1: X determines Y), as `arn-lightning stats`.",
        "",
        "| split | objects | object -> attention | -> spatial | -> contacting | object mean | predicate -> "
        "predicate mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for split, stats in association.items():
        objects = stats["object_to_predicate"]
        lines.append(
            f"| {split} | {stats['objects']} | {_uc(objects['attention'])} | {_uc(objects['spatial'])} | "
            f"{_uc(objects['contacting'])} | {_uc(objects['mean'])} | {_uc(stats['predicate_to_predicate']['mean'])} |"
        )
    return lines


def write_report(out: Path, settings: dict[str, Any], association: dict[str, Any], rows: list[str], seeds: int) -> dict:
    """Write ``ablation.json`` and ``ablation.md`` (atomically) from the finished runs; returns the report."""
    report = {
        "settings": settings,
        "seeds": seeds,
        "columns": list(COLUMNS),
        "mr_definition": "no/mR@K: aggregated mean recall (the project default, the paper's columns); "
        "no/mR_per_frame@K: per-frame mean recall (docs/metrics.md)",
        "spread": "std: sample standard deviation over the finished seeds (ddof 1, null with one seed); "
        "min and max over the same seeds",
        "values": "fractions in [0, 1], as in metrics_test.json; the paper's numbers in %",
        "association_measured": association,
        "tables": build_table(out, rows, seeds),
    }
    atomic_write_json(out / "ablation.json", report, indent=2, sort_keys=False)
    atomic_write_text(out / "ablation.md", format_markdown(report))
    return report


def run_ablation(
    rows: str,
    seeds: int,
    size: str,
    out: Path,
    root: Path | None = None,
    association: float = DEFAULT_ASSOCIATION,
    accelerator: str = "cpu",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or continue) the study; see the module docstring.

    Args:
        rows: ``t3``, ``t4`` or ``all``.
        seeds: seeds per row (0 .. seeds-1; training seed and sampler seed).
        size: ``demo`` or ``tiny`` (:data:`SIZES`).
        out: the study's folder.
        root: an existing AG-format root; None generates ``<out>/data``.
        association: strength of the generated root (ignored with ``root``).
        accelerator: Lightning accelerator of the fits (``cpu``, ``gpu``, ``auto``).
        log: where progress lines go.

    Returns:
        The report written to ``ablation.json``.

    Raises:
        AblationError: a bad setting (exit 2), a folder with other settings (exit 2), an unwritable ``out`` or a
            root that is not AG format (exit 1).
    """
    names = rows_of(rows)
    _check_study_args(seeds, size, association)
    out = Path(out).resolve()
    settings, resolved = _prepare_study(out, root, size, association, accelerator)
    association_found = measured_association(resolved)
    report = write_report(out, settings, association_found, names, seeds)
    for seed in range(seeds):
        for row in names:
            start = _run_once(run_folder(out, row, seed), resolved, row, seed, settings, accelerator, log)
            if start is None:
                continue
            report = write_report(out, settings, association_found, names, seeds)
            log(f"[ablate] {row} seed {seed}: done in {time.time() - start:.0f} s")
    log(f"[ablate] tables in {out / 'ablation.md'} and {out / 'ablation.json'}")
    return report


def _check_study_args(seeds: int, size: str, association: float) -> None:
    """Refuse (exit 2) fewer than one seed, an unknown size or an association outside [0, 1]."""
    if seeds < 1:
        raise AblationError(f"--seeds: Expected at least 1 but got {seeds}", exit_code=2)
    if size not in SIZES:
        raise AblationError(f"--size: Expected one of {', '.join(SIZES)} but got {size!r}", exit_code=2)
    if not 0.0 <= association <= 1.0 or math.isnan(association):
        raise AblationError(f"--association: Expected a number in [0, 1] but got {association}", exit_code=2)


def _prepare_study(
    out: Path, root: Path | None, size: str, association: float, accelerator: str
) -> tuple[dict[str, Any], Path]:
    """Check ``out``'s settings, prepare the root and record the settings: ``(settings, resolved root)``."""
    prepare_out(out)
    generated = association if root is None else None
    settings = study_settings(size, (out / "data" if root is None else Path(root)).resolve(), generated, accelerator)
    check_settings(out / OUT_SETTINGS_FILE, settings)  # before anything is generated or trained
    resolved, _ = prepare_root(root, out, SIZES[size], association)
    atomic_write_json(out / OUT_SETTINGS_FILE, settings, indent=2, sort_keys=False)
    return settings, resolved


def _run_once(
    run: Path,
    root: Path,
    row: str,
    seed: int,
    settings: dict[str, Any],
    accelerator: str,
    log: Callable[[str], None],
) -> float | None:
    """Train and test one (row, seed) run unless it finished earlier; returns its ``time.time()`` start (None:
    skipped). Raises :class:`AblationError` when the run folder holds other settings."""
    run_settings = {**settings, "row": row, "seed": seed, "row_config_sha256": file_sha256(row_config(row))}
    check_settings(run / SETTINGS_FILE, run_settings)
    if read_metrics(run) is not None:
        log(f"[ablate] {row} seed {seed}: finished earlier, skipped")
        return None
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run / SETTINGS_FILE, run_settings, indent=2, sort_keys=False)
    start = time.time()
    train_and_test(run, root, row, seed, SIZES[settings["size"]], accelerator)
    atomic_write_json(run / "run.json", {"wall_s": round(time.time() - start, 1)}, indent=2)
    return start
