"""Smoke test of benchmarks/bench_agc.py: runs --quick and checks the JSON, never the speed."""

import json
import math
import statistics

import jax
import jax.numpy as jnp
import pytest

from benchmarks import bench_agc as bench
from benchmarks import trees


def assert_consistent_summary(stats: dict, repeats: int, where: str) -> None:
    """The summary is of the samples, in ms: ordered quantiles, all positive and finite."""
    stats = {"where": where, **stats}  # Shown by every failed assertion below.
    samples = stats["samples_ms"]
    assert len(samples) == repeats, stats
    assert all(math.isfinite(t) and t > 0 for t in samples), stats
    order = [stats[k] for k in ("min_ms", "q25_ms", "median_ms", "q75_ms", "max_ms")]
    assert order == sorted(order) and order[0] > 0, stats
    # samples_ms are rounded to 4 decimals; the statistics are not.
    assert (min(samples), max(samples)) == pytest.approx((order[0], order[-1]), abs=1e-4), stats
    assert stats["median_ms"] == pytest.approx(statistics.median(samples), abs=1e-4), stats
    assert stats["iqr_ms"] == pytest.approx(stats["q75_ms"] - stats["q25_ms"]), stats
    assert 0 <= stats["iqr_ms"] <= stats["max_ms"] - stats["min_ms"], stats


def test_quick_run_writes_complete_json(tmp_path, capsys):
    out = tmp_path / "agc_update.json"

    # One tree keeps the test well under 20 s on a loaded 2-core machine (compiles dominate).
    returned = bench.main(["--quick", "--tree", "resnet50", "--repeats", "2", "--out", str(out)])

    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    for key in ("cpu_model", "cpu_count", "jax", "optax", "backend", "device_kind"):
        assert key in written["machine"], key
    assert written["timestamp"]
    assert set(written["trees"]) == {"resnet50"}
    for name, tree in written["trees"].items():
        assert set(tree["variants"]) == set(bench.VARIANTS), name
        for variant, stats in tree["variants"].items():
            assert_consistent_summary(stats, repeats=2, where=f"{name}/{variant}")
        assert set(tree["ratios"]) >= set(bench.TARGETS)
        assert all(ratio > 0 for ratio in tree["ratios"].values())
        assert set(tree["targets_met"]) == set(bench.TARGETS)
        assert 0 <= tree["clipped_fraction"] <= 1
    assert set(written["targets_met"]) == {"resnet50"}
    assert "agc/floor" in capsys.readouterr().out


def test_full_trees_have_the_documented_size():
    for name, leaves, millions in (("resnet50", 177, 25.6), ("transformer", 292, 22.7)):
        shapes = jax.tree.leaves(trees.tree_shapes(name, quick=False))
        num_params = sum(math.prod(s.shape) for s in shapes)
        assert len(shapes) == leaves, name
        assert round(num_params / 1e6, 1) == millions, name
        assert all(s.dtype == jnp.float32 for s in shapes), name
