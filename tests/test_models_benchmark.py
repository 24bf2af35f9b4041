"""``arn-lightning benchmark model``: the paper configuration's size and the benchmark command."""

import re

from arn_lightning.benchmarks import model as bench
from arn_lightning.cli import main as cli_main
from arn_lightning.models.arn import ARN


def test_all_triplet_categories():
    cats = bench.all_triplet_categories()
    assert {k: len(v) for k, v in cats.items()} == {"attention": 105, "spatial": 210, "contacting": 595}
    assert [1 not in {o for _, o in v} for v in cats.values()] == [True] * 3  # the person is never the object


def test_paper_configuration_matches_the_papers_parameter_count():
    model = ARN(bench.CONFIGS["paper"], bench.all_triplet_categories())
    rows = bench.parameter_table(model)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(n for _, n in rows) == total
    assert abs(total / 1e6 / bench.PAPER_PARAMS_M - 1) <= bench.PARAM_TOLERANCE
    assert dict(rows)["encoder"] == 6 * (4 * 256 * 256 + 4 * 256 + 2 * 256 * 2048 + 2048 + 256 + 2 * 2 * 256)


def test_benchmark_command_runs_tiny(capsys):
    argv = [
        "benchmark",
        "model",
        "--config",
        "tiny",
        "--height",
        "64",
        "--width",
        "96",
        "--small-height",
        "32",
        "--small-width",
        "32",
        "--runs",
        "1",
        "--warmup",
        "0",
    ]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "ARN (tiny) trainable parameters" in out and "predicate.association" in out
    assert re.search(r"64x96: \d+ ms/clip", out) and re.search(r"32x32: \d+ ms/clip", out)
    assert "paper:" not in out  # the comparison is only printed for the paper configuration
