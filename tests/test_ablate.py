"""``arn-lightning ablate``: errors, the settings check, and (slow) a tiny 2-row study end to end with the skip of
finished runs, the resume of an interrupted one and the table read back against the runs' metrics files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from arn_lightning.commands import ablate
from arn_lightning.experiments import ablation
from arn_lightning.experiments.ablation import COLUMNS, OUT_SETTINGS_FILE, PAPER, TABLES, run_folder, study_settings


def test_a_bad_rows_value_is_named(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert ablate.main(["--rows", "t5", "--size", "tiny", "--out", str(tmp_path / "out")]) == 2
    assert "--rows: Expected one of t3, t4, all or comma-separated row names of t3_row1_baseline_ce" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()  # refused before anything is written
    with pytest.raises(ablation.AblationError, match="but got 't3_row3_clip,row1'") as info:
        ablation.rows_of("t3_row3_clip,row1")
    assert info.value.exit_code == 2


def test_rows_are_tables_or_named_rows_in_the_papers_order() -> None:
    assert ablation.rows_of("t4") == ["t4_model1_add", "t4_model2_mlp", "t4_ours_conditional"]
    assert len(ablation.rows_of("all")) == 8
    assert ablation.rows_of("t3_row5_full, t3_row3_clip,t3_row4_pap") == ["t3_row3_clip", "t3_row4_pap", "t3_row5_full"]


def test_an_unwritable_out_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    assert ablate.main(["--rows", "t4", "--size", "tiny", "--out", str(blocker / "out")]) == 1
    err = capsys.readouterr().err
    assert f"--out {blocker / 'out'}: Expected a writable folder" in err


def test_a_root_that_is_not_ag_format_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "not_ag"
    root.mkdir()
    (root / "readme.txt").write_text("hello", encoding="utf-8")
    code = ablate.main(["--rows", "t4", "--size", "tiny", "--root", str(root), "--out", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err
    assert f"--root {root}: Expected an Action Genome root" in err


def test_other_settings_in_the_same_out_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    earlier = study_settings("tiny", (out / "data").resolve(), 0.5, "cpu")
    (out / OUT_SETTINGS_FILE).write_text(json.dumps(earlier), encoding="utf-8")
    assert ablate.main(["--rows", "t4", "--size", "tiny", "--out", str(out), "--association", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "association: 0.5 there, 0.9 now" in err and "refusing to mix" in err
    assert not (out / "data").exists()  # refused before generating anything


def test_the_metrics_file_name_is_the_prediction_writers() -> None:
    from arn_lightning.training.prediction_writer import METRICS_FILE

    assert ablation.METRICS_FILE == METRICS_FILE


def test_settings_difference_names_the_first_differing_key() -> None:
    assert ablation.settings_difference({"a": 1, "b": 2}, {"a": 1, "b": 2}) is None
    assert ablation.settings_difference({"a": 1, "b": 2}, {"a": 1, "b": 3}) == "b: 2 there, 3 now"
    assert ablation.settings_difference({"a": 1}, {"a": 1, "seed": 0}) == "seed: None there, 0 now"


ROWS = [row for row, _ in TABLES["t4"][:2]]


@pytest.fixture(scope="module")
def two_rows() -> Iterator[None]:
    """Table 4 cut to its first two rows (Model I, Model II) for the end-to-end tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(TABLES, "t4", TABLES["t4"][:2])
        yield


@pytest.fixture(scope="module")
def study(two_rows: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ablate") / "out"
    assert ablate.main(["--rows", "t4", "--seeds", "1", "--size", "tiny", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_the_table_holds_the_runs_metrics(study: Path) -> None:
    report = json.loads((study / "ablation.json").read_text(encoding="utf-8"))
    assert list(report["tables"]) == ["t4"]
    rows = report["tables"]["t4"]
    assert [r["row"] for r in rows] == ROWS
    for row in rows:
        metrics = json.loads((run_folder(study, row["row"], 0) / "metrics_test.json").read_text(encoding="utf-8"))
        assert row["seeds"] == [0]
        for column in COLUMNS:
            assert row["runs"]["0"][column] == metrics[column]
            assert row["summary"][column]["mean"] == metrics[column]
            assert row["summary"][column]["std"] is None  # one seed
        assert list(row["paper"].values()) == list(PAPER[row["row"]])
    assert report["settings"]["association"] == ablation.DEFAULT_ASSOCIATION
    assert report["association_measured"]["train"]["object_to_predicate"]["mean"] > 0.5
    markdown = (study / "ablation.md").read_text(encoding="utf-8")
    assert "| Model I (add) | 1 |" in markdown and "(35.0)" in markdown and "mean ± sample std" in markdown


@pytest.mark.slow
def test_a_rerun_skips_finished_runs(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = run_folder(study, ROWS[0], 0) / "metrics_test.json"
    before = metrics.stat().st_mtime_ns
    assert ablate.main(["--rows", "t4", "--seeds", "1", "--size", "tiny", "--out", str(study)]) == 0
    out = capsys.readouterr().out
    assert all(f"{row} seed 0: finished earlier, skipped" in out for row in ROWS)
    assert "training" not in out and "resuming" not in out
    assert metrics.stat().st_mtime_ns == before


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_last_checkpoint(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_folder(study, ROWS[1], 0)
    finished = json.loads((run / "metrics_test.json").read_text(encoding="utf-8"))
    (run / "metrics_test.json").unlink()  # the run folder now holds a last.ckpt and no metrics: interrupted
    assert list(run.glob("train/**/checkpoints/last.ckpt"))
    assert ablate.main(["--rows", "t4", "--seeds", "1", "--size", "tiny", "--out", str(study)]) == 0
    out = capsys.readouterr().out
    assert f"resuming {ROWS[1]} seed 0 from" in out and f"{ROWS[0]} seed 0: finished earlier, skipped" in out
    assert list(run.glob("train/**/resume/config.yaml"))  # the resumed fit's own folder (docs/runs.md)
    resumed = json.loads((run / "metrics_test.json").read_text(encoding="utf-8"))
    assert all(resumed[c] == finished[c] for c in COLUMNS)
    report = json.loads((study / "ablation.json").read_text(encoding="utf-8"))
    assert report["tables"]["t4"][1]["runs"]["0"] == {c: resumed[c] for c in COLUMNS}


@pytest.mark.slow
def test_other_settings_are_refused_after_runs(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--rows", "t4", "--seeds", "1", "--size", "tiny", "--out", str(study)]
    assert ablate.main([*args, "--accelerator", "auto"]) == 2
    assert "accelerator: 'cpu' there, 'auto' now" in capsys.readouterr().err
    run = run_folder(study, ROWS[0], 0)
    stored = json.loads((run / "settings.json").read_text(encoding="utf-8"))
    (run / "settings.json").write_text(json.dumps({**stored, "row_config_sha256": "0" * 64}), encoding="utf-8")
    assert ablate.main(args) == 2
    assert "row_config_sha256: '0000" in capsys.readouterr().err
