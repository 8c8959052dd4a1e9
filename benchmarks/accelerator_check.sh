#!/usr/bin/env bash
# The accelerator check, one command, at most 9 minutes, no TensorFlow needed (see README.md here):
#
#   benchmarks/accelerator_check.sh [--wheels DIR] [more train_step.py options]
#
# On one NVIDIA GPU or a TPU host it prints one table: per backbone (ConvNeXt-Base and HGNetV2-B6
# at 512 px, bf16, batch 64; `--backbones efficientnet_b0 densenet201 efficientnet_b7` for the
# ones measured before) bare and full images/s, fed/resident, compile seconds (the full model's
# also with a warm compile cache, as a rerun on the same image pays them); then prediction with
# and without a TTA view (benchmarks/prediction.py, EfficientNetB0 at 512 px; it needs TensorFlow
# for tf.data and says so where it is missing). On a CPU it runs the same on 8 virtual devices
# with the tiny backbone at 32 px (prediction: 64 px); `--backbones` runs others that small.
# --wheels DIR installs the wheels in DIR first (Keras, keras-hub and what the host lacks of
# their dependencies) into a folder of their own, for hosts that have JAX but no Keras. Options
# after it go to benchmarks/train_step.py --check (they win over the ones set here).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
PYTHON=${PYTHON:-python3}
# The whole check, installs included, stays within this many seconds.
BUDGET_SECONDS=${BUDGET_SECONDS:-540}
# Of which the prediction benchmark, run last, gets this many where TensorFlow is installed.
PREDICTION_SECONDS=${PREDICTION_SECONDS:-150}
# Virtual devices of the CPU version. 1 for the large backbones: on 8, every device holds its own
# copy of the weights and Adam's moments (ConvNeXt-Base: 13 GB, killed on a 23 GB machine).
CPU_DEVICES=${CPU_DEVICES:-8}

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
    export XLA_FLAGS="--xla_force_host_platform_device_count=$CPU_DEVICES ${XLA_FLAGS:-}"
    settings+=(--steps 3 --epochs 1 --rounds 1 --parallel 2)
elif command -v nvidia-smi > /dev/null; then
    # One GPU admits several processes: two models compile side by side, then take turns (two of
    # these backbones at 512 px, batch 64, fit in an H200's memory side by side; four would not).
    # Two timed epochs of each feed, one round: the compiles take most of the 9 minutes.
    settings+=(--parallel 2 --epochs 2 --rounds 1)
fi
export TF_CPP_MIN_LOG_LEVEL=2
# The prediction benchmark reads tf.data: without TensorFlow its time goes to the train steps.
reserved=0
if "$PYTHON" -c "import importlib.util; assert importlib.util.find_spec('tensorflow')" \
        2> /dev/null; then
    reserved=$PREDICTION_SECONDS
fi
"$PYTHON" benchmarks/train_step.py "${settings[@]}" \
    --budget $((BUDGET_SECONDS - reserved - (SECONDS - started))) "$@"

echo
left=$((BUDGET_SECONDS - (SECONDS - started)))
if ((reserved == 0)); then
    echo "prediction not measured: benchmarks/prediction.py reads tf.data, and TensorFlow is" \
         "not installed for $PYTHON"
elif ((left < 30)); then
    echo "prediction not measured: time budget spent"
elif ! timeout "$left" "$PYTHON" benchmarks/prediction.py; then
    echo "prediction not measured: stopped after ${left} s (time budget) or failed (above)"
fi
