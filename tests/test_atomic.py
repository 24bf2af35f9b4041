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


# -------------------------------------------------------------- temporary files of processes that were killed
def _killed_writer(target: Path) -> Path:
    """A real process that made the temporary file of ``target`` and was then killed by SIGKILL (no handler runs)."""
    import signal
    import subprocess
    import sys

    code = f"from arn_lightning.atomic import temporary_path\nprint(temporary_path({str(target)!r}), flush=True)\n"
    code += "import time\ntime.sleep(120)\n"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    tmp = Path(process.stdout.readline().strip())
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert tmp.is_file() and tmp.name.startswith(f".{target.name}.pid{process.pid}.")
    return tmp


def test_the_next_write_removes_the_temporary_file_of_a_killed_writer(tmp_path: Path) -> None:
    from arn_lightning.atomic import atomic_write_text, temporary_path

    target = tmp_path / "last.ckpt"
    stale = _killed_writer(target)
    mine = temporary_path(target)  # this process is alive: its temporary file stays
    other = tmp_path / ".other.ckpt.pid1.x.tmp"  # another file's (pid 1 is alive anyway)
    foreign = tmp_path / ".last.ckpt.notes.tmp"  # not a name this module makes
    other.write_text("o")
    foreign.write_text("f")
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and not stale.exists()
    assert mine.exists() and other.exists() and foreign.exists()


def test_a_sweep_of_a_folder_keeps_what_live_processes_and_users_made(tmp_path: Path) -> None:
    from arn_lightning.atomic import sweep_stale_temporaries, temporary_path

    stale = _killed_writer(tmp_path / "model.onnx")
    live = temporary_path(tmp_path / "model.json")
    user = tmp_path / "model.pid5.tmp.txt"
    user.write_text("u")
    assert sweep_stale_temporaries(tmp_path) == [stale]
    assert live.exists() and user.exists() and not stale.exists()
