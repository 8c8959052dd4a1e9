#!/usr/bin/env bash
# The accelerator check, one command, at most 9 minutes, no TensorFlow needed (see README.md here):
#
#   benchmarks/accelerator_check.sh [--wheels DIR] [more train_step.py options]
#
# On one NVIDIA GPU or a TPU host it prints one table: per backbone (EfficientNetB0, DenseNet201,
# EfficientNetB7 at 512 px, bf16, batch 64) bare and full images/s, fed/resident, compile seconds
# (the full model's also with a warm compile cache, as a rerun on the same image pays them);
# then prediction with and without a TTA view (benchmarks/prediction.py, EfficientNetB0 at 512 px;
# it needs TensorFlow for tf.data and says so where it is missing). On a CPU it runs the same on
# 8 virtual devices with the tiny backbone at 32 px (prediction: 64 px). --wheels DIR
# installs the wheels in DIR first (Keras and what the host lacks of its dependencies) into a
# folder of their own, for hosts that have JAX but no Keras. Options after it go to
# benchmarks/train_step.py --check (they win over the ones set here).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
PYTHON=${PYTHON:-python3}
# The whole check, installs included, stays within this many seconds.
BUDGET_SECONDS=${BUDGET_SECONDS:-540}
# Of which the prediction benchmark, run last, gets this many.
PREDICTION_SECONDS=${PREDICTION_SECONDS:-150}

if [[ "${1:-}" == "--wheels" ]]; then
    wheels=${2:?"--wheels needs a folder of .whl files"}
    shift 2
    if ! compgen -G "$wheels/*.whl" > /dev/null; then
        echo "no .whl files in $wheels; download them as benchmarks/README.md says" >&2
        exit 2
    fi
    site=$(mktemp -d -t petals-wheels-XXXXXX)
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --target "$site" \
        "$wheels"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
# Keras is only looked for here: importing it would import TensorFlow where that is installed.
if ! platform=$("$PYTHON" -c "
import importlib.util, jax
assert importlib.util.find_spec('keras'), 'no keras'
print(jax.default_backend())" 2>&1); then
    echo "JAX or Keras is missing for $PYTHON (${platform##*$'\n'}); carry their wheels and" \
         "pass --wheels DIR (benchmarks/README.md)" >&2
    exit 2
fi

settings=(--check)
if [[ $platform == cpu ]]; then
    # The small version: as on a TPU v5e-8, eight devices, batches split across them; few steps,
    # and the full and the bare model compiling side by side.
    export XLA_FLAGS="--xla_force_host_platform_device_count=8 ${XLA_FLAGS:-}"
    settings+=(--steps 3 --epochs 1 --rounds 1 --parallel 2)
elif command -v nvidia-smi > /dev/null; then
    # One GPU admits several processes: the models compile side by side, then take turns.
    settings+=(--parallel 3)
fi
export TF_CPP_MIN_LOG_LEVEL=2
"$PYTHON" benchmarks/train_step.py "${settings[@]}" \
    --budget $((BUDGET_SECONDS - PREDICTION_SECONDS - (SECONDS - started))) "$@"

echo
left=$((BUDGET_SECONDS - (SECONDS - started)))
if ! "$PYTHON" -c "import importlib.util; assert importlib.util.find_spec('tensorflow')" \
        2> /dev/null; then
    echo "prediction not measured: benchmarks/prediction.py reads tf.data, and TensorFlow is" \
         "not installed for $PYTHON"
elif ((left < 30)); then
    echo "prediction not measured: time budget spent"
elif ! timeout "$left" "$PYTHON" benchmarks/prediction.py; then
    echo "prediction not measured: stopped after ${left} s (time budget) or failed (above)"
fi
