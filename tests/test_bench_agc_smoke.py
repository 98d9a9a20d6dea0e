"""Smoke test of benchmarks/bench_agc.py: runs --quick and checks the JSON, never the speed."""

import json
import math

import jax
import jax.numpy as jnp

from benchmarks import bench_agc as bench


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
            assert stats["median_ms"] > 0, (name, variant)
            assert stats["iqr_ms"] >= 0, (name, variant)
            assert len(stats["samples_ms"]) == 2, (name, variant)
        assert set(tree["ratios"]) >= set(bench.TARGETS)
        assert all(ratio > 0 for ratio in tree["ratios"].values())
        assert set(tree["targets_met"]) == set(bench.TARGETS)
        assert 0 <= tree["clipped_fraction"] <= 1
    assert set(written["targets_met"]) == {"resnet50"}
    assert "agc/floor" in capsys.readouterr().out


def test_full_trees_have_the_documented_size():
    for name, leaves, millions in (("resnet50", 177, 25.6), ("transformer", 292, 22.7)):
        shapes = jax.tree.leaves(bench.tree_shapes(name, quick=False))
        num_params = sum(math.prod(s.shape) for s in shapes)
        assert len(shapes) == leaves, name
        assert round(num_params / 1e6, 1) == millions, name
        assert all(s.dtype == jnp.float32 for s in shapes), name
