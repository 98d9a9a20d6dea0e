"""The NF-ResNet experiments: AGC's claims measured with ``examples.nf_resnet.train``.

Budgets are sized for the 2-core CPU machines this project runs on: each run is a few
minutes of the ``cpu`` preset's model. The batch-size grids use a fixed number of steps (as
in large-batch studies that compare at equal steps; equal epochs would leave batch 4096
with 28 steps), so a larger batch also sees more data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from experiments import figures
from experiments.spec import Experiment, Report, Run

CPU_BUDGET = {"epochs": 2}
LARGE_BATCH_BUDGET = {"steps": 60, "warmup_epochs": 0.0}
LONG_BUDGET = {**LARGE_BATCH_BUDGET, "steps": 240, "log_every_steps": 10}
BATCH_SIZES = (256, 1024, 4096)
CLIPPINGS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32)
# Batches above this are run as microbatches of this size (same gradient, summed before
# clipping): XLA:CPU trains the cpu model ~2x faster per image at 256 than at 4096.
CPU_MICROBATCH = 256
# Base learning rate: the trainer's peak is lr · batch / 256, the linear scaling rule.
LARGE_BATCH_LR = 0.2  # peak 0.2 at batch 256, 0.8 at 1024, 3.2 at 4096
LONG_BUDGET_BATCH = 1024  # the batch of the longer-budget λ checks
SEEDS = (0, 1, 2)

CURVES = Report(figures=(figures.curves,), columns=("clip",))


def clip_label(clipping: float | None, global_norm: float | None = None) -> str:
    """How tables and legends name a clipping setting."""
    if global_norm:
        return f"global norm {global_norm:g}"
    return "no clipping" if not clipping else f"AGC λ={clipping:g}"


def batch_overrides(batch: int, clipping: float, microbatch_size: int = CPU_MICROBATCH
                    ) -> dict[str, Any]:
    """The overrides of one (batch size, λ) pair at the linearly scaled learning rate."""
    microbatch = {"microbatch_size": microbatch_size} if batch > microbatch_size else {}
    return {"batch_size": batch, **microbatch, "lr": LARGE_BATCH_LR, "clipping": clipping}


def batch_by_clipping(batches: Sequence[int], clippings: Sequence[float],
                      run_name: Callable[[int, float], str]) -> tuple[Run, ...]:
    """Every (batch size, λ) pair, batch by batch, in the order given."""
    return tuple(Run(run_name(batch, clipping), batch_overrides(batch, clipping),
                     {"batch_size": batch, "clipping": clipping, "clip": clip_label(clipping)})
                 for batch in batches for clipping in clippings)


def with_seeds(runs: Sequence[Run], names: Sequence[str], seeds: Sequence[int]) -> tuple[Run, ...]:
    """``runs`` with the named ones repeated over ``seeds`` (the headline rows of a grid)."""
    missing = set(names) - {run.name for run in runs}
    if missing:
        raise ValueError(f"with_seeds: no run named {sorted(missing)}")
    return tuple(dataclasses.replace(run, seeds=tuple(seeds)) if run.name in names else run
                 for run in runs)


# The batch-4096 pair the README reads as "AGC trains where no clipping diverges".
HEADLINE_4096 = ("batch4096_none", "batch4096_clip0.01")

WITH_WITHOUT_AGC = Experiment(
    name="with_without_agc",
    question="Same NF-ResNet and schedule with AGC (head excluded), with no clipping, "
             "and with global-norm clipping.",
    preset="cpu_grid",
    overrides=CPU_BUDGET,
    runs=(
        Run("agc", {"clipping": 0.16}, {"clip": clip_label(0.16)}),
        Run("no_clipping", {"clipping": 0.0}, {"clip": clip_label(0)}),
        Run("global_norm", {"clipping": 0.0, "clip_global_norm": 1.0},
            {"clip": clip_label(0, 1.0)}),
    ),
    report=CURVES,
    seeds=SEEDS,
)

# Largest batch first puts the telling runs first; smallest first finishes the most runs
# early (a batch-4096 run costs 16 batch-256 runs), for grids that span sessions.
LARGE_BATCH = Experiment(
    name="large_batch",
    question="Batch 256, 1024, 4096 with the learning rate scaled linearly with batch "
             "size, with AGC (λ=0.04) and without clipping.",
    preset="cpu_grid",
    overrides=LARGE_BATCH_BUDGET,
    runs=with_seeds(
        batch_by_clipping(sorted(BATCH_SIZES, reverse=True), (0.04, 0.0),
                          lambda batch, clip: f"batch{batch}_{'agc' if clip else 'none'}"),
        HEADLINE_4096[:1], SEEDS),
    report=Report(figures=(figures.curves_by_batch,), columns=("batch_size", "clip")),
)

CLIPPING_SWEEP = Experiment(
    name="clipping_sweep",
    question="How to pick λ: final test accuracy and the fraction of clipped units for "
             "λ ∈ {0.01 … 0.32} × batch sizes {256, 1024, 4096}.",
    preset="cpu_grid",
    overrides={**LARGE_BATCH_BUDGET, "log_every_steps": 5},
    runs=with_seeds(batch_by_clipping(BATCH_SIZES, CLIPPINGS,
                                      lambda batch, clip: f"batch{batch}_clip{clip:g}"),
                    HEADLINE_4096[1:], SEEDS),
    report=Report(figures=(figures.accuracy_heat_map, figures.clip_fraction_by_batch),
                  columns=("batch_size", "clip")),
)

CLIPPING_LONG = Experiment(
    name="clipping_long",
    question="Does the λ ranking of the 60-step sweep hold at 4× the budget? Batch 1024, "
             "240 steps (4.1 epochs), λ ∈ {0.01, 0.04, 0.16, 0.32} and no clipping.",
    preset="cpu_grid",
    overrides=LONG_BUDGET,
    runs=batch_by_clipping((LONG_BUDGET_BATCH,), (0.01, 0.04, 0.16, 0.32, 0.0),
                           lambda batch, clip: f"clip{clip:g}" if clip else "none"),
    report=Report(figures=(figures.curves, figures.clip_fraction_by_kind),
                  columns=("batch_size", "clip")),
    title=f"Batch {LONG_BUDGET_BATCH}, 240 steps, peak learning rate 0.8",
)

_FLOOR_BASE = batch_overrides(LONG_BUDGET_BATCH, 0.01)  # clipping_long's λ = 0.01 run
SKIP_GAIN_FLOOR = Experiment(
    name="skip_gain_floor",
    question="Is AGC's ε floor (a parameter at zero may move only ~lr·λ·ε per step) what "
             "holds back the zero-initialised skip gains at small λ? Batch 1024, λ = 0.01, "
             "240 steps: AGC on all but the head, also leaving out the skip gains, and "
             "ε = 1e-2.",
    preset="cpu_grid",
    overrides=LONG_BUDGET,
    runs=(
        Run("head_excluded", _FLOOR_BASE, {"clip": "AGC λ=0.01, ε=1e-3"}),
        Run("skip_gains_excluded", {**_FLOOR_BASE, "agc_exclude": "^head/|skip_gain$"},
            {"clip": "AGC λ=0.01, skip gains excluded"}),
        Run("eps_1e-2", {**_FLOOR_BASE, "agc_eps": 1e-2}, {"clip": "AGC λ=0.01, ε=1e-2"}),
    ),
    report=CURVES,
    seeds=SEEDS,
    title="Batch 1024, λ = 0.01, 240 steps",
)

# NF + AGC as the advice table recommends: λ = 0.01 is in its range at every batch size
# (256: any λ; 1024: 0.01 with the skip gains excluded, the best measured; 4096: 0.01–0.02),
# and 240 steps are a short run, where the skip gains are left out of AGC.
NF_VS_BN_CLIPPING = 0.01
NF_VS_BN_EXCLUDE = "^head/|skip_gain$"  # The BatchNorm ResNet has no skip gain.

def nf_vs_bn_runs(batches: Sequence[int], size: str = "cpu",
                  microbatch_size: int = CPU_MICROBATCH) -> tuple[Run, ...]:
    """Per batch size: NF + AGC, NF without clipping, BN without clipping, BN + AGC.

    Args:
      batches: the batch sizes, in run order.
      size: the models' size: ``nf_resnet_<size>`` and ``bn_resnet_<size>``.
      microbatch_size: batches above this run as microbatches of this size.

    Returns:
      Four runs per batch size.
    """
    nf, bn = ("NF-ResNet", "nf"), ("BN ResNet", "bn")
    configs = [(nf, NF_VS_BN_CLIPPING), (nf, 0.0), (bn, 0.0), (bn, NF_VS_BN_CLIPPING)]
    return tuple(
        Run(f"batch{batch}_{short}_{'agc' if clip else 'none'}",
            {"model": f"{short}_resnet_{size}", **batch_overrides(batch, clip, microbatch_size),
             **({"agc_exclude": NF_VS_BN_EXCLUDE} if clip else {})},
            {"batch_size": batch, "model": family, "clipping": clip, "clip": clip_label(clip),
             "curve": f"{family}, {clip_label(clip)}"})
        for batch in batches for (family, short), clip in configs)


# The paper clips the skip gains too (only the classifier is left out). At batch 4096 (peak
# lr 3.2) NF + AGC with them left out diverged in all three seeds, so that batch also runs
# the paper's setting.
PAPER_EXCLUDE = "^head/"
SKIP_GAINS_CLIPPED_BATCH = 4096


def nf_paper_agc_run(batch: int, size: str = "cpu",
                     microbatch_size: int = CPU_MICROBATCH) -> Run:
    """NF + AGC at ``batch`` with the skip gains clipped, as in the paper (head excluded)."""
    label = f"{clip_label(NF_VS_BN_CLIPPING)}, skip gains clipped"
    return Run(f"batch{batch}_nf_agc_skip_gains_clipped",
               {"model": f"nf_resnet_{size}",
                **batch_overrides(batch, NF_VS_BN_CLIPPING, microbatch_size),
                "agc_exclude": PAPER_EXCLUDE},
               {"batch_size": batch, "model": "NF-ResNet", "clipping": NF_VS_BN_CLIPPING,
                "clip": label, "curve": f"NF-ResNet, {label}"})


NF_VS_BN = Experiment(
    name="nf_vs_bn",
    question="NF-ResNet + AGC against a BatchNorm ResNet of the same layout (nf_resnet_cpu, "
             "bn_resnet_cpu), each with and without AGC (λ = 0.01; head and skip gains "
             "excluded), at batch 256, 1024 and 4096 with the learning rate scaled linearly, "
             "240 steps. Above batch 256 every run takes microbatches of 256, so BatchNorm "
             "normalizes over 256 examples at every batch size, as per-device BatchNorm does "
             "in data-parallel training. At batch 4096 also NF + AGC with the skip gains "
             "clipped, as in the paper.",
    preset="cpu_grid",
    overrides=LONG_BUDGET,
    runs=(*nf_vs_bn_runs(BATCH_SIZES), nf_paper_agc_run(SKIP_GAINS_CLIPPED_BATCH)),
    report=Report(figures=(figures.curves_by_batch,), columns=("batch_size", "model", "clip"),
                  legend="curve", step_time=True),
    seeds=SEEDS,
    title="NF-ResNet vs BatchNorm ResNet, learning rate ∝ batch size, 240 steps",
)

CPU_PRESET_RETUNE = Experiment(
    name="cpu_preset_retune",
    question="Does what the grids showed lift the grids' base preset (cpu_grid: 10 epochs, "
             "~15 min on 2 cores) to 0.93? The preset as it is; its skip gains left out of "
             "AGC (skip_gain_floor); that plus 10x the kernels' weight decay; 20 epochs with "
             "10x the weight decay on two CPU devices (the cpu preset since 2026-12-05).",
    preset="cpu_grid",
    overrides={},
    runs=(
        Run("preset", {}, {"clip": "cpu_grid, 10 epochs (AGC λ=0.16, head excluded)"}),
        Run("skip_gains_excluded", {"agc_exclude": "^head/|skip_gain$"},
            {"clip": "skip gains also excluded"}),
        Run("skip_gains_excluded_wd5e-4",
            {"agc_exclude": "^head/|skip_gain$", "weight_decay": 5e-4},
            {"clip": "skip gains also excluded, weight decay 5e-4"}),
        Run("epochs20_wd5e-4_2_devices",
            {"epochs": 20, "weight_decay": 5e-4, "cpu_devices": 2},
            {"clip": "20 epochs, weight decay 5e-4, two CPU devices (the cpu preset)"},
            seeds=(0, 1, 2)),
    ),
    report=CURVES,
    title="The cpu preset's base (cpu_grid), 10 epochs, and three re-tunings",
)

EXPERIMENTS = (WITH_WITHOUT_AGC, LARGE_BATCH, CLIPPING_SWEEP, CLIPPING_LONG, SKIP_GAIN_FLOOR,
               NF_VS_BN, CPU_PRESET_RETUNE)
