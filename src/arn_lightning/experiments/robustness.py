"""The corruption robustness benchmark of a checkpoint (``arn-lightning robustness``, docs/robustness.md).

Each (corruption, severity) is a ``test`` of the checkpoint through the LightningCLI from the run's ``config.yaml``
(:func:`arn_lightning.experiments.demo.test_args`, the path ``arn-lightning test`` takes) with the data
module's ``corruption`` / ``corruption_severity`` set, so every frame of the test split is corrupted in the loader
workers (:mod:`arn_lightning.data.corruptions`) and scored by the project's metric. The results go to
``<run>/robustness/``:

- ``predictions_test_<name>_s<severity>.jsonl`` and ``metrics_test_<name>_s<severity>.json`` (``clean``: no
  corruption), the files ``test`` writes, renamed; the metrics file, moved last, marks a finished entry, and a rerun
  skips finished entries (resumable corruption by corruption, like ``ablate``);
- ``robustness.md``, ``robustness.csv``, ``robustness.json``: R@K, mR@K and mR_per_frame@K per constraint, clean and
  per corruption x severity, the relative drop from clean, and the mean over the corruptions;
- ``robustness.png`` (recall against severity, one line per corruption) and ``examples/<name>.png`` (the first test
  clip, clean on top, then one row per severity);
- ``settings.json``: the checkpoint, config and seed; a later command with other ones is refused.

Under DDP every process runs this loop (Lightning starts the others by rerunning the command); only the first one
renames files and writes the tables.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from arn_lightning.atomic import atomic_path, atomic_write_json, atomic_write_text
from arn_lightning.data.corruptions import (
    CORRUPTIONS,
    IMAGE_CORRUPTIONS,
    SEVERITIES,
    VIDEO_CORRUPTIONS,
    check_corruption,
    require_albumentations,
)
from arn_lightning.experiments.ablation import file_sha256, settings_difference
from arn_lightning.vocab import CONSTRAINTS

OUT_DIR = "robustness"
CLEAN = "clean"
SETTINGS_FILE = "settings.json"
#: Version of the folder layout and settings; a change makes earlier results incomparable.
LAYOUT_VERSION = 1
#: The metric families of the tables (``<constraint>/<family>@<K>`` in metrics_test.json).
FAMILIES = ("R", "mR", "mR_per_frame")
#: The K of robustness.md (the CSV and JSON hold every K of the metrics file).
TABLE_KS = (20, 50)
#: The metric plotted against severity.
PLOT_KEY = "no/R@20"


class RobustnessError(Exception):
    """A setting or input of the benchmark is wrong (the command exits 2)."""


def parse_corruptions(text: str) -> list[str]:
    """``all`` or comma-separated names of :data:`arn_lightning.data.corruptions.CORRUPTIONS` (order kept).

    Raises:
        RobustnessError: an unknown or repeated name, or an empty list.
    """
    if text.strip() == "all":
        return list(CORRUPTIONS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CORRUPTIONS]
    if unknown or not names or len(set(names)) != len(names):
        raise RobustnessError(
            f"--corruptions: Expected 'all' or distinct names among {', '.join(CORRUPTIONS)} but got {text!r}"
        )
    return names


def parse_severities(text: str) -> list[int]:
    """Severities as ``1-5``, ``1,3,5`` or a mix (``1-2,5``), sorted, each in 1..5.

    Raises:
        RobustnessError: a value that is not an integer in 1..5, or a reversed range.
    """
    found: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            low, _, high = part.partition("-")
            first, last = int(low), int(high or low)
            if first > last or first not in SEVERITIES or last not in SEVERITIES:
                raise ValueError(part)
            found.update(range(first, last + 1))
    except ValueError as exc:
        expected = "severities in 1..5 such as 1-5 or 1,3,5"
        raise RobustnessError(f"--severities: Expected {expected} but got {text!r}") from exc
    if not found:
        raise RobustnessError(f"--severities: Expected at least one severity in 1..5 but got {text!r}")
    return sorted(found)


def entry_name(name: str, severity: int) -> str:
    """The file tag of an entry: ``clean`` or ``<name>_s<severity>``."""
    return CLEAN if name == CLEAN else f"{name}_s{severity}"


def entry_files(out: Path, name: str, severity: int) -> tuple[Path, Path]:
    """``(predictions, metrics)`` of an entry in ``out``."""
    tag = entry_name(name, severity)
    return out / f"predictions_test_{tag}.jsonl", out / f"metrics_test_{tag}.json"


def read_entry(out: Path, name: str, severity: int) -> dict[str, Any] | None:
    """The metrics of a finished entry (both files there), else None."""
    predictions, metrics = entry_files(out, name, severity)
    if not (predictions.is_file() and metrics.is_file()):
        return None
    return json.loads(metrics.read_text(encoding="utf-8"))


def is_rank_zero() -> bool:
    """Whether this is the first process (Lightning's DDP launcher sets ``LOCAL_RANK`` / ``NODE_RANK``)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def read_config(config: Path) -> dict[str, Any]:
    """The run's LightningCLI config.

    Raises:
        RobustnessError: a missing or unreadable file, or one without ``data.root``.
    """
    try:
        loaded = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RobustnessError(f"--config {config}: Expected a LightningCLI config.yaml but got: {exc}") from exc
    if not isinstance(loaded, dict) or not (loaded.get("data") or {}).get("root"):
        raise RobustnessError(f"--config {config}: Expected a LightningCLI config with data.root but it has none")
    return loaded


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse an ``out`` whose ``settings.json`` differs from ``settings``; write it otherwise (first process).

    Raises:
        RobustnessError: a differing setting (named) or an unreadable settings file.
    """
    path = out / SETTINGS_FILE
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RobustnessError(f"{path}: Expected the JSON settings of an earlier benchmark but got: {exc}") from exc
        difference = settings_difference(stored, settings)
        if difference is not None:
            raise RobustnessError(
                f"{path}: the results there were made with other settings ({difference}); refusing to mix them: "
                "use another --out or the same checkpoint and config"
            )
    elif is_rank_zero():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, settings, indent=2, sort_keys=False)


def score_entry(config: Path, root: str, ckpt: Path, out: Path, name: str, severity: int, extra: list[str]) -> None:
    """Test the checkpoint under one corruption (or clean) and move its two files into ``out``.

    The test writes into ``out/work/<tag>/`` (removed after); its prediction file is moved first, its metrics file
    last, so a finished entry has both.
    """
    from arn_lightning.experiments.demo import test_args
    from arn_lightning.training.lightning_cli import build_cli

    work = out / "work" / entry_name(name, severity)
    if is_rank_zero():
        shutil.rmtree(work, ignore_errors=True)  # an interrupted earlier try of this entry
    args = [*extra]
    if name != CLEAN:
        args += [f"--data.corruption={name}", f"--data.corruption_severity={severity}"]
    # sys.argv stays the command's own: under DDP, Lightning starts the other processes by rerunning it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        build_cli(test_args(config, Path(root), work, ckpt, args))
    if not is_rank_zero():
        return
    predictions, metrics = entry_files(out, name, severity)
    os.replace(work / "predictions_test.jsonl", predictions)
    os.replace(work / "metrics_test.json", metrics)
    shutil.rmtree(work, ignore_errors=True)


def metric_keys(metrics: dict[str, Any]) -> list[str]:
    """The ``<constraint>/<family>@<K>`` keys of a metrics file, by constraint, family and K."""
    keys = [k for k in metrics if k.count("/") == 1 and "@" in k and k.split("/")[1].split("@")[0] in FAMILIES]
    order = {c: i for i, c in enumerate(CONSTRAINTS)}
    families = {f: i for i, f in enumerate(FAMILIES)}

    def rank(key: str) -> tuple[int, int, int]:
        constraint, rest = key.split("/")
        family, k = rest.split("@")
        return order.get(constraint, len(order)), families[family], int(k)

    return sorted(keys, key=rank)


def relative_drop(clean: float, value: float) -> float | None:
    """``(clean - value) / clean`` (None when clean is 0)."""
    return None if clean == 0 else (clean - value) / clean


def build_rows(
    out: Path, corruptions: Sequence[str], severities: Sequence[int]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The clean metrics and one row per finished (corruption, severity), then one ``mean`` row per severity (the
    mean over the corruptions finished at it) and one of severity ``all`` (the mean over every finished entry).
    A row: ``corruption``, ``severity``, ``values`` and ``drop`` (key -> relative drop from clean).

    Raises:
        RobustnessError: the clean entry has not finished.
    """
    clean_metrics = read_entry(out, CLEAN, 0)
    if clean_metrics is None:
        raise RobustnessError(f"{out}: Expected the clean entry (metrics_test_clean.json) but it has not finished")
    keys = metric_keys(clean_metrics)
    clean = {k: float(clean_metrics[k]) for k in keys}
    rows, by_severity = [], {}
    for name in corruptions:
        for severity in severities:
            metrics = read_entry(out, name, severity)
            if metrics is None:
                continue
            values = {k: float(metrics[k]) for k in keys}
            rows.append({"corruption": name, "severity": severity, "values": values})
            by_severity.setdefault(severity, []).append(values)
    everything = [row["values"] for row in rows]
    for severity, found in [*sorted(by_severity.items()), ("all", everything)] if everything else []:
        means = {k: float(np.mean([v[k] for v in found])) for k in keys}
        rows.append({"corruption": "mean", "severity": severity, "entries": len(found), "values": means})
    for row in rows:
        row["drop"] = {k: relative_drop(clean[k], row["values"][k]) for k in keys}
    return clean, rows


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_markdown(report: dict[str, Any]) -> str:
    """``robustness.md``: one table per constraint, values and relative drops in %."""
    settings, clean = report["settings"], report["clean"]
    columns = [f"{family}@{k}" for family in FAMILIES for k in TABLE_KS]
    names = [c.replace("mR_per_frame", "mRpf") for c in columns]
    drops = [f"mR@{TABLE_KS[-1]}", f"R@{TABLE_KS[-1]}"]
    lines = [
        "# Corruption robustness",
        "",
        f"Checkpoint `{settings['checkpoint']}`, config `{settings['config']}`, data seed {settings['seed']}. "
        "In %; `drop`: relative drop from clean, (clean - corrupted) / clean. `mR`: aggregated mean recall, "
        "`mRpf`: per-frame mean recall (docs/metrics.md). `mean`: over the corruptions finished at that severity "
        "(`all`: over every finished entry). Corruptions: docs/robustness.md.",
        "",
    ]
    for constraint in CONSTRAINTS:
        head = ["corruption", "severity", *names, *(f"drop {d}" for d in drops)]
        lines += [f"## {constraint} constraint", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        cells = [CLEAN, "-", *(_percent(clean.get(f"{constraint}/{c}")) for c in columns), "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
        for row in report["rows"]:
            cells = [row["corruption"], str(row["severity"])]
            cells += [_percent(row["values"].get(f"{constraint}/{c}")) for c in columns]
            cells += [_percent(row["drop"].get(f"{constraint}/{d}")) for d in drops]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def format_csv(report: dict[str, Any]) -> str:
    """``robustness.csv``: one line per (corruption, severity, metric key): value and relative drop (fractions)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["corruption", "severity", "metric", "value", "relative_drop"])
    for key, value in report["clean"].items():
        writer.writerow([CLEAN, 0, key, f"{value:.6f}", "0.000000"])
    for row in report["rows"]:
        for key, value in row["values"].items():
            drop = "" if row["drop"][key] is None else f"{row['drop'][key]:.6f}"
            writer.writerow([row["corruption"], row["severity"], key, f"{value:.6f}", drop])
    return buffer.getvalue()


def save_plot(report: dict[str, Any], path: Path, key: str = PLOT_KEY) -> None:
    """``robustness.png``: ``key`` in % against severity, one line per corruption (severity 0: clean), atomically."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    lines: dict[str, list[tuple[int, float]]] = {}
    for row in report["rows"]:
        if row["severity"] != "all":
            points = lines.setdefault(row["corruption"], [(0, report["clean"][key])])
            points.append((row["severity"], row["values"][key]))
    colours = matplotlib.colormaps["tab20"]
    for index, (name, points) in enumerate(lines.items()):
        xs, ys = zip(*sorted(points))
        style = {"color": colours(index % 20), "linewidth": 1, "linestyle": "--" if name in VIDEO_CORRUPTIONS else "-"}
        if name == "mean":
            style = {"color": "black", "linewidth": 3}
        axes.plot(xs, [100 * y for y in ys], marker="o", label=name, **style)
    axes.set_xlabel("severity (0: clean)")
    axes.set_ylabel(f"{key} (%)")
    axes.set_xticks(range(0, 6))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)


def write_report(out: Path, settings: dict[str, Any], corruptions: Sequence[str], severities: Sequence[int]) -> dict:
    """Write ``robustness.json`` / ``.md`` / ``.csv`` / ``.png`` (atomically) from the finished entries."""
    clean, rows = build_rows(out, corruptions, severities)
    report = {
        "settings": settings,
        "corruptions": list(corruptions),
        "severities": list(severities),
        "values": "fractions in [0, 1], as in metrics_test.json; drop: (clean - corrupted) / clean",
        "clean": clean,
        "rows": rows,
    }
    atomic_write_json(out / "robustness.json", report, indent=2, sort_keys=False)
    atomic_write_text(out / "robustness.md", format_markdown(report))
    atomic_write_text(out / "robustness.csv", format_csv(report))
    if rows:
        save_plot(report, out / "robustness.png")
    return report


def first_test_clip(data: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """The decoded ``uint8 [3, H, W]`` frames and keys of the first test clip of the config's data module."""
    from arn_lightning.data.datamodule import AGDataModule
    from arn_lightning.data.frames import frame_path, read_frame

    settings = {k: v for k, v in data.items() if k not in ("corruption", "corruption_severity")}
    module = AGDataModule(**settings)
    module.setup("test")
    dataset = module.datasets["test"]
    frames = [dataset.frames[index] for index in dataset.clips[0].frames]
    images = [read_frame(frame_path(dataset.frames_dir, f.key), (f.width, f.height)) for f in frames]
    return images, [f.key for f in frames]


def save_examples(out: Path, data: dict[str, Any], corruptions: Sequence[str], severities: Sequence[int]) -> None:
    """``examples/<name>.png``: the first test clip's frames side by side, clean on top, one row per severity."""
    from PIL import Image

    from arn_lightning.data.corruptions import ClipCorruption

    images, keys = first_test_clip(data)
    seed = int(data.get("seed", 0))
    for name in corruptions:
        path = out / "examples" / f"{name}.png"
        rows = [images] + [ClipCorruption(name, s, seed)(images, keys) for s in severities]
        strips = [np.concatenate([im.permute(1, 2, 0).numpy() for im in row], axis=1) for row in rows]
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Image.fromarray(np.concatenate(strips, axis=0)).save(tmp, format="PNG")


def run_robustness(
    config: Path,
    ckpt: Path,
    corruptions: Sequence[str],
    severities: Sequence[int],
    out: Path | None = None,
    num_workers: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """Run (or continue) the benchmark; see the module docstring.

    Args:
        config: the run's ``config.yaml`` (LightningCLI).
        ckpt: the checkpoint to test.
        corruptions: names of :data:`~arn_lightning.data.corruptions.CORRUPTIONS`.
        severities: severities in 1..5.
        out: the output folder (default ``<config's folder>/robustness``).
        num_workers: DataLoader workers of the tests (None: the config's ``data.num_workers``).
        log: where progress lines go.

    Returns:
        The report of ``robustness.json`` (None in a process other than the first one under DDP).

    Raises:
        RobustnessError: an unknown corruption or severity, a missing checkpoint or config, or an ``out`` holding
            results of another checkpoint, config or seed.
    """
    for name in corruptions:
        for severity in severities:
            try:
                check_corruption(name, severity)
            except ValueError as exc:
                raise RobustnessError(str(exc)) from exc
    if any(name in IMAGE_CORRUPTIONS for name in corruptions):
        try:
            require_albumentations()
        except ImportError as exc:
            raise RobustnessError(str(exc)) from exc
    config, ckpt = Path(config).resolve(), Path(ckpt).resolve()
    if not ckpt.is_file():
        raise RobustnessError(f"--ckpt_path: Expected a checkpoint file but {ckpt} does not exist")
    data = read_config(config)["data"]
    out = Path(out).resolve() if out is not None else config.parent / OUT_DIR
    settings = {
        "layout": LAYOUT_VERSION,
        "checkpoint": str(ckpt),
        "checkpoint_sha256": file_sha256(ckpt),
        "config": str(config),
        "config_sha256": file_sha256(config),
        "seed": int(data.get("seed", 0)),
    }
    check_settings(out, settings)
    extra = [] if num_workers is None else [f"--data.num_workers={num_workers}"]
    # Severity by severity (every corruption at the first severity, then the next), so a usable table exists early.
    entries = [(CLEAN, 0)] + [(name, severity) for severity in severities for name in corruptions]
    for name, severity in entries:
        if read_entry(out, name, severity) is not None:
            log(f"[robustness] {entry_name(name, severity)}: finished earlier, skipped")
            continue
        log(f"[robustness] testing {entry_name(name, severity)}")
        score_entry(config, str(data["root"]), ckpt, out, name, severity, extra)
        if is_rank_zero():
            write_report(out, settings, corruptions, severities)
    if not is_rank_zero():
        return None
    save_examples(out, data, corruptions, severities)
    shutil.rmtree(out / "work", ignore_errors=True)
    report = write_report(out, settings, corruptions, severities)
    log(f"[robustness] tables in {out / 'robustness.md'}, .csv and .json; plot {out / 'robustness.png'}")
    return report
