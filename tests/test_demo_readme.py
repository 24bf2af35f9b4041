"""Every ``make demo`` compares itself with the README's demo table, shipped in the package (demo_reference.json):
the packaged copy equals the README, and the comparison says once what it means."""

from __future__ import annotations

from pathlib import Path

import pytest

from arn_lightning.experiments import demo
from arn_lightning.experiments.demo import TABLE_KS, describe_reference, read_reference, reference_differences

README = Path(__file__).resolve().parents[1] / "README.md"
#: The README's first cell of each row kind.
README_ROWS = {"best": "trained", "last": "trained, last epoch"}


def _table(text: str, row: str) -> dict[str, float]:
    """The README's rows ``row`` as ``"<constraint>/<name>" -> %``, read independently of the code under test."""
    stated = {}
    names = [f"R@{k}" for k in TABLE_KS] + [f"mR@{k}" for k in TABLE_KS]
    for line in text.splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0] == row:
            stated.update({f"{cells[1]}/{n}": float(v) for n, v in zip(names, cells[2:])})
    return stated


def _fractions(stated: dict[str, float]) -> dict[str, float]:
    return {name: value / 100 for name, value in stated.items()}


def test_the_packaged_reference_is_the_readme_table() -> None:
    """The installed package has no README: its copy of the table must stay equal to the README's."""
    text = README.read_text(encoding="utf-8")
    reference = read_reference()
    for row, first_cell in README_ROWS.items():
        stated = _table(text, first_cell)
        assert {key.split("/")[0] for key in stated} == {"with", "semi", "no"} and len(stated) == 24
        assert reference["rows"][row] == stated
    assert f"torch {reference['torch']}" in text and reference["date"] in text


def test_a_changed_cell_is_named_with_both_values() -> None:
    stated = read_reference()["rows"]["best"]
    assert reference_differences(_fractions(stated), stated) == []
    changed = {**_fractions(stated), "no/R@20": stated["no/R@20"] / 100 - 0.05}
    assert reference_differences(changed, stated) == [("no/R@20", 83.0, pytest.approx(78.0))]


def test_the_comparison_is_said_once_with_both_machines_and_the_largest_difference() -> None:
    reference = read_reference()
    same = {row: _fractions(reference["rows"][row]) for row in ("best", "last")}
    assert describe_reference(same, reference, "CPU X, 2 usable cores, torch 9") == [
        "[demo] README table: measured on a 2-core Intel Xeon (x86_64, 24 GiB, no GPU), "
        "torch 2.14.1, 2026-12-07; this run: CPU X, 2 usable cores, torch 9. This run reproduces all 48 cells."
    ]
    other = {**same["best"], "no/R@20": 0.797, "with/R@10": 0.680}
    lines = describe_reference({"best": other, "last": dict(other)}, reference, "AMD EPYC")
    assert len(lines) == 2 and "learning check below is the verdict" in lines[1]
    assert "this run: AMD EPYC" in lines[0]
    assert (
        "2 of the best checkpoint's 24 cells differ (the last checkpoint is the best one: the same cells)" in lines[0]
    )
    assert lines[0].endswith("the largest: best no/R@20 83.0 there, 79.7 here (-3.3 points).")
    last = {**other, "semi/R@10": 0.5}
    line = describe_reference({"best": other, "last": last}, reference, "AMD EPYC")[0]
    assert "2 of the best checkpoint's 24 cells differ, 3 of the last checkpoint's" in line
    assert line.endswith("the largest: last semi/R@10 24.7 there, 50.0 here (+25.3 points).")


def test_a_run_other_than_the_readme_demo_is_not_compared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = demo._parse(["--videos", "16", "--seed", "3"])
    assert demo.compare_with_reference(args, {}) is None
    assert (
        capsys.readouterr().out
        == "[demo] README table: not compared (this run's --videos, --seed: not the README demo's)\n"
    )
    (tmp_path / "synthetic_demo.yaml").write_text("seed_everything: 1\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # a local config of the demo's name is used, and it is not the README's
    assert demo.compare_with_reference(demo._parse([]), {}) is None
    assert "not compared (this run's --config: not" in capsys.readouterr().out
