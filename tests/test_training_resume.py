"""Exact resume from ``last.ckpt`` whatever stopped the run, checkpoints written atomically and verified on load, and
checkpoints that carry their own model (docs/runs.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from arn_lightning.training.checkpoints import AtomicCheckpointIO, CheckpointError, verify_checkpoint
from arn_lightning.training.lightning_cli import run_lightning_cli
from train_fixtures import REPO, assert_same_state, model_state, run_cli, tiny_config, write_config

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent
#: Steps of the compared runs; an epoch is 5 steps (limit_train_batches), the learning rate drops after epoch 0.
TOTAL_STEPS = 7


def _config(root: Path, work: Path, max_steps: int, callbacks: list[dict[str, Any]] = (), **trainer: Any) -> Path:
    config = tiny_config(
        root,
        work,
        max_steps=max_steps,
        max_epochs=-1,
        limit_train_batches=5,
        limit_val_batches=1,
        deterministic=True,
        **trainer,
    )
    config["model"]["optim"]["lr_drop_epoch"] = 1
    if callbacks:
        config["trainer"]["callbacks"] = list(callbacks)
    return write_config(config, work / "config.yaml")


def _callback(name: str, **init_args: Any) -> dict[str, Any]:
    return {"class_path": f"resume_fixtures.{name}", "init_args": init_args}


def _last(work: Path) -> Path:
    (path,) = (work / "logs").rglob("last.ckpt")
    return path


def _resume(root: Path, work: Path, ckpt: Path):
    return run_cli(["fit", "--config", str(_config(root, work, TOTAL_STEPS)), f"--ckpt_path={ckpt}"])


@pytest.fixture(scope="module")
def reference(train_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The weights of an uninterrupted run of TOTAL_STEPS steps (dropout and flips on)."""
    work = tmp_path_factory.mktemp("uninterrupted")
    return model_state(run_cli(["fit", "--config", str(_config(train_root, work, TOTAL_STEPS))]).model)


def _stored_step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


def test_a_run_stopped_by_max_steps_resumes_the_same_epoch(
    train_root: Path, tmp_path: Path, reference: dict[str, torch.Tensor]
) -> None:
    run_cli(["fit", "--config", str(_config(train_root, tmp_path / "a", 3))])
    ckpt = _last(tmp_path / "a")
    assert _stored_step(ckpt) == 3
    resumed = _resume(train_root, tmp_path / "b", ckpt)
    assert resumed.trainer.global_step == TOTAL_STEPS
    assert_same_state(model_state(resumed.model), reference)


def test_a_run_stopped_by_should_stop_resumes_the_same_epoch(
    train_root: Path, tmp_path: Path, reference: dict[str, torch.Tensor]
) -> None:
    # trainer.should_stop is how max_time (Timer) and early stopping end a run; epoch 1, after the LR drop.
    run_cli(["fit", "--config", str(_config(train_root, tmp_path / "a", 50, [_callback("StopAt", step=6)]))])
    ckpt = _last(tmp_path / "a")
    assert _stored_step(ckpt) == 6
    assert_same_state(model_state(_resume(train_root, tmp_path / "b", ckpt).model), reference)


def test_a_run_stopped_by_max_time_resumes_the_same_epoch(
    train_root: Path, tmp_path: Path, reference: dict[str, torch.Tensor]
) -> None:
    slow = _callback("SlowStep", step=2, seconds=1.5)
    cli = run_cli(["fit", "--config", str(_config(train_root, tmp_path / "a", 50, [slow], max_time={"seconds": 1}))])
    stopped = cli.trainer.global_step
    assert 0 < stopped < TOTAL_STEPS and stopped % 5 != 0, "the run must stop mid-epoch for this test to mean much"
    ckpt = _last(tmp_path / "a")
    assert _stored_step(ckpt) == stopped
    assert_same_state(model_state(_resume(train_root, tmp_path / "b", ckpt).model), reference)


