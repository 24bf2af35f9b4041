"""The short ``--help`` of the Lightning subcommands names real options and points at the complete list."""

from __future__ import annotations

import re

import pytest

from arn_lightning import cli


@pytest.mark.parametrize("command", cli.LIGHTNING_SUBCOMMANDS)
def test_short_help_is_short_and_every_option_it_names_exists(command: str, capsys: pytest.CaptureFixture) -> None:
    assert cli.main([command, "--help"]) == 0
    short = capsys.readouterr().out
    assert len(short.splitlines()) < 40 and f"arn-lightning {command} --help-all" in short
    with pytest.raises(SystemExit) as stop:
        cli.main([command, "--help-all"])
    assert stop.value.code == 0
    full = capsys.readouterr().out
    assert len(full.splitlines()) > 500  # the complete LightningCLI list
    named = [option.split()[0] for option, _ in cli.COMMON_OPTIONS]
    missing = [option for option in named if not re.search(rf"{re.escape(option)}[ =\s]", full)]
    assert not missing, f"{missing} are not options of `{command}`"
    for group in cli.OPTION_GROUPS:
        assert group[:-1] in full, f"no option of the group {group}"
