"""A trained checkpoint as a model folder you can share (``arn-lightning export --format safetensors``).

:func:`export_model_folder` writes, atomically (a hidden staging folder renamed into place), the folder format of
:mod:`arn_lightning.weights.folder`: ``model.safetensors`` (the model and postprocess weights, no pickle),
``config.json`` (everything the model and its postprocess need, and the checkpoint's SHA-256) and a ``README.md``
model card generated from the run: the architecture, the run's ``config.yaml``, the data root's statistics when the
root is on this machine, the headline table of ``metrics_test.json`` (R@K and both mR@K definitions per constraint),
the best and last epochs of ``fit_summary.json``, the training time, the licence and the citation. Every place that
takes a checkpoint also takes the folder (:func:`arn_lightning.build.read_model_source`), with the same predictions.
"""

from __future__ import annotations

import json
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from arn_lightning import __version__
from arn_lightning._types import PathLike
from arn_lightning.atomic import replace_folder
from arn_lightning.build import InferenceModule, plain_hparams, read_checkpoint, transform_settings
from arn_lightning.checkpoint_file import CheckpointError
from arn_lightning.training.callbacks import FIT_SUMMARY_FILE
from arn_lightning.training.lit_module import ARNLitModule
from arn_lightning.training.prediction_writer import METRICS_FILE
from arn_lightning.training.runs import checkpoint_run
from arn_lightning.vocab import CONSTRAINTS
from arn_lightning.weights.folder import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, folder_config
from arn_lightning.weights.registry import sha256_file

#: Hyperparameters that describe where a run wrote its files on its machine, not the model (left out of the folder).
LOCAL_KEYS = ("predictions_dir",)
#: The K of the card's results table.
TABLE_KS = (10, 20, 50, 100)
#: The reference the card asks users to cite (the paper this project implements, as the repository README gives it).
CITATION = """@inproceedings{wang2025arn,
  title     = {End-to-End Entity-Predicate Association Reasoning for Dynamic Scene Graph Generation},
  author    = {Wang, Liwei and Zhang, Yanduo and Lu, Tao and Liu, Fang and Zhang, Huiqin and Ma, Jiayi and
               Zhou, Huabing},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2025}
}"""


@dataclass
class FolderReport:
    """What :func:`export_model_folder` wrote: the folder, its files' sizes in bytes, and the run files the card
    was generated from (None where none was found)."""

    folder: Path
    sizes: dict[str, int]
    run: Path | None
    metrics: Path | None
    data_root: Path | None


def _weights(module: InferenceModule) -> dict[str, Any]:
    """The module's tensors, each its own contiguous copy (safetensors refuses shared or strided storage)."""
    return {key: value.detach().contiguous().clone() for key, value in module.state_dict().items()}


def find_metrics(checkpoint: Path, run: Path | None) -> Path | None:
    """The ``metrics_test.json`` of ``checkpoint``: among the run folder's (``<run>/``, ``<run>/test*/``) and the
    checkpoint folder's, the newest one whose tested checkpoint is this file, else the newest one."""
    folders = [checkpoint.parent] + ([run, *sorted(run.glob("test*"))] if run is not None else [])
    found = sorted({p for f in folders if (p := f / METRICS_FILE).is_file()}, key=lambda p: -p.stat().st_mtime)
    for path in found:
        tested = (_read_json(path).get("checkpoint") or {}).get("path")
        if tested and Path(tested).name == checkpoint.name and Path(tested).resolve() == checkpoint.resolve():
            return path
    return found[0] if found else None


