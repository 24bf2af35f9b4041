"""All-or-nothing output folders (arn_lightning.inference.output.staged_directory)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from arn_lightning.inference.output import FOLDER_MODE, MARKER_FILE, OutputExistsError, staged_directory


def test_success_renames_the_staging_folder(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "out"
    with staged_directory(out) as staging:
        assert staging.parent == out.parent and staging.name.startswith(".out.")
        (staging / "a.txt").write_text("done")
    assert (out / "a.txt").read_text() == "done"
    assert stat.S_IMODE(out.stat().st_mode) == FOLDER_MODE
    assert [p.name for p in out.parent.iterdir()] == ["out"]


def test_error_leaves_nothing_and_keeps_an_existing_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with staged_directory(out) as staging:
            (staging / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with staged_directory(out) as staging:  # an earlier output, which --overwrite may replace
        (staging / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with staged_directory(out, overwrite=True) as staging:
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "old.txt").read_text() == "old"


def test_overwrite_replaces_and_refusal_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged_directory(out) as staging:
        (staging / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match=f"{out} is not empty"):
        with staged_directory(out):
            raise AssertionError("not reached")
    with staged_directory(out, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [MARKER_FILE, "new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_overwrite_never_replaces_a_folder_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputExistsError, match=f"{out} holds other files; it is left as it is"):
        with staged_directory(out, overwrite=True):
            raise AssertionError("not reached")
    assert [p.name for p in out.iterdir()] == ["thesis.tex"] and (out / "thesis.tex").read_text() == "years of work"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_empty_existing_folder_is_used_and_a_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with staged_directory(out) as staging:
        (staging / "x").write_text("x")
    assert (out / "x").is_file()
    target = tmp_path / "file"
    target.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=f"{target} is a file"):
        with staged_directory(target):
            raise AssertionError("not reached")
