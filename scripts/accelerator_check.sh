#!/usr/bin/env bash
# The whole accelerator check in one command, in at most 6 minutes of wall time: the
# library's device tests, benchmarks.bench_agc (both trees), benchmarks.bench_train_step
# (NF-ResNet-50 and NFNet-F0, bfloat16, per-device batches 32 and 128) and 60 s of the
# NF-ResNet example's gpu preset (stopped by SIGINT, which checkpoints and writes its
# summary). Every result JSON goes to --out, named by device (benchmarks/_common.py), and a
# summary table ends the output. Each step has a time cap and the check goes on after a
# failed step; the exit status is 1 if any step failed.
#
#   bash scripts/accelerator_check.sh                      # on a GPU or TPU machine
#   bash scripts/accelerator_check.sh --data-dir DIR       # Fashion-MNIST for the preset
#   bash scripts/accelerator_check.sh --quick --out /tmp/check   # toy sizes on a CPU, ~1-2 min
#
# Python: $PYTHON, else .venv/bin/python, else a python3 that already has jax, optax, flax
# and pytest (an accelerator image's), else the .venv that scripts/setup.sh creates.
# Compilations are cached in $JAX_COMPILATION_CACHE_DIR (default: ~/.cache/agc_optax/jax),
# so a rerun on the same machine spends its minutes measuring.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

quick=0
out="$repo/benchmarks/results"
data_dir=""  # Else the example searches $AGC_OPTAX_DATA, its cache and the system copy.
budget_s=340  # the caps below sum to 330; the rest covers start-up and the summary
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --data-dir) data_dir="${2:?--data-dir needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "accelerator_check: unknown argument '$1'; see --help" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/accelerator_check.XXXXXX")"
trap 'rm -rf "$work"' EXIT

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if [ -x "$repo/.venv/bin/python" ]; then echo "$repo/.venv/bin/python"; return; fi
  if python3 -c "import jax, optax, flax, pytest" >/dev/null 2>&1; then echo python3; return; fi
  bash "$repo/scripts/setup.sh" >&2 && echo "$repo/.venv/bin/python"
}
py="$(pick_python)" || { echo "accelerator_check: no Python environment; see scripts/setup.sh" >&2; exit 1; }
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "$quick" = 0 ]; then
  export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/agc_optax/jax}"
fi

read -r backend devices slug <<<"$("$py" -c '
from benchmarks import _common
m = _common.machine_info()
print(m["backend"], m["device_count"], _common.machine_slug(m))')" || {
  echo "accelerator_check: $py cannot import jax and the benchmarks" >&2; exit 1; }
"$py" -c 'import jax; d = jax.devices()
print(f"[check] device: {len(d)} x {d[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")'
echo "[check] python: $py; results: $out (*_$slug.json)"
if [ "$backend" = cpu ] && [ "$quick" = 0 ]; then
  echo "accelerator_check: JAX found no GPU or TPU; the full check would take hours on a CPU." \
       "Run it where one is, or pass --quick for the toy-size run." >&2
  exit 2
fi

status="$work/status.tsv"
: >"$status"
failed=0
# run_step NAME CAP_S NOTE_COMMAND COMMAND...: runs COMMAND for at most CAP_S seconds (and
# never past the check's budget), logs it, and records "NAME<TAB>status<TAB>seconds<TAB>note",
# where the note is the last line that NOTE_COMMAND prints from the step's log.
run_step() {
  local name="$1" cap="$2" note_cmd="$3"; shift 3
  local left=$((budget_s - SECONDS)) log="$work/${name//[^a-zA-Z0-9_]/_}.log"
  [ "$cap" -gt "$left" ] && cap="$left"
  if [ "$cap" -le 5 ]; then
    printf '%s\tnot run\t0\tthe %s s budget was spent\n' "$name" "$budget_s" >>"$status"
    failed=1; return
  fi
  echo; echo "[check] $name (at most ${cap} s): $*"
  local start=$SECONDS rc
  timeout -s INT -k 20 "$cap" "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  local state=ok
  case "$rc" in
    0) ;;
    124|130|137) state="stopped at ${cap} s" ;;
    *) state="failed ($rc)" ;;
  esac
  [ "$state" = ok ] || [ "${ALLOW_STOP:-0}" = 1 ] || failed=1
  printf '%s\t%s\t%s\t%s\n' "$name" "$state" "$((SECONDS - start))" \
    "$(eval "$note_cmd" <"$log" 2>/dev/null | tail -n 1 | tr '\t' ' ')" >>"$status"
}
skip_step() {
  printf '%s\tskipped\t0\t%s\n' "$1" "$2" >>"$status"
  echo; echo "[check] $1 skipped: $2"
}

