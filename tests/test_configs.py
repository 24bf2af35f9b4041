"""The configs ship inside the package: found by name from any folder (a local file wins), listed, shown and copied
by ``arn-lightning configs``; nothing in the package reads files of the checkout."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from arn_lightning import cli
from arn_lightning.configs import config_folder, config_names, packaged_config, resolve_config, resolve_config_args
from arn_lightning.experiments import ablation

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "arn_lightning"


def test_the_checkout_configs_folder_is_a_link_to_the_packaged_configs() -> None:
    """``--config configs/ag_sgdet.yaml`` in the docs keeps working from a checkout (git stores a symlink)."""
    assert (REPO / "configs").is_symlink()
    assert os.readlink(REPO / "configs") == "src/arn_lightning/configs"
    assert (REPO / "configs").resolve() == config_folder().resolve() == (PACKAGE / "configs").resolve()


def test_every_packaged_yaml_has_a_name() -> None:
    names = config_names()
    files = sorted(p.relative_to(PACKAGE / "configs").as_posix() for p in (PACKAGE / "configs").rglob("*.yaml"))
    assert [f"{name}.yaml" for name in names] == files
    assert {"ag_sgdet", "ag_sgcls", "ag_predcls", "synthetic_demo", "trainer/gpu_bf16", "trainer/cpu"} <= set(names)
    assert len([n for n in names if n.startswith("ablation/")]) == 8
    for name in names:
        assert isinstance(yaml.safe_load(packaged_config(name).read_text(encoding="utf-8")), dict), name


@pytest.mark.parametrize(
    "value", ["ag_sgdet", "ag_sgdet.yaml", "configs/ag_sgdet.yaml", "trainer/gpu_bf16", "configs/trainer/gpu_bf16"]
)
def test_a_packaged_config_is_found_by_name_from_any_folder(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stem = value.removeprefix("configs/").removesuffix(".yaml")
    assert resolve_config(value) == config_folder() / f"{stem}.yaml"


def test_a_local_file_of_that_name_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ag_sgdet.yaml").write_text("seed_everything: 3\n", encoding="utf-8")
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "cpu.yaml").write_text("trainer: {}\n", encoding="utf-8")
    assert resolve_config("ag_sgdet.yaml") == Path("ag_sgdet.yaml")
    assert resolve_config("ag_sgdet") == Path("ag_sgdet.yaml")  # the copy `configs copy ag_sgdet` writes
    assert resolve_config("trainer/cpu.yaml") == Path("trainer/cpu.yaml")
    assert resolve_config("trainer/gpu") == config_folder() / "trainer" / "gpu.yaml"
    assert resolve_config("no_such_config") == Path("no_such_config")  # left for the CLI to report


def test_config_values_of_a_command_line_are_resolved_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = config_folder()
    args = ["fit", "--config", "ag_sgdet", "--config=trainer/cpu", "-c", "mine.yaml", "--data.root", "ag_sgdet"]
    assert resolve_config_args(args) == [
        "fit",
        "--config",
        str(folder / "ag_sgdet.yaml"),
        f"--config={folder / 'trainer' / 'cpu.yaml'}",
        "-c",
        "mine.yaml",
        "--data.root",
        "ag_sgdet",
    ]


def _printed_config(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_fit_takes_packaged_config_names_from_the_shell_and_from_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``arn-lightning fit --config synthetic_demo --config trainer/cpu`` in an empty folder parses the packaged
    files, later ones winning, both when LightningCLI reads sys.argv and when it is given the arguments."""
    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--config", "synthetic_demo", "--config", "trainer/cpu_bf16", "--print_config"]
    monkeypatch.setattr(sys, "argv", ["arn-lightning", *argv])
    from_shell = _printed_config(capsys, argv)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    from_python = _printed_config(capsys, argv)
    demo = yaml.safe_load(packaged_config("synthetic_demo").read_text(encoding="utf-8"))
    assert from_shell == from_python
    assert from_shell["model"]["arch"]["hidden_dim"] == demo["model"]["arch"]["hidden_dim"] == 128
    assert from_shell["trainer"]["precision"] == "bf16-mixed"  # the later layer wins


def test_configs_list_show_and_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["configs", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed[:-1]] == config_names()
    assert re.fullmatch(rf"\({len(config_names())} configs in .*\)", listed[-1])
    assert cli.main(["configs", "show", "trainer/gpu_bf16"]) == 0
    assert capsys.readouterr().out == packaged_config("trainer/gpu_bf16").read_text(encoding="utf-8")

    assert cli.main(["configs", "copy", "ag_sgdet"]) == 0
    copied = tmp_path / "ag_sgdet.yaml"
    assert copied.read_bytes() == packaged_config("ag_sgdet").read_bytes()
    copied.write_text("# mine\n", encoding="utf-8")
    assert cli.main(["configs", "copy", "ag_sgdet"]) == 2
    assert "pass --force" in capsys.readouterr().err and copied.read_text(encoding="utf-8") == "# mine\n"
    assert cli.main(["configs", "copy", "configs/ag_sgdet.yaml", "--force"]) == 0
    assert copied.read_bytes() == packaged_config("ag_sgdet").read_bytes()
    (tmp_path / "sub").mkdir()
    assert cli.main(["configs", "copy", "trainer/ddp", "sub"]) == 0
    assert (tmp_path / "sub" / "ddp.yaml").read_bytes() == packaged_config("trainer/ddp").read_bytes()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ag_sgdet.yaml", "ddp.yaml", "sub"]  # no leftovers
    assert cli.main(["configs", "show", "ag_sgdett"]) == 2
    assert "Expected a packaged config name (ablation/t3_row1_baseline_ce, " in capsys.readouterr().err


def test_the_ablation_rows_are_packaged_configs() -> None:
    assert ablation.base_config() == config_folder() / "synthetic_demo.yaml"
    for table in ablation.TABLES.values():
        for row, _ in table:
            assert ablation.row_config(row) == config_folder() / "ablation" / f"{row}.yaml"
            assert ablation.row_config(row).is_file()


def test_the_package_reads_no_file_of_the_checkout() -> None:
    """Configs and the demo's reference table are package data; no module finds files through its own location."""
    offenders = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if re.search(r"__file__|\.parents\[", p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_arn_lightning_demo_is_the_demo_job_with_the_packaged_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``arn-lightning demo`` runs ``python -m arn_lightning.experiments.demo``'s parser and job from any folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli.main(["demo", "--help"])
    assert stop.value.code == 0 and "--no-check" in capsys.readouterr().out
    from arn_lightning.experiments import demo

    assert cli.TOOLS["demo"][0] == demo.__name__
    assert demo._parse([]).config == config_folder() / "synthetic_demo.yaml"
    (tmp_path / "synthetic_demo.yaml").write_text("seed_everything: 1\n", encoding="utf-8")
    assert demo._parse([]).config == Path("synthetic_demo.yaml")  # a local file of that name wins
