"""Train-step throughput, Keras 3 on JAX: the kit's full model vs the bare backbone + head.

    .venv/bin/python benchmarks/train_step.py                 # CPU: a small smoke check
    python benchmarks/train_step.py --backbones densenet201 efficientnet_b7 --size 512 --batch 64

The full model is what the notebook trains: uint8 input → RandomAffine augmentation (inside the
compiled step) → backbone → pooling → float32 softmax, in bfloat16 mixed precision on an
accelerator. The bare model drops the augmentation. Both train on the same synthetic batch,
already on the device, so only the step itself is timed. Each model runs in a fresh process
twice, sharing a new persistent compilation cache: the first pays the full XLA compile, the
second shows what the cache saves. TensorFlow is never imported (some accelerator hosts have
only JAX); the script checks.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def measure(backbone, size, batch, steps, augment, policy, cache_dir):
    """Runs in the child process: compile time and steady images/s of one model."""
    os.environ["KERAS_BACKEND"] = "jax"
    sys.path.insert(0, str(REPOSITORY))
    import jax
    import keras
    import numpy as np

    from petals import accelerator, backbones
    from petals import augment as augmentation

    accelerator.enable_compilation_cache(cache_dir)
    keras.mixed_precision.set_global_policy(policy)
    layer = augmentation.RandomAffine(seed=0) if augment else None
    model = backbones.build_model(backbone, size, weights=None, augmentation=layer)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    random = np.random.default_rng(0)
    images = jax.device_put(random.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
    labels = jax.device_put(random.integers(0, 104, (batch,), dtype=np.int32))
    started = time.perf_counter()
    model.train_on_batch(images, labels)  # returns a Python float: waits for the device
    compile_seconds = time.perf_counter() - started
    timings = []
    for _ in range(steps):
        started = time.perf_counter()
        model.train_on_batch(images, labels)
        timings.append(time.perf_counter() - started)
    return {"compile_seconds": compile_seconds,
            "images_per_second": batch / statistics.median(timings),
            "device": str(jax.devices()[0].platform),
            "tensorflow_imported": "tensorflow" in sys.modules}


def child(arguments):
    """Run one measurement in a fresh process and return its JSON result."""
    command = [sys.executable, __file__, "--child", arguments["backbone"],
               "--size", str(arguments["size"]), "--batch", str(arguments["batch"]),
               "--steps", str(arguments["steps"]), "--policy", arguments["policy"],
               "--cache-dir", arguments["cache_dir"]]
    if arguments["augment"]:
        command.append("--augment")
    result = subprocess.run(command, capture_output=True, text=True, check=False,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if result.returncode != 0:
        sys.exit(f"measurement failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=None,
                        help="default: densenet201 efficientnet_b7 on an accelerator, "
                             "efficientnet_b0 on a CPU")
    parser.add_argument("--size", type=int, default=None, help="default: 512, CPU 64")
    parser.add_argument("--batch", type=int, default=None, help="default: 64, CPU 8")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20, CPU 5)")
    parser.add_argument("--policy", default=None,
                        help="Keras dtype policy (default mixed_bfloat16, CPU float32: bfloat16 "
                             "is emulated on CPUs)")
    parser.add_argument("--json", help="also save the figures here")
    parser.add_argument("--child", metavar="BACKBONE", help=argparse.SUPPRESS)
    parser.add_argument("--augment", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(measure(arguments.child, arguments.size, arguments.batch,
                                 arguments.steps, arguments.augment, arguments.policy,
                                 arguments.cache_dir)))
        return

    os.environ["KERAS_BACKEND"] = "jax"
    import jax

    on_cpu = jax.devices()[0].platform == "cpu"
    settings = {
        "backbones": arguments.backbones or (["efficientnet_b0"] if on_cpu
                                             else ["densenet201", "efficientnet_b7"]),
        "size": arguments.size or (64 if on_cpu else 512),
        "batch": arguments.batch or (8 if on_cpu else 64),
        "steps": arguments.steps or (5 if on_cpu else 20),
        "policy": arguments.policy or ("float32" if on_cpu else "mixed_bfloat16"),
    }
    print(f"train step on {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), "
          f"JAX {jax.__version__}, {time.strftime('%Y-%m-%d')}: " + json.dumps(settings))
    rows = []
    for backbone in settings["backbones"]:
        for augment in (False, True):
            with tempfile.TemporaryDirectory(prefix="jax-cache-") as cache_dir:
                common = {"backbone": backbone, "size": settings["size"],
                          "batch": settings["batch"], "steps": settings["steps"],
                          "policy": settings["policy"], "augment": augment,
                          "cache_dir": cache_dir}
                cold = child(common)
                warm = child(common)
            rows.append({"backbone": backbone, "model": "full" if augment else "bare",
                         "images_per_second": max(cold["images_per_second"],
                                                  warm["images_per_second"]),
                         "compile_cold": cold["compile_seconds"],
                         "compile_warm": warm["compile_seconds"],
                         "tensorflow_imported": cold["tensorflow_imported"]})
    print(f"\n{'backbone':18} {'model':5} {'images/s':>9} {'compile s':>10} "
          f"{'cached compile s':>17} {'TF imported':>12}")
    for row in rows:
        print(f"{row['backbone']:18} {row['model']:5} {row['images_per_second']:9.1f} "
              f"{row['compile_cold']:10.1f} {row['compile_warm']:17.1f} "
              f"{str(row['tensorflow_imported']):>12}")
    print()
    for backbone in settings["backbones"]:
        bare, full = (next(row for row in rows if row["backbone"] == backbone
                           and row["model"] == model) for model in ("bare", "full"))
        ratio = full["images_per_second"] / bare["images_per_second"]
        print(f"{backbone}: full/bare images/s = {ratio:.3f} "
              f"(target ≥ 0.9: {'met' if ratio >= 0.9 else 'missed'}); compile "
              f"{bare['compile_cold']:.1f} s → {bare['compile_warm']:.1f} s with the cache")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"settings": settings, "rows": rows},
                                                   indent=2))


if __name__ == "__main__":
    main()
