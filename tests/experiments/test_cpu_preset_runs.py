"""The main job's promise, read from its stored runs: the ``cpu`` preset, 3 seeds, ≥ 0.93.

``bash scripts/train.sh`` runs the NF-ResNet ``cpu`` preset; its three seeds are stored as
the trial ``cpu_preset_retune/epochs20_wd5e-4_2_devices`` (seeds 1 and 2 with a suffix).
The preset must be that trial's configuration, each seed must reach 0.93 test accuracy on
the full test set within 15 minutes, and the README and the example's page must quote what
the runs stored.
"""

import dataclasses
import statistics

import pytest

from examples.nf_resnet import configs
from experiments import fingerprint, paths
from experiments.runs import read_run

TRIAL = "cpu_preset_retune/epochs20_wd5e-4_2_devices"
SEEDS = (0, 1, 2)
FULL_TEST_SET = 10_000


def stored(seed: int):
    return read_run(paths.RESULTS_DIR / (TRIAL + (f"_seed{seed}" if seed else "")))


@pytest.mark.parametrize("seed", SEEDS)
def test_each_seed_is_the_cpu_preset_and_reaches_093_within_15_minutes(seed):
    run = stored(seed)
    preset = dataclasses.replace(configs.get_config("cpu"), seed=seed)
    assert fingerprint.differences(run.config, preset) == []
    assert run.config["cpu_devices"] == preset.cpu_devices == 2  # Execution-only, yet as run.
    assert run.config["test_examples"] is None and run.summary["num_devices"] == 2
    assert run.summary["final_test_accuracy"] >= 0.93, seed
    assert run.summary["wall_seconds"] <= 15 * 60, seed
    assert not run.summary["diverged"] and not run.summary["interrupted"]


def test_the_readme_and_the_example_page_quote_the_stored_seeds():
    summaries = [stored(seed).summary for seed in SEEDS]
    accuracies = [s["final_test_accuracy"] for s in summaries]
    seconds = sorted(round(s["wall_seconds"]) for s in summaries)
    quoted = (f"**{statistics.mean(accuracies):.4f}**",
              *(f"{a:.4f}" for a in accuracies), f"{seconds[0]}–{seconds[-1]} s")
    for page in ("README.md", "docs/examples/nf_resnet.md", "docs/results.md"):
        rows = [line for line in (paths.REPO_ROOT / page).read_text().splitlines()
                if quoted[0] in line]
        assert rows, f"{page} does not quote the mean {quoted[0]}"
        for number in quoted[1:]:
            assert number in rows[0], f"{page}: {number} not in {rows[0]!r}"
