"""The benchmarks' shared timer and result naming (benchmarks/_common.py)."""

import functools
import math
import time

from benchmarks import _common


def test_result_files_are_named_after_the_backend_and_hardware():
    cpu = {"backend": "cpu", "cpu_model": "AMD EPYC 7B13", "cpu_count": 2,
           "device_kind": "cpu", "device_count": 8}
    gpu = {"backend": "gpu", "cpu_model": "Intel(R) Xeon(R)", "cpu_count": 16,
           "device_kind": "NVIDIA H100 80GB HBM3", "device_count": 1}
    assert _common.machine_slug(cpu) == "cpu-amd-epyc-7b13-2c"
    assert _common.machine_slug(gpu) == "gpu-1x-nvidia-h100-80gb-hbm3"
    assert _common.result_path("agc_update", gpu).name == (
        "agc_update_gpu-1x-nvidia-h100-80gb-hbm3.json")
    assert _common.result_path("train_step", cpu, quick=True).name == (
        "train_step_cpu-amd-epyc-7b13-2c_quick.json")
    assert _common.result_path("x", cpu).parent == _common.REPO / "benchmarks" / "results"


def test_interleaved_timer_rotates_the_order_and_times_every_call():
    order = []
    sleep_ms = {"a": 0.0, "b": 5.0, "c": 20.0}

    def call(name):
        order.append(name)
        time.sleep(sleep_ms[name] / 1e3)

    times = _common.time_interleaved({name: functools.partial(call, name) for name in "abc"},
                                     repeats=4)
    assert order == list("abc" "bca" "cab" "abc")
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4, "c": 4}
    # In milliseconds, each variant's own call: no time is below its sleep (a time in seconds,
    # or one filed under the wrong variant, is), and every time is positive and finite.
    for name, samples in times.items():
        assert all(math.isfinite(t) and t > 0 for t in samples), (name, samples)
        assert min(samples) >= sleep_ms[name], (name, samples)


def test_warm_up_calls_each_variant_twice_and_reports_the_first_call():
    counts = {"a": 0, "b": 0}

    def bump(name):
        counts[name] += 1

    first = _common.warm_up({name: (lambda name=name: bump(name)) for name in counts})
    assert counts == {"a": 2, "b": 2} and set(first) == {"a", "b"}


def test_summary_statistics_of_known_samples():
    stats = _common.summarise([4.0, 1.0, 3.0, 2.0, 5.0])
    assert stats["median_ms"] == 3.0
    assert (stats["q25_ms"], stats["q75_ms"], stats["iqr_ms"]) == (2.0, 4.0, 2.0)
    assert (stats["min_ms"], stats["max_ms"]) == (1.0, 5.0)


def test_commands_are_recorded_relative_to_the_repository():
    assert _common.command_line("benchmarks.bench_agc", ["--quick"]) == (
        "python -m benchmarks.bench_agc --quick")
