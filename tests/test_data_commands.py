"""The data tools through the ``arn-lightning`` dispatcher: stats, synth, benchmark data."""

import json

from ag_fixtures import EXPECTED
from arn_lightning.cli import main as cli_main


def test_stats_json_matches_hand_counts(standard_root, capsys):
    assert cli_main(["stats", "--root", str(standard_root), "--task", "predcls", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["task"], stats["min_frames"], stats["filter_small"]) == ("predcls", 3, 0.0)
    train = stats["splits"]["train"]
    assert {k: train[k] for k in ("videos", "frames", "objects")} == EXPECTED["predcls"]["train"]
    objects = {row["name"]: row["count"] for row in train["objects_per_class"]}
    assert objects["cup/glass/bottle"] == 3 and objects["chair"] == 1 and objects["phone/camera"] == 1
    assert "person" not in objects and len(objects) == 35
    counts = [row["count"] for row in train["predicates"]]
    assert counts == sorted(counts, reverse=True) and len(counts) == 26
    # looking_at, in_front_of and holding tie at 4: ties keep the global predicate order
    assert train["predicates"][:3] == [
        {"name": "looking_at", "type": "attention", "count": 4},
        {"name": "in_front_of", "type": "spatial", "count": 4},
        {"name": "holding", "type": "contacting", "count": 4},
    ]
    assert train["relationships"] == 5 + 7 + 6  # attention + spatial + contacting labels of the 5 kept objects


def test_stats_text_and_errors(standard_root, capsys):
    assert cli_main(["stats", "--root", str(standard_root)]) == 0
    out = capsys.readouterr().out
    assert "train: 1 / 2 videos kept" in out and "all_objects_small 1" in out and "head to tail" in out
    (standard_root / "annotations" / "relationship_classes.txt").write_text("lookingat\n")
    assert cli_main(["stats", "--root", str(standard_root)]) == 1
    assert "relationship_classes.txt: Expected 26 non-empty lines but got 1" in capsys.readouterr().err


def test_synth_command(tmp_path, capsys):
    root = tmp_path / "synth"
    assert cli_main(["synth", "--root", str(root), "--videos", "2", "--frames", "2", "--size", "160x120"]) == 0
    assert "Wrote the synthetic Action Genome" in capsys.readouterr().out
    assert (root / "annotations" / "person_bbox.pkl").is_file()
    assert cli_main(["synth", "--root", str(root), "--videos", "2"]) == 1
    assert "absent or empty" in capsys.readouterr().err


def test_benchmark_data_runs(capsys):
    args = [
        "benchmark",
        "data",
        "--videos",
        "2",
        "--frames",
        "3",
        "--batches",
        "1",
        "--batch-size",
        "1",
        "--resize",
        "48/80",
        "--json",
    ]
    assert cli_main(args) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["resize"] == "48/80" and result["output_hw"] == [45, 80]
    assert result["frames"] == 3 and result["frames_per_s_per_worker"] > 0
