#!/usr/bin/env bash
# The minimum-versions job: a second virtual environment with exactly the floors that
# pyproject.toml declares (jax, jaxlib at jax's floor, optax, numpy; then flax from the
# `flax` extra). First `pip install .` without flax must import and run the library; then
# the library's tests run there with flax. Extra arguments go to pytest.
# MIN_VENV overrides the environment's place (default: .venv/min-versions, inside the main
# environment's ignored folder; reused by later runs).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MIN_VENV:-$repo/.venv/min-versions}"
python="${PYTHON:-python3}"
cd "$repo"

# The library's tests: they import agc_optax, jax, optax, numpy, flax, pytest and
# hypothesis only (no examples, Haiku or Equinox), as tests/agc_optax/test_packaging.py checks, with the
# helpers they import and tests/conftest.py. A new test of the library belongs here.
library_tests=(
  tests/agc_optax/test_agc_reference.py
  tests/agc_optax/test_numerics.py
  tests/agc_optax/test_properties.py
  tests/agc_optax/test_stats_and_optax_parity.py
  tests/agc_optax/test_unit_axes.py
  tests/agc_optax/test_compositions.py
  tests/agc_optax/test_exclude_and_errors.py
  tests/agc_optax/test_infer_unit_axes.py
  tests/agc_optax/test_infer_unit_axes_nnx.py
  tests/agc_optax/test_missing_leaf.py
  tests/agc_optax/test_without_flax.py
  tests/agc_optax/test_infer_unit_axes_deep.py
  tests/agc_optax/test_range.py
)

# "jax==0.8.0 jaxlib==0.8.0 ...": every `name>=floor` of the dependencies, then of the
# flax extra.
floors() {
  "$python" - "$1" <<'PY'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extra = sys.argv[1]
requirements = project["optional-dependencies"][extra] if extra else project["dependencies"]
for requirement in requirements:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement.replace(" ", ""))
    if not match:
        raise SystemExit(f"pyproject.toml: {requirement!r} has no plain `>=` floor to test")
    print(f"{match[1]}=={match[2]}", end=" ")
    if match[1] == "jax":
        print(f"jaxlib=={match[2]}", end=" ")
PY
}
core="$(floors "")"
flax="$(floors flax)"
echo "[min-versions] floors: $core$flax"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --quiet --disable-pip-version-check)

# 1. `pip install .` at the core floors, without flax: the library imports and runs.
"${pip[@]}" uninstall --yes flax >/dev/null 2>&1 || true
"${pip[@]}" install "$repo" $core pytest hypothesis griffe
(cd "$venv" && "$venv/bin/python" - <<'PY'
import importlib.util, sys
import jax.numpy as jnp
import agc_optax
assert importlib.util.find_spec("flax") is None, "flax is installed"
assert agc_optax.__file__.startswith(sys.prefix), agc_optax.__file__
params = {"w": jnp.ones((3, 2))}
rule = agc_optax.infer_unit_axes(lambda p, x: x @ p["w"], params, jnp.ones((1, 3)))
tx = agc_optax.agc(0.01, unit_axes=rule)
clipped, _ = tx.update({"w": jnp.full((3, 2), 10.0)}, tx.init(params), params)
print(f"[min-versions] agc-optax {agc_optax.__version__} without flax: ok, "
      f"max |g| {float(abs(clipped['w']).max()):.5f}")
PY
)

# 2. The library's tests at the floors, flax's included (pytest imports the repository's copy).
"${pip[@]}" install $core $flax
"$venv/bin/python" -c "import jax, optax, flax, numpy; print('[min-versions] jax', jax.__version__, \
'optax', optax.__version__, 'flax', flax.__version__, 'numpy', numpy.__version__)"
# The units guide also runs Haiku and Equinox models: it is a docs test, not a library one.
"$venv/bin/python" -m pytest -p no:cacheprovider -q -k "not units_tables_shown" \
  "${library_tests[@]}" "$@"