@pytest.mark.parametrize("signal_name,status", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_saves_last_ckpt_exits_non_zero_and_resumes_exactly(
    signal_name: str, status: int, train_root: Path, tmp_path: Path, reference: dict[str, torch.Tensor]
) -> None:
    config = _config(train_root, tmp_path / "a", 50, [_callback("SendSignal", step=3, signal_name=signal_name)])
    previous = signal.getsignal(signal.SIGINT)
    assert run_lightning_cli(["fit", "--config", str(config)]) == status
    assert signal.getsignal(signal.SIGINT) is previous  # the run's SIGINT handler is gone again
    ckpt = _last(tmp_path / "a")
    assert _stored_step(ckpt) == 3
    assert_same_state(model_state(_resume(train_root, tmp_path / "b", ckpt).model), reference)


def _fit_in_a_process(config: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # the reference ran on one thread (conftest): same float sums
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "arn_lightning", "fit", "--config", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_after_kill_9_the_last_epoch_checkpoint_resumes_exactly(
    train_root: Path, tmp_path: Path, reference: dict[str, torch.Tensor]
) -> None:
    done = _fit_in_a_process(
        _config(train_root, tmp_path / "a", 50, [_callback("SendSignal", step=6, signal_name="SIGKILL")])
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    ckpt = _last(tmp_path / "a")
    assert _stored_step(ckpt) == 5  # the end of epoch 0: the last state written before the kill
    assert not list(ckpt.parent.glob(".*.tmp"))
    assert_same_state(model_state(_resume(train_root, tmp_path / "b", ckpt).model), reference)


def test_a_sigterm_process_exits_143_after_saving(train_root: Path, tmp_path: Path) -> None:
    # what a scheduler sees: the process itself (not only the in-process CLI) exits non-zero after the save
    done = _fit_in_a_process(
        _config(train_root, tmp_path / "a", 50, [_callback("SendSignal", step=3, signal_name="SIGTERM")])
    )
    assert done.returncode == 143, done.stderr[-2000:]
    assert "training stopped by a signal; exit status 143" in done.stderr
    assert _stored_step(_last(tmp_path / "a")) == 3


# ------------------------------------------------------------------------------------------- atomic and verified
_FULL_DISK = """
import resource, signal, sys, torch
from arn_lightning.training.checkpoints import AtomicCheckpointIO
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)             # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # files of at most 1 MiB: the disk is 'full'
try:
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2 << 20)}, sys.argv[1])  # 8 MiB
except OSError as error:
    print("failed:", error)
"""


def test_a_full_disk_leaves_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.arange(10.0)}, path)
    before = path.read_bytes()
    done = subprocess.run([sys.executable, "-c", _FULL_DISK, str(path)], capture_output=True, text=True, timeout=120)
    assert f"{path}: Expected to write the checkpoint but writing failed" in done.stdout, done.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left behind
    assert torch.equal(AtomicCheckpointIO().load_checkpoint(path)["w"], torch.arange(10.0))


def _altered_copy(path: Path, out: Path) -> Path:
    """``path`` with one byte of its largest stored tensor flipped (the zip CRC no longer matches)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:  # torch stores members uncompressed: find the payload by its bytes
        member = max((m for m in archive.infolist() if "/data/" in m.filename), key=lambda m: m.file_size)
        payload = archive.read(member)
    offset = data.index(payload[:64], member.header_offset)
    data[offset + member.file_size // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


def test_an_altered_or_truncated_checkpoint_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4096.0)}}, path)
    assert verify_checkpoint(path) == path
    altered = _altered_copy(path, tmp_path / "altered.ckpt")
    assert not torch.equal(torch.load(altered, weights_only=True)["state_dict"]["w"], torch.arange(4096.0))  # silent
    with pytest.raises(CheckpointError, match=r"altered\.ckpt: Expected an intact checkpoint.*checksums"):
        verify_checkpoint(altered)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.ckpt: Expected a PyTorch checkpoint .* truncated"):
        AtomicCheckpointIO().load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="missing.ckpt does not exist"):
        verify_checkpoint(tmp_path / "missing.ckpt")


def test_the_cli_refuses_a_damaged_checkpoint_with_its_name(
    train_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cli = run_cli(["fit", "--config", str(_config(train_root, tmp_path / "a", 2))])
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    altered = _altered_copy(_last(tmp_path / "a"), tmp_path / "altered.ckpt")
    code = run_lightning_cli(
        ["test", "--config", str(_config(train_root, tmp_path / "b", 2)), f"--ckpt_path={altered}"]
    )
    assert code == 2
    assert f"{altered}: Expected an intact checkpoint" in capsys.readouterr().err


def test_load_from_checkpoint_and_infer_refuse_an_altered_checkpoint(train_root: Path, tmp_path: Path) -> None:
    from arn_lightning.inference.api import load_model
    from arn_lightning.training.lit_module import ARNLitModule

    run_cli(["fit", "--config", str(_config(train_root, tmp_path / "a", 2))])
    altered = _altered_copy(_last(tmp_path / "a"), tmp_path / "altered.ckpt")
    with pytest.raises(CheckpointError, match=r"altered\.ckpt: Expected an intact checkpoint"):
        ARNLitModule.load_from_checkpoint(str(altered), weights_only=True)
    with pytest.raises(CheckpointError, match=r"altered\.ckpt: Expected an intact checkpoint"):
        load_model(altered)
    assert isinstance(ARNLitModule.load_from_checkpoint(str(_last(tmp_path / "a")), weights_only=True), ARNLitModule)


def test_a_member_flagged_as_a_directory_is_refused(tmp_path: Path) -> None:
    # One bit of a member's external attributes in the zip central directory: every CRC still matches for Python's
    # zipfile, but torch's reader then takes the member for a directory and loads other bytes (found by fault
    # injection: the only single-byte flip that loaded silently).
    import struct

    path = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4096.0)}}, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        target = max((m for m in archive.infolist() if "/data/" in m.filename), key=lambda m: m.file_size)
    entry = data.index(b"PK\x01\x02")  # the first central-directory entry
    while True:
        name_length, extra_length, comment_length = struct.unpack("<HHH", data[entry + 28 : entry + 34])
        if bytes(data[entry + 46 : entry + 46 + name_length]) == target.filename.encode():
            break
        entry = data.index(b"PK\x01\x02", entry + 46 + name_length + extra_length + comment_length)
    data[entry + 38] ^= 0x10  # the MS-DOS directory attribute
    flagged = tmp_path / "flagged.ckpt"
    flagged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"flagged\.ckpt: Expected an intact checkpoint.*flagged as a directory"):
        verify_checkpoint(flagged)


def test_an_epoch_without_validation_still_ends_with_a_resumable_last_ckpt(
    train_root: Path, tmp_path: Path, reference: dict[str, torch.Tensor]
) -> None:
    # validation every 2nd epoch: ModelCheckpoint alone saved nothing at the end of epoch 0 (found by fault injection)
    every_2nd = {"check_val_every_n_epoch": 2}
    every_epoch = reference
    reference = model_state(
        run_cli(["fit", "--config", str(_config(train_root, tmp_path / "r", TOTAL_STEPS, **every_2nd))]).model
    )
    # validation draws nothing from the global random streams: the schedule does not change the trained weights
    assert_same_state(reference, every_epoch)
    run_cli(["fit", "--config", str(_config(train_root, tmp_path / "a", 5, **every_2nd))])  # stops at epoch 0's end
    ckpt = _last(tmp_path / "a")
    assert _stored_step(ckpt) == 5
    resumed = run_cli(
        ["fit", "--config", str(_config(train_root, tmp_path / "b", TOTAL_STEPS, **every_2nd)), f"--ckpt_path={ckpt}"]
    )
    assert_same_state(model_state(resumed.model), reference)


def test_a_sigterm_inside_an_accumulation_window_stops_at_its_end(train_root: Path, tmp_path: Path) -> None:
    # the partial gradients of a window are in no checkpoint: stopping inside one made the resume inexact
    accumulate = {"accumulate_grad_batches": 2}
    reference = model_state(
        run_cli(["fit", "--config", str(_config(train_root, tmp_path / "r", 3, **accumulate))]).model
    )
    signal_in_window = [_callback("SendSignalAtBatch", batch=2, signal_name="SIGTERM")]  # batches 2-3: one window
    config = _config(train_root, tmp_path / "a", 50, signal_in_window, **accumulate)
    assert run_lightning_cli(["fit", "--config", str(config)]) == 143
    ckpt = _last(tmp_path / "a")
    assert _stored_step(ckpt) == 2  # after the window's second batch, not in its middle
    resumed = run_cli(
        ["fit", "--config", str(_config(train_root, tmp_path / "b", 3, **accumulate)), f"--ckpt_path={ckpt}"]
    )
    assert_same_state(model_state(resumed.model), reference)
