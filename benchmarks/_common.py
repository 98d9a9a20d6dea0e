"""What every benchmark shares: the interleaved timer, the machine description, result files.

Each benchmark times several variants of one computation in the same process. Load from
other processes drifts over a run, so the variants are timed *interleaved*: every repeat
calls each variant once, starting from a different variant each time, and every call is
timed up to ``jax.block_until_ready`` with the garbage collector off. Results go to
``benchmarks/results/<benchmark>_<machine>.json``, where ``<machine>`` names the backend and
the hardware (:func:`machine_slug`), and every file records :func:`machine_info`.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np
import optax

import agc_optax

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"

K = TypeVar("K", bound=Hashable)


def time_call(call: Callable[[], Any]) -> float:
    """Seconds one call takes, up to ``jax.block_until_ready`` of its result."""
    start = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - start


def warm_up(calls: Mapping[K, Callable[[], Any]]) -> dict[K, float]:
    """Calls every variant twice (compile, then warm); returns the first call's seconds."""
    first_call_s = {key: time_call(call) for key, call in calls.items()}
    for call in calls.values():
        time_call(call)
    return first_call_s


def time_interleaved(calls: Mapping[K, Callable[[], Any]], repeats: int) -> dict[K, list[float]]:
    """Times every variant ``repeats`` times, interleaved, in milliseconds.

    Args:
      calls: the variants, each a function of no argument; call :func:`warm_up` first.
      repeats: timed calls per variant.

    Returns:
      Per variant, its ``repeats`` call times in ms. Repeat ``i`` calls the variants in
      order, rotated by ``i``, so that drifting load falls on all of them alike.
    """
    keys = list(calls)
    times: dict[K, list[float]] = {key: [] for key in keys}
    gc.collect()
    gc.disable()
    try:
        for repeat in range(repeats):
            shift = repeat % len(keys)
            for key in keys[shift:] + keys[:shift]:
                times[key].append(1e3 * time_call(calls[key]))
    finally:
        gc.enable()
    return times


def summarise(samples_ms: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, interquartile range and extremes of one variant's times (ms)."""
    q25, median, q75 = np.percentile(samples_ms, [25, 50, 75])
    return {
        "median_ms": float(median),
        "q25_ms": float(q25),
        "q75_ms": float(q75),
        "iqr_ms": float(q75 - q25),
        "min_ms": float(min(samples_ms)),
        "max_ms": float(max(samples_ms)),
    }


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    found = re.search(r"^model name\s*:\s*(.*)$", text, re.MULTILINE)
    return found[1].strip() if found else (platform.processor() or platform.machine())


def machine_info() -> dict[str, Any]:
    """Where the numbers come from: CPU, accelerator, library versions and the load.

    Returns:
      A JSON-ready dict; ``load_average_1m_at_start`` records how busy the machine was,
      since other processes compete for its cores and memory bandwidth.
    """
    device = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "agc_optax": agc_optax.__version__,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_slug(machine: Mapping[str, Any]) -> str:
    """A file-name label of the hardware: ``cpu-amd-epyc-2c`` or ``gpu-1x-nvidia-h100``.

    Simulated host devices (``--xla_force_host_platform_device_count``) count as the CPU
    they run on.
    """
    if machine["backend"] == "cpu":
        return f"cpu-{_slug(machine['cpu_model'])}-{machine['cpu_count']}c"
    return f"{machine['backend']}-{machine['device_count']}x-{_slug(machine['device_kind'])}"


def result_path(benchmark: str, machine: Mapping[str, Any], quick: bool = False) -> Path:
    """``benchmarks/results/<benchmark>_<machine>.json`` (``..._quick.json`` for smoke runs)."""
    suffix = "_quick" if quick else ""
    return RESULTS_DIR / f"{benchmark}_{machine_slug(machine)}{suffix}.json"


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces a run, relative to the repository root."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", "-m", module, *args])


def result_header(benchmark: str, module: str, argv: Sequence[str] | None) -> dict[str, Any]:
    """The fields every result file starts with: name, time, machine and command."""
    return {
        "benchmark": benchmark,
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "command": command_line(module, argv),
    }


def write_results(results: Mapping[str, Any], out: Path) -> None:
    """Writes the results as indented JSON and says where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    shown = out.resolve()
    print(f"wrote {shown.relative_to(REPO) if shown.is_relative_to(REPO) else out}")