def _read_json(path: Path | None) -> dict[str, Any]:
    """A JSON object file's contents; ``{}`` for None or a file that is not one."""
    if path is None:
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def results_table(metrics: dict[str, Any]) -> list[str]:
    """The headline table of a metrics dict (Markdown): per constraint R@K, mR@K (mean over predicates of their
    recall over the whole split) and mR_per_frame@K (mean over predicates of their per-frame recall)."""
    header = ["constraint", *(f"{name}@{k}" for name in ("R", "mR", "mR_per_frame") for k in TABLE_KS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in CONSTRAINTS:
        label = f"{key} constraint"
        cells = [metrics.get(f"{key}/{name}@{k}") for name in ("R", "mR", "mR_per_frame") for k in TABLE_KS]
        if all(cell is None for cell in cells):
            continue
        lines.append("| " + " | ".join([label, *("n/a" if c is None else f"{c:.4f}" for c in cells)]) + " |")
    return lines


def _epochs_lines(summary: dict[str, Any]) -> list[str]:
    """The best and last validation epochs of ``fit_summary.json`` (with / no constraint R@20)."""
    lines = []
    for which in ("best", "last"):
        entry = summary.get(which)
        if entry:
            metrics = entry.get("metrics", {})
            recalls = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("with/R@20", "no/R@20", "no/mR@20") if k in metrics)
            lines.append(f"- {which} epoch {entry.get('epoch')} (step {entry.get('step')}): validation {recalls}")
    if summary.get("note"):
        lines.append(f"\n{summary['note']}")
    return lines


def _training_time(run: Path | None, checkpoint: Path) -> str:
    """The wall time from the run's ``config.yaml`` (written as ``fit`` starts) to the checkpoint's last write."""
    config = run / "config.yaml" if run is not None else None
    if config is None or not config.is_file():
        return "not recorded (the checkpoint is not in a run folder with its config.yaml)"
    minutes = max(0.0, checkpoint.stat().st_mtime - config.stat().st_mtime) / 60
    return f"about {minutes:.1f} min (from the run's config.yaml to the checkpoint's last write)"


def _data_lines(data_root: Path | None, task: str) -> list[str]:
    """Per split the kept videos, frames and relationship labels of the data root (``arn-lightning stats``)."""
    if data_root is None:
        return ["No data root is known: the checkpoint is not in a run folder with its config.yaml."]
    if not (data_root / "annotations").is_dir():
        return [f"The data root `{data_root}` of the run config is not on this machine."]
    from arn_lightning.data.ag import AnnotationError, load_annotations
    from arn_lightning.data.stats import dataset_stats

    try:
        stats = dataset_stats(load_annotations(data_root, task))
    except (AnnotationError, OSError, ValueError) as error:
        return [f"The statistics of {data_root} could not be computed: {error}"]
    lines = [f"Data root `{data_root}` (task {task}), after the task's standard filtering:", ""]
    lines += ["| split | videos | frames | relationship labels |", "|---|---|---|---|"]
    for name, split in stats["splits"].items():
        videos, frames = split["videos"]["kept"], split["frames"]["kept"]
        lines.append(f"| {name} | {videos:,} | {frames:,} | {split['relationships']:,} |")
    return lines


def _run_config(run: Path | None) -> tuple[str, Path | None]:
    """The run's ``config.yaml`` text and its data root (None when absent)."""
    path = run / "config.yaml" if run is not None else None
    if path is None or not path.is_file():
        return "", None
    text = path.read_text(encoding="utf-8")
    root = ((yaml.safe_load(text) or {}).get("data") or {}).get("root")
    return text, (Path(root) if root else None)


def _architecture_lines(config: dict[str, Any]) -> list[str]:
    """The model in one table: task, backbone, sizes, ARN's switches, the input transform."""
    arch, transform = config["arch"], config["transform"]
    rows = {
        "task": arch.get("task"),
        "backbone": f"{arch.get('backbone')} (stride {arch.get('backbone_stride')})",
        "hidden size / heads": f"{arch.get('hidden_dim')} / {arch.get('nheads')}",
        "layers (encoder / entity / predicate / temporal)": "{} / {} / {} / {}".format(
            *(arch.get(k) for k in ("enc_layers", "entity_layers", "predicate_layers", "temporal_layers"))
        ),
        "pair queries / frames per clip": f"{arch.get('num_queries')} / {arch.get('num_frames')}",
        "PAP / HA / entity fusion": f"{arch.get('pap')} / {arch.get('ha')} / {arch.get('entity_fusion')}",
        "input": f"shorter side {transform['resize_shorter']} px, longer side at most {transform['resize_longer']} px",
        "triplet classes": ", ".join(f"{k} {len(v)}" for k, v in config["triplet_categories"].items()),
    }
    return ["| setting | value |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows.items())]


#: The card's fixed text before the generated sections (``task``, ``name`` and ``version`` filled in).
CARD_HEADER = """---
license: apache-2.0
library_name: arn-lightning
tags: [scene-graph-generation, video, action-genome, arn]
---
# ARN scene graph model ({task}, {name})

Dynamic scene graph generation with ARN (CVPR 2025), trained with
[arn-lightning](https://pypi.org/project/arn-lightning/) and exported with its version {version}.

## Use

```bash
arn-lightning infer --checkpoint THIS_FOLDER --input video.mp4 --out graphs
```

`THIS_FOLDER` is this folder's path, or `hf://owner/name` for a copy on the Hugging Face Hub; in Python
`arn_lightning.inference.api.load_model(THIS_FOLDER)`. `model.safetensors` holds the weights (nothing runs on load),
`config.json` the settings (format and version, architecture, triplet vocabulary, input transform, postprocess).

"""
#: The card's fixed text after the generated sections (``citation`` filled in).
CARD_FOOTER = """## Licence

Apache-2.0, as the arn-lightning code.

## Citation

```bibtex
{citation}
```
"""


def _training_lines(config: dict[str, Any], run: Path | None, checkpoint: Path) -> list[str]:
    """The source checkpoint, the training time and the best / last epochs."""
    source = config["checkpoint"]
    return [
        f"- source checkpoint: `{source['name']}`, epoch {source.get('epoch')}, step {source.get('global_step')}, "
        f"SHA-256 `{source['sha256']}`",
        f"- training time: {_training_time(run, checkpoint)}",
        *_epochs_lines(_read_json(run / FIT_SUMMARY_FILE if run is not None else None)),
    ]


def _results_lines(metrics: Path | None) -> list[str]:
    """The test metrics' headline table, with the checkpoint they are of and what both mR definitions mean."""
    tested = _read_json(metrics)
    table = results_table(tested) if tested else []
    if metrics is None or not table:
        return ["No `metrics_test.json` was found for this checkpoint (run `arn-lightning test` on it)."]
    tested_on = (tested.get("checkpoint") or {}).get("path")
    return [
        f"Test split (`{metrics.name}`, checkpoint `{tested_on}`). mR@K: the mean over predicates of their recall "
        "over the split; mR_per_frame@K: the mean over predicates of their per-frame recall.",
        "",
        *table,
    ]


def model_card(config: dict[str, Any], run: Path | None, checkpoint: Path, metrics: Path | None) -> str:
    """The ``README.md`` of a model folder (Markdown with the Hugging Face Hub's metadata header)."""
    run_config, data_root = _run_config(run)
    sections = {
        "Model": _architecture_lines(config),
        "Training": _training_lines(config, run, checkpoint),
        "Data": _data_lines(data_root, str(config["arch"].get("task"))),
        "Results": _results_lines(metrics),
        "Run config": ["```yaml", run_config.rstrip(), "```"] if run_config else ["Not found (no run folder)."],
    }
    body = [line for title, lines in sections.items() for line in (f"## {title}", "", *lines, "")]
    header = CARD_HEADER.format(task=config["arch"].get("task"), name=checkpoint.name, version=__version__)
    return header + "\n".join(body) + "\n" + CARD_FOOTER.format(citation=CITATION)


def _write_folder(staging: Path, module: InferenceModule, config: dict[str, Any], card: str) -> None:
    """The three files of a model folder, in ``staging``."""
    from safetensors.torch import save_file

    staging.mkdir(parents=True)
    save_file(_weights(module), str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
    (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (staging / CARD_FILE).write_text(card, encoding="utf-8")


def export_model_folder(
    checkpoint: PathLike, out: PathLike, metrics: PathLike | None = None, overwrite: bool = False
) -> FolderReport:
    """Write the model folder of ``checkpoint`` at ``out`` (module docstring), atomically.

    Args:
        checkpoint: an ARN Lightning checkpoint (e.g. ``<run>/checkpoints/last.ckpt``).
        out: the folder to write; absent or empty, or replaced with ``overwrite``.
        metrics: the ``metrics_test.json`` of the card; default: found beside the run (:func:`find_metrics`).
        overwrite: replace a non-empty ``out`` (the old folder is removed only once the new one is in place).

    Raises:
        CheckpointError: an unreadable, foreign or older-format checkpoint, or weights that do not fit.
        FileExistsError: ``out`` holds files and ``overwrite`` is False.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    stored = read_checkpoint(checkpoint, ARNLitModule.stored_configs())
    hparams = plain_hparams({k: v for k, v in stored["hyper_parameters"].items() if k not in LOCAL_KEYS})
    try:
        module = InferenceModule(hparams)
        module.load_lightning_state_dict(stored["state_dict"])
    except (RuntimeError, TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"Expected ARNLitModule weights in {checkpoint} but loading failed: {error}") from error
    if out.exists() and not (out.is_dir() and (overwrite or not any(out.iterdir()))):
        raise FileExistsError(f"Expected {out} to be absent or an empty folder but it exists (pass --overwrite)")
    identity = {"name": checkpoint.name, "sha256": sha256_file(checkpoint)}
    identity.update(epoch=stored.get("epoch"), global_step=stored.get("global_step"))
    config = folder_config(hparams, transform_settings(hparams.get("data_settings")), identity)
    run = checkpoint_run(checkpoint)
    metrics_path = Path(metrics) if metrics is not None else find_metrics(checkpoint, run)
    card = model_card(config, run, checkpoint, metrics_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
    try:
        _write_folder(staging, module, config, card)
        replace_folder(staging, out, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only what this call created
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    return FolderReport(out, sizes, run, metrics_path, _run_config(run)[1])


__all__ = ["CITATION", "FolderReport", "export_model_folder", "find_metrics", "model_card", "results_table"]
