"""``notebooks/explore_checkpoint.ipynb`` runs top to bottom on a tiny checkpoint and the synthetic AG."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from infer_fixtures import InferAssets

pytestmark = pytest.mark.slow  # a tiny model end to end: seconds per test

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_checkpoint.ipynb"
SRC = Path(__file__).resolve().parents[1] / "src"
KERNEL = "arn-lightning-test"
CELL_TIMEOUT_S = 180


def _install_kernel(folder: Path) -> None:
    """A kernelspec that runs ipykernel with this interpreter (the venv's), found through ``JUPYTER_PATH``."""
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "arn-lightning tests",
                "language": "python",
            }
        )
    )


def test_notebook_runs_top_to_bottom(assets: InferAssets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_kernel(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("ARN_CHECKPOINT", str(assets.checkpoint))
    monkeypatch.setenv("ARN_DATA_ROOT", str(assets.data_root))
    monkeypatch.setenv("ARN_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the tiny model is fastest on one thread
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError naming the cell on the first error

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    images = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
    texts = "".join(o.get("text", "") for cell in code for o in cell.outputs if o.output_type == "stream")
    assert len(images) >= 6  # 3 annotated frames, the timeline, the recall chart, the attention figure
    assert "with/R@20" in texts and "tiny.ckpt: 2 frames per clip" in texts
    assert (tmp_path / "out" / "predictions_test.jsonl").is_file()
    assert not any(o.output_type == "error" for cell in code for o in cell.outputs)
