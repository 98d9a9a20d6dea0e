"""Smoke test of benchmarks/bench_agc.py: runs --quick and checks the JSON, never the speed."""

import importlib.util
import json
import sys
from pathlib import Path

BENCH_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_agc.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_agc", BENCH_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_complete_json(tmp_path, capsys):
    bench = _load_bench()
    out = tmp_path / "agc_update.json"

    returned = bench.main(["--quick", "--repeats", "2", "--out", str(out)])

    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    for key in ("cpu_model", "cpu_count", "processor", "jax", "optax", "backend", "device_kind"):
        assert key in written["machine"], key
    assert written["timestamp"]
    assert set(written["trees"]) == {"resnet50", "transformer"}
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
    assert set(written["targets_met"]) == {"resnet50", "transformer"}
    assert "agc/floor" in capsys.readouterr().out
