"""The association structure of the synthetic Action Genome (``generate(association=...)``) and its measurement by
``arn-lightning stats`` (uncertainty coefficients, docs/stats.md)."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from arn_lightning.commands import stats as stats_command
from arn_lightning.commands import synth as synth_command
from arn_lightning.data.ag import load_annotations
from arn_lightning.data.stats import association_stats, dataset_stats, entropy, uncertainty_coefficient
from arn_lightning.data.synth import MARKER_FILE, follows_preferences, generate, read_association

#: SHA-256 over (relative path, file SHA-256) of every file of ``generate(videos=16, frames=4, size=(160, 120),
#: seed=11)``, computed with the generator before the association option existed: association 0 must reproduce it.
FINGERPRINT = "e3fb122956beb16e75c6063e321a66783d7091f4ef74a5786901e90dae8fddd2"
SMALL = {"videos": 16, "frames": 4, "size": (160, 120), "seed": 11}


def _fingerprint(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def test_association_zero_is_the_plain_generator_bit_for_bit(tmp_path: Path) -> None:
    default = generate(tmp_path / "default", **SMALL).root
    explicit = generate(tmp_path / "zero", association=0.0, predicate_association=0.0, **SMALL).root
    assert _fingerprint(default) == FINGERPRINT
    assert _fingerprint(explicit) == FINGERPRINT
    assert read_association(default) == {"object": 0.0, "predicate": 0.0}
    assert read_association(tmp_path) is None  # not a synthetic root


def test_association_changes_the_scenes_and_is_recorded(tmp_path: Path) -> None:
    root = generate(tmp_path / "a", association=0.9, predicate_association=0.4, **SMALL).root
    assert _fingerprint(root) != FINGERPRINT
    assert read_association(root) == {"object": 0.9, "predicate": 0.4}
    assert "association: " in (root / MARKER_FILE).read_text(encoding="utf-8")
    again = generate(tmp_path / "b", association=0.9, predicate_association=0.4, **SMALL).root
    assert _fingerprint(again) == _fingerprint(root)  # still deterministic
    # still valid AG format: the loader reads it with both splits
    annotations = load_annotations(root, "sgdet")
    assert annotations.frames("train") and annotations.frames("test")


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
def test_strength_out_of_range_is_refused(tmp_path: Path, bad: float) -> None:
    with pytest.raises(ValueError, match="Expected association in \\[0, 1\\]"):
        generate(tmp_path / "r", association=bad, **SMALL)
    with pytest.raises(ValueError, match="Expected predicate_association in \\[0, 1\\]"):
        generate(tmp_path / "r", predicate_association=bad, **SMALL)


def _preference_rate(root: Path) -> float:
    """Fraction of visible objects whose labels follow both rules."""
    import pickle

    with (root / "annotations" / "object_bbox_and_relationship.pkl").open("rb") as handle:
        objects = pickle.load(handle)
    verdicts = [
        follows_preferences(
            entry["class"],
            {kind: entry[f"{kind}_relationship"] for kind in ("attention", "spatial", "contacting")},
            True,
            True,
        )
        for entries in objects.values()
        for entry in entries
        if entry["visible"]
    ]
    return sum(verdicts) / len(verdicts)


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[float, Path]:
    base = tmp_path_factory.mktemp("association")
    return {
        s: generate(base / f"s{s}", videos=60, frames=4, size=(160, 120), seed=1, association=s).root
        for s in (0.0, 0.5, 0.9)
    }


def test_the_rules_are_followed_more_often_with_strength(roots: dict[float, Path]) -> None:
    rates = [_preference_rate(roots[s]) for s in (0.0, 0.5, 0.9)]
    assert rates[0] < rates[1] < rates[2]
    assert rates[2] > 0.97 and rates[0] < 0.9


def test_stats_measures_the_strength_back_in_order(roots: dict[float, Path]) -> None:
    measured = {
        s: dataset_stats(load_annotations(r, "sgdet"))["splits"]["train"]["association"] for s, r in roots.items()
    }
    objects = [measured[s]["object_to_predicate"]["mean"] for s in (0.0, 0.5, 0.9)]
    predicates = [measured[s]["predicate_to_predicate"]["mean"] for s in (0.0, 0.5, 0.9)]
    assert objects[0] < objects[1] <= objects[2] and objects[2] - objects[0] > 0.1
    assert predicates[0] < predicates[1] < predicates[2] and predicates[2] - predicates[0] > 0.1
    assert measured[0.9]["predicate_to_predicate"]["contacting->attention"] > 0.95
    assert measured[0.0]["predicate_to_predicate"]["contacting->attention"] < 0.8
    keys = set(measured[0.0]["predicate_to_predicate"])
    assert keys == {
        f"{a}->{b}"
        for a in ("attention", "spatial", "contacting")
        for b in ("attention", "spatial", "contacting")
        if a != b
    } | {"mean"}


def test_uncertainty_coefficient_on_hand_counts() -> None:
    assert entropy(Counter({"a": 1, "b": 1})) == pytest.approx(1.0)
    assert uncertainty_coefficient([(0, "a"), (1, "b"), (0, "a"), (1, "b")]) == pytest.approx(1.0)
    assert uncertainty_coefficient([(0, "a"), (0, "b"), (1, "a"), (1, "b")]) == pytest.approx(0.0)
    assert uncertainty_coefficient([(0, "a"), (1, "a")]) is None  # nothing to predict
    # x in {0, 1, 2}; y = a for 0 and 1, b for 2 except one: H(Y) and H(Y|X) by hand
    pairs = [(0, "a"), (0, "a"), (1, "a"), (1, "a"), (2, "b"), (2, "a")]
    h_y = -(5 / 6) * math.log2(5 / 6) - (1 / 6) * math.log2(1 / 6)
    h_y_given_x = (2 / 6) * 1.0
    assert uncertainty_coefficient(pairs) == pytest.approx((h_y - h_y_given_x) / h_y)
    assert association_stats([])["object_to_predicate"]["mean"] is None


def test_synth_and_stats_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--root", str(tmp_path / "r"), "--videos", "6", "--frames", "3", "--size", "160x120"]
    assert synth_command.main([*args, "--association", "0.7"]) == 0
    assert "association: object 0.7, predicate 0.7" in capsys.readouterr().out
    assert read_association(tmp_path / "r") == {"object": 0.7, "predicate": 0.7}
    with pytest.raises(SystemExit) as exc:
        synth_command.main([*args, "--association", "1.2", "--overwrite"])
    assert exc.value.code == 2
    assert "Expected a number in [0, 1] but got '1.2'" in capsys.readouterr().err
    assert stats_command.main(["--root", str(tmp_path / "r")]) == 0
    assert "association (uncertainty coefficient" in capsys.readouterr().out
    assert stats_command.main(["--root", str(tmp_path / "r"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["splits"]["train"]["association"]) == {"objects", "object_to_predicate", "predicate_to_predicate"}