# 1. The tests that run AGC's arithmetic on the device; the sharding checks need 8 devices.
tests=(tests/agc_optax/test_numerics.py tests/agc_optax/test_agc_reference.py)
[ "$devices" -ge 8 ] && tests+=(tests/helpers/sharding_jit_checks.py tests/helpers/sharding_shard_map_checks.py)
select=()
[ "$quick" = 1 ] && select=(-k "overflow or low_precision")
PYTHONPATH="$PYTHONPATH:$repo/tests" run_step "device tests" 45 \
  "grep -E '(passed|failed|error)'" \
  "$py" -m pytest -q -p no:cacheprovider -m "not slow" --maxfail=5 "${select[@]}" "${tests[@]}"

# 2. The AGC update alone and chained with SGD, on both trees.
agc_flags=(--repeats 30)
[ "$quick" = 1 ] && agc_flags=(--quick --tree resnet50 --repeats 2)
run_step "bench_agc" 85 true \
  "$py" -m benchmarks.bench_agc "${agc_flags[@]}" --out "$out/agc_update_$slug.json"

# 3. AGC's share of a full training step, two per-device batch sizes (both models at the
# larger first: the JSON keeps every finished case if the cap stops the rest).
step_flags=(--models nf_resnet_50,nfnet_f0 --per-device-batch 128,32 --repeats 10)
[ "$quick" = 1 ] && step_flags=(--quick --repeats 1)
run_step "bench_train_step" 140 true \
  "$py" -m benchmarks.bench_train_step "${step_flags[@]}" --out "$out/train_step_$slug.json"

# 4. The example's gpu preset for 60 s; SIGINT makes it checkpoint and write summary.json.
preset_flags=(--preset gpu)
preset_s=60
if [ "$quick" = 1 ]; then
  preset_s=25
  preset_flags+=(--model nf_resnet_nano --batch-size 32 --train-examples 2048
                 --test-examples 256 --eval-batch-size 256 --log-every-steps 8)
fi
[ -n "$data_dir" ] && preset_flags+=(--data-dir "$data_dir")
missing="$("$py" - "$data_dir" <<'EOF'
import importlib.util, sys
from examples.common import datasets
if importlib.util.find_spec("grain") is None:
    print("grain is not installed (the examples' input pipeline); install agc-optax[examples]")
elif datasets.locate("fashion_mnist", sys.argv[1] or None) is None:
    print("Fashion-MNIST not found; pass --data-dir DIR (or set AGC_OPTAX_DATA)")
EOF
)"
rm -f "$out/gpu_preset_$slug.json"
if [ -n "$missing" ]; then
  skip_step "gpu preset" "$missing"
else
  # Stopping it is the plan (timeout's SIGINT: checkpoint, summary.json, exit 130).
  ALLOW_STOP=1 run_step "gpu preset" "$preset_s" "grep -oE 'SIGINT.*'" \
    "$py" -m examples.nf_resnet.main "${preset_flags[@]}" --workdir "$work/gpu_preset"
  if [ -f "$work/gpu_preset/summary.json" ]; then
    cp "$work/gpu_preset/summary.json" "$out/gpu_preset_$slug.json"
  else
    failed=1  # check_summary says why.
  fi
fi

echo
"$py" -m benchmarks.check_summary --status "$status" --results "$out" --slug "$slug" \
  --seconds "$SECONDS" --budget "$budget_s" || failed=1
exit "$failed"
