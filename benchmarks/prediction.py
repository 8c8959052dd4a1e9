"""Prediction throughput with and without test-time augmentation (TTA), in one run.

    .venv/bin/python benchmarks/prediction.py            # CPU: 8 virtual devices, tiny CNN, 64 px
    python benchmarks/prediction.py --views flip_lr flip_ud rot90 rot270

Sets the machine up as the notebook does (`petals.accelerator.detect`: DataParallel over every
device, its mixed precision policy), builds a model with random weights, and predicts a
`tf.data` dataset of random uint8 images in full batches two ways, taking turns for `--rounds`
rounds after one untimed call each (which compiles): Keras's `model.predict`, and
`petals.predict.predict` with `--views`. It prints images/s of both and the time ratio: with V
views TTA does V + 1 forward passes per image, so V + 1 is the ideal ratio. It also prints how far
the TTA probabilities are from the mean of `model.predict` on each view of the images.

On a CPU, `--devices` virtual devices (default 8, a TPU v5e-8's count) stand in for the chips,
so batches are split as on a TPU; on a GPU or TPU host the flag changes nothing. Needs
TensorFlow (the kit's predictions read `tf.data` datasets).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def timed(function):
    """Seconds `function()` takes and its result (a host array: the device work is done)."""
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", help="default: tiny on a CPU, efficientnet_b0 elsewhere")
    parser.add_argument("--size", type=int, help="image size (default: 64 on a CPU, else 512)")
    parser.add_argument("--count", type=int, help="images (default: 256 on a CPU, else 1024)")
    parser.add_argument(
        "--batch", type=int, help="global batch (default: 64 on a CPU, else 16 per device)"
    )
    parser.add_argument(
        "--views",
        nargs="+",
        default=["flip_lr"],
        help="TTA views besides the original (default: flip_lr)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed calls of each (median)")
    parser.add_argument(
        "--devices", type=int, default=8, help="virtual devices on a CPU (default 8)"
    )
    arguments = parser.parse_args()
    # Must reach JAX before it starts; only the CPU platform reads it.
    os.environ["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={arguments.devices} "
        + os.environ.get("XLA_FLAGS", "")
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPOSITORY))
    from petals import accelerator

    accelerator.choose_backend()
    import keras
    import numpy as np
    import tensorflow as tf

    from petals import backbones, predict

    found = accelerator.detect()
    on_cpu = found.kind == "cpu"
    backbone = arguments.backbone or ("tiny" if on_cpu else "efficientnet_b0")
    size = arguments.size or (64 if on_cpu else 512)
    count = arguments.count or (256 if on_cpu else 1024)
    batch = arguments.batch or (64 if on_cpu else 16 * found.replicas)
    predict.validate_views(arguments.views)
    if batch % found.replicas or count % batch:
        sys.exit(
            f"--batch {batch} must split evenly across {found.replicas} devices and "
            f"--count {count} into whole batches"
        )
    with found.scope():
        model = backbones.build_model(backbone, size, weights=None)
    images = np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(batch, drop_remainder=True)
    print(
        f"prediction on {found.replicas} × {accelerator.device_kind()} ({found.kind}), "
        f"{keras.backend.backend()} backend, Keras {keras.__version__}, "
        f"{time.strftime('%Y-%m-%d')}: {backbone}, {count} images of {size} px, batch {batch}, "
        f"{keras.mixed_precision.global_policy().name}, views {arguments.views}",
        flush=True,
    )

    def plain():
        return model.predict(dataset, steps=count // batch, verbose=0)

    def with_views():
        return predict.predict(model, dataset, count, arguments.views)

    compile_seconds = {"plain": timed(plain)[0], "views": timed(with_views)[0]}
    seconds = {"plain": [], "views": []}
    for _ in range(arguments.rounds):
        seconds["plain"].append(timed(plain)[0])
        elapsed, probabilities = timed(with_views)
        seconds["views"].append(elapsed)
    plain_seconds, views_seconds = (statistics.median(seconds[name]) for name in seconds)
    ideal = len(arguments.views) + 1
    print(
        f"  model.predict:            {count / plain_seconds:9.1f} images/s "
        f"(first call {compile_seconds['plain']:.1f} s)"
    )
    print(
        f"  predict.predict, views:   {count / views_seconds:9.1f} images/s "
        f"(first call {compile_seconds['views']:.1f} s)"
    )
    print(
        f"prediction with {ideal - 1} view(s) / without, time = "
        f"{views_seconds / plain_seconds:.2f} (ideal {ideal}: one forward pass per view)"
    )
    expected = np.mean(
        [
            model.predict(keras.ops.convert_to_numpy(view(images)), batch_size=batch, verbose=0)
            for view in [lambda pixels: pixels] + [predict.VIEWS[name] for name in arguments.views]
        ],
        axis=0,
    )
    print(
        f"largest difference from the mean of model.predict on each view: "
        f"{np.abs(probabilities - expected).max():.2e}"
    )


if __name__ == "__main__":
    main()
