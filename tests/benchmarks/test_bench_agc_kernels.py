"""bench_agc's kernel counter, on programs whose kernels are known (issue 31)."""

import jax
import jax.numpy as jnp
import optax

import agc_optax
from benchmarks import bench_agc as bench
from benchmarks import hlo


def compiled_text(fn, *args):
    return jax.jit(fn).lower(*args).compile().as_text()


def test_one_elementwise_pass_is_one_fusion():
    counts = hlo.count_kernels(compiled_text(lambda x: x * 2 + 1, jnp.ones(8)), num_leaves=1)
    assert counts == {"kernels": 1, "fusions": 1, "conditionals": 0, "kernels_per_leaf": 1.0,
                      "rare_branch_kernels": 0}


def test_agc_has_one_conditional_and_the_variant_without_it_none():
    params = {"w": jnp.ones((8, 4)), "b": jnp.ones(4)}
    transform = agc_optax.agc(0.01)
    args = (params, transform.init(params), params)
    with_cond = hlo.count_kernels(compiled_text(transform.update, *args), 2)
    without = hlo.count_kernels(
        compiled_text(bench.without_range_check(transform.update), *args), 2
    )
    assert with_cond["conditionals"] == 1 and with_cond["rare_branch_kernels"] > 0
    assert without["conditionals"] == 0 and without["rare_branch_kernels"] == 0
    optax_counts = hlo.count_kernels(
        compiled_text(optax.adaptive_grad_clip(0.01).update, *args), 2
    )
    assert optax_counts["conditionals"] == 0 and optax_counts["kernels"] > 0
