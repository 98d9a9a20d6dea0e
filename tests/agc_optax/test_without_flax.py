"""agc_optax needs jax, optax and numpy only: flax is imported for nnx.Modules alone.

Each test runs a fresh interpreter, so that what this process already imported
(the other tests import flax) cannot hide an import.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[2]

# Makes `import flax` (and any flax submodule) fail as if flax were not installed.
BLOCK_FLAX = """
import importlib.abc, sys

class _NoFlax(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "flax" or name.startswith("flax."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoFlax())
"""


def run_python(code: str, block_flax: bool = False) -> str:
    code = (BLOCK_FLAX if block_flax else "") + textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO / "tests",
        env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_import_does_not_import_flax():
    out = run_python("""
        import sys
        import agc_optax
        print(sorted(m for m in sys.modules if m == "flax" or m.startswith("flax.")))
    """)
    assert out.strip() == "[]"


def test_library_runs_with_flax_uninstalled():
    # A plain-JAX conv net: fan-in read from the forward pass, then agc and
    # with_agc updates checked against the float64 NumPy reference.
    out = run_python("""
        import jax, jax.numpy as jnp, numpy as np, optax
        import agc_optax
        from helpers.reference import reference_agc

        try:
            import flax  # noqa: F401
            raise SystemExit("the blocker let flax through")
        except ModuleNotFoundError:
            pass

        def forward(p, x):
            h = jax.lax.conv_general_dilated(x, p["conv"], (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return h.mean((1, 2)) @ p["dense"]["kernel"] + p["dense"]["bias"]

        rng = np.random.default_rng(0)
        params = {"conv": rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
                  "dense": {"kernel": rng.normal(size=(4, 5)).astype(np.float32),
                            "bias": rng.normal(size=(5,)).astype(np.float32)}}
        grads = jax.tree.map(lambda p: (10 * rng.normal(size=p.shape)).astype(np.float32),
                             params)
        rule = agc_optax.infer_unit_axes(forward, params, jnp.zeros((1, 6, 6, 2)))
        fan_in = {"conv": (0, 1, 2), "dense/kernel": (0,), "dense/bias": (0,)}
        for path, axes in fan_in.items():
            assert rule.entries[path].fan_in == axes, (path, rule.entries[path])

        tx = agc_optax.agc(0.01, unit_axes=rule)
        clipped, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        sgd = agc_optax.with_agc(optax.sgd(1.0), 0.01, unit_axes=rule)
        steps, _ = jax.jit(sgd.update)(grads, sgd.init(params), params)
        for keys, axes in [(("conv",), (0, 1, 2)), (("dense", "kernel"), (0,)),
                           (("dense", "bias"), (0,))]:
            pick = lambda t: t[keys[0]] if len(keys) == 1 else t[keys[0]][keys[1]]
            expected, _ = reference_agc(pick(grads), pick(params), axes, 0.01)
            np.testing.assert_allclose(pick(clipped), expected, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(pick(steps), -expected, rtol=1e-5, atol=1e-7)

        try:
            agc_optax.nnx_unit_axes(object())
        except ImportError as error:
            assert "agc-optax[flax]" in str(error), error
        else:
            raise SystemExit("nnx_unit_axes did not say flax is missing")
        print("ok")
    """, block_flax=True)
    assert out.strip() == "ok"
