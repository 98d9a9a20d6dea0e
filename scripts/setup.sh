#!/usr/bin/env bash
# Sets up a fresh machine for agc-optax: a virtual environment with the package,
# its test, example and docs extras, and Debian's Fashion-MNIST when it is missing.
# Idempotent: a second run only checks. Source it or run it; VENV overrides .venv.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
# An existing environment that lacks any extra's package (e.g. one made before the docs
# extra existed) gets the missing ones.
if ! "$venv/bin/python" -c "import agc_optax, grain, orbax.checkpoint, hypothesis, matplotlib, \
    mkdocs, material, mkdocstrings_handlers.python, build, twine, dill, PIL, yaml, xdist" >/dev/null 2>&1; then
  echo "[setup] installing agc-optax[test,examples,docs] into $venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e "$repo[test,examples,docs]"
fi

# The examples are the package `examples` at the repository root. dm-haiku (a test
# dependency) installs a folder `examples` of its own into site-packages, so from any other
# directory `python -m examples.nf_resnet.main` found haiku's and failed with "No module named
# 'examples.nf_resnet'". A path file puts the repository on the environment's path, after
# site-packages: Python prefers a regular package (ours) to haiku's namespace folder.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$repo" > "$site/agc_optax_examples.pth"

fmnist=/usr/share/datasets/fashion-mnist
if [ ! -f "$fmnist/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian's dataset-fashion-mnist"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian's dataset-fashion-mnist (sudo)"
    sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "[setup] Fashion-MNIST not found at $fmnist and apt-get is unavailable; the example" \
         "will look in --data-dir, \$AGC_OPTAX_DATA or ~/.cache/agc_optax instead." >&2
  fi
fi
echo "[setup] ready: $("$venv/bin/python" -c 'import jax, optax, flax; print(f"jax {jax.__version__}, optax {optax.__version__}, flax {flax.__version__}")')"
