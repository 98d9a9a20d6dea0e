"""The ViT grids: they ask what they say, and the driver resumes them."""

from __future__ import annotations

import dataclasses

import pytest

from experiments import report, runner, vit


def test_placement_grid_covers_every_placement_at_the_unstable_rate_with_a_control():
    runs = vit.VIT_PLACEMENT.runs
    settings = [(r.overrides["lr"], r.overrides["clipping"], r.overrides["clip_global_norm"],
                 r.overrides.get("agc_placement")) for r in runs]
    unstable, stable = vit.UNSTABLE_LR, vit.STABLE_LR
    assert (stable, 0.0, 0.0, None) in settings  # the control
    assert (unstable, 0.0, 0.0, None) in settings  # unclipped AdamW
    assert (unstable, 0.0, 1.0, None) in settings  # global norm 1.0
    for placement, clippings in (("before", vit.BEFORE_CLIPPINGS),
                                 ("after", vit.AFTER_CLIPPINGS)):
        assert {(unstable, c, 0.0, placement) for c in clippings} <= set(settings)
    assert len(set(settings)) == len(settings) == 3 + len(vit.BEFORE_CLIPPINGS) + len(
        vit.AFTER_CLIPPINGS)  # no run twice, nothing else


def test_headline_comparisons_have_three_seeds_and_sweep_points_one():
    experiment = vit.VIT_PLACEMENT
    seeds = {r.name: experiment.seeds if r.seeds is None else r.seeds for r in experiment.runs}
    for name in ("control_lr0.003", "none", "global_norm", "before0.01", "after0.01"):
        assert seeds[name] == (0, 1, 2), name
    assert seeds["before0.1"] == seeds["after0.1"] == (0,)
    for grid in (vit.VIT_WHAT_TO_CLIP, vit.VIT_UNITS):
        assert grid.seeds == (0, 1, 2) and all(r.seeds is None for r in grid.runs)


def test_what_to_clip_and_units_vary_one_thing_each():
    what = {r.name: r.overrides for r in vit.VIT_WHAT_TO_CLIP.runs}
    for placement in ("before", "after"):
        assert what[f"{placement}_kernels_only"] == {**what[f"{placement}_all"],
                                                     "clip_norms_and_biases": False}
    units = [r.overrides["agc_units"] for r in vit.VIT_UNITS.runs]
    assert sorted(units) == sorted(["infer", "shape", "optax_rank"] * 2)
    for grid in (vit.VIT_WHAT_TO_CLIP, vit.VIT_UNITS):
        assert {r.overrides["lr"] for r in grid.runs} == {vit.UNSTABLE_LR}
        assert {r.overrides["clipping"] for r in grid.runs} == {vit.HEADLINE_CLIPPING}
        assert len({r.labels["clip"] for r in grid.runs}) == len(grid.runs)  # legends differ


@pytest.mark.slow
def test_driver_resumes_a_smoke_sized_vit_grid(tmp_path):
    # The placement grid's AGC-before and AGC-after runs, one seed, at smoke size.
    picked = [r for r in vit.VIT_PLACEMENT.runs if r.name in ("before0.01", "after0.01")]
    tiny = dataclasses.replace(
        vit.VIT_PLACEMENT, name="vit_tiny", preset="smoke", seeds=(0,),
        overrides={"steps": 4, "train_examples": 512, "test_examples": 200,
                   "log_every_steps": 2},
        runs=tuple(dataclasses.replace(r, seeds=None) for r in picked))
    launched = []

    def counting_launch(command, workdir):
        launched.append(workdir.name)
        return runner.launch_subprocess(command, workdir)

    results, runs = tmp_path / "results", tmp_path / "runs"
    first = runner.run_experiment(tiny, results, runs, only=["before0.01"],
                                  launch=counting_launch)
    assert first == {"before0.01": "ran"}, (runs / "vit_tiny/before0.01/train.log").read_text()
    second = runner.run_experiment(tiny, results, runs, launch=counting_launch)
    assert second == {"before0.01": "done", "after0.01": "ran"}
    assert launched == ["before0.01", "after0.01"]  # the stored trial was not launched again
    written = {p.name for p in report.report_experiment(tiny, results, tmp_path / "figures")}
    assert written == {"vit_tiny.png", "vit_tiny_clip_fraction.png", "vit_tiny.md"}
    table = (tmp_path / "figures" / "vit_tiny.md").read_text()
    assert "AGC before AdamW λ=0.01" in table and "AGC after AdamW λ=0.01" in table
