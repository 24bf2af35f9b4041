"""Every ``make demo`` says whether it reproduces the README's demo table (demo.readme_differences)."""

from __future__ import annotations

from pathlib import Path

from arn_lightning.experiments.demo import README_ROWS, TABLE_KS, readme_differences

README = Path(__file__).resolve().parents[1] / "README.md"


def _table(text: str, row: str = "trained") -> dict:
    """The README's rows ``row`` as metrics (fractions), read independently of the function under test."""
    metrics = {}
    for line in text.splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0] == row:
            names = [f"R@{k}" for k in TABLE_KS] + [f"mR@{k}" for k in TABLE_KS]
            metrics.update({f"{cells[1]}/{n}": float(v) / 100 for n, v in zip(names, cells[2:])})
    return metrics


def test_the_readme_table_is_read_and_compared_cell_by_cell(tmp_path: Path) -> None:
    stated = _table(README.read_text(encoding="utf-8"))
    assert {key.split("/")[0] for key in stated} == {"with", "semi", "no"} and len(stated) == 24
    assert readme_differences(stated, README) == []
    changed = {**stated, "no/R@20": stated["no/R@20"] - 0.05}
    assert readme_differences(changed, README) == [
        f"no/R@20: README {100 * stated['no/R@20']:.1f}, this run {100 * changed['no/R@20']:.1f}"
    ]
    assert readme_differences(stated, tmp_path / "missing.md") is None


def test_the_last_checkpoint_rows_are_compared_on_their_own(tmp_path: Path) -> None:
    """The best and the last checkpoint each have their rows; a difference in one is not hidden by the other."""
    last = _table(README.read_text(encoding="utf-8"), README_ROWS["last"])
    assert len(last) == 24 and readme_differences(last, README, README_ROWS["last"]) == []
    changed = {**last, "with/mR@50": last["with/mR@50"] + 0.1}
    assert readme_differences(changed, README, README_ROWS["last"]) == [
        f"with/mR@50: README {100 * last['with/mR@50']:.1f}, this run {100 * changed['with/mR@50']:.1f}"
    ]
