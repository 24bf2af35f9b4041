"""Finding runs on disk: the newest checkpoint under a folder, and paths relative to the repository root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arn_lightning.training.runs import latest_checkpoint, repository_root, resolve_from_repository

REPO = Path(__file__).resolve().parents[1]


def test_latest_checkpoint_is_the_newest_last_ckpt(tmp_path: Path) -> None:
    old = tmp_path / "synthetic_demo" / "version_0" / "checkpoints" / "last.ckpt"
    new = tmp_path / "synthetic_demo" / "version_1" / "checkpoints" / "last.ckpt"
    for path, stamp in ((new, 2_000_000_000), (old, 1_000_000_000)):  # written in the other order
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (stamp, stamp))
    (new.parent / "epoch003-R20_0.5.ckpt").write_bytes(b"x")
    assert latest_checkpoint(tmp_path) == new
    with pytest.raises(
        FileNotFoundError, match=r"Expected a last.ckpt under .*missing but found none: run `make demo`"
    ):
        latest_checkpoint(tmp_path / "missing")


def test_relative_paths_are_read_from_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO / "notebooks")  # where a notebook kernel runs
    assert repository_root() == REPO
    assert resolve_from_repository("demo_output/data") == REPO / "demo_output" / "data"
    assert resolve_from_repository("/abs/path") == Path("/abs/path")


def test_outside_a_checkout_relative_paths_are_read_from_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed package used in any folder: nothing is read relative to the package's own files."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "another-project"\n', encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert repository_root() == work.resolve()
    assert resolve_from_repository("demo_output/train") == work.resolve() / "demo_output" / "train"
