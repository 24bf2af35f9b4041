"""The atomic writes of arn_lightning.atomic: files and folders are complete or absent, never half written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arn_lightning.atomic import atomic_path, atomic_write_json, atomic_write_text, replace_folder


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"v": 1}
    assert _hidden(tmp_path) == []
    atomic_write_text(target, "done")
    assert target.read_text() == "done" and _hidden(tmp_path) == []


@pytest.mark.parametrize("existing", ["absent", "empty", "full"])
def test_replace_folder_puts_the_new_folder_in_place(tmp_path: Path, existing: str) -> None:
    staging, dest = tmp_path / ".staging", tmp_path / "out"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    if existing != "absent":
        dest.mkdir()
    if existing == "full":
        (dest / "old.txt").write_text("old")
    replace_folder(staging, dest, replace_existing=True)
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    assert not staging.exists() and _hidden(tmp_path) == []  # the old version was removed last


def test_replace_folder_never_replaces_a_full_folder_unasked(tmp_path: Path) -> None:
    staging, dest = tmp_path / ".staging", tmp_path / "out"
    staging.mkdir()
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"out to be absent or empty but it holds \['keep.txt'\]"):
        replace_folder(staging, dest, replace_existing=False)
    assert (dest / "keep.txt").read_text() == "mine" and staging.is_dir()
