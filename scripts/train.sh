#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh), then trains the NF-ResNet example with AGC
# on Fashion-MNIST. Defaults to the `cpu` preset; extra arguments go to the trainer,
# e.g. `bash scripts/train.sh --preset smoke` or `bash scripts/train.sh --preset gpu`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
venv="${VENV:-$repo/.venv}"
cd "$repo"
has_preset=0
for arg in "$@"; do [ "$arg" = "--preset" ] || [[ "$arg" == --preset=* ]] && has_preset=1; done
preset_args=()
[ "$has_preset" = 1 ] || preset_args=(--preset cpu)
has_workdir=0
for arg in "$@"; do [ "$arg" = "--workdir" ] || [[ "$arg" == --workdir=* ]] && has_workdir=1; done
workdir_args=()
[ "$has_workdir" = 1 ] || workdir_args=(--workdir "runs/nf_resnet_$(date +%Y%m%d_%H%M%S)")
exec "$venv/bin/python" -m examples.nf_resnet.train "${preset_args[@]}" "${workdir_args[@]}" "$@"
