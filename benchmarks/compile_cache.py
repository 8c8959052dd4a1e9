"""The compile cache across two runs of one sweep: the `compile` stage without and with it.

    .venv/bin/python benchmarks/compile_cache.py            # EfficientNetB0, 32 px, 3 epochs, CPU

`build.py sweep` runs the real notebook on JAX (EfficientNetB0, WEIGHTS None, the 32 px demo
digits, 3 short epochs), then runs it again with --rerun: both share the sweep's compile cache
`runs/<sweep>/compile-cache/`. Printed side by side from each run's own metrics.json: the
`compile` stage seconds (the first epoch's excess over the later ones, as the notebook measures
it), the programs loaded from the cache (hits) and compiled (misses) as JAX reported them, and
the compile seconds JAX says the cache saved.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
SWEEP = """name = "cache-benchmark"
accelerator = "cpu"
[parameters]
IMAGE_SIZE = 32
BACKBONES = ["{backbone}"]
WEIGHTS = "None"
EPOCHS = {epochs}
MAX_STEPS_PER_EPOCH = {steps}
BATCH_SIZE_PER_REPLICA = 16
TTA_VIEWS = []
KERAS_BACKEND = "jax"
DATA_DIR = "{data}"
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="steps per epoch")
    arguments = parser.parse_args()
    sys.path.insert(0, str(REPOSITORY))
    from kit.demo_data import write_demo_dataset

    with tempfile.TemporaryDirectory(prefix="petals-cache-benchmark-") as folder:
        folder = Path(folder)
        write_demo_dataset(str(folder / "data"), image_size=32, shards=2, limit=240)
        sweep = folder / "sweep.toml"
        sweep.write_text(SWEEP.format(**vars(arguments), data=folder / "data"))
        runs = []
        for options in ([], ["--rerun"]):
            command = [sys.executable, str(REPOSITORY / "build.py"), "sweep", "--sweep", str(sweep)]
            started = time.perf_counter()
            result = subprocess.run(
                [*command, *options], cwd=folder, capture_output=True, text=True
            )
            if result.returncode:
                sys.exit(f"build.py sweep failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
            runs.append(time.perf_counter() - started)
        (metrics_first, metrics_second) = (
            json.loads(path.read_text())
            for path in sorted((folder / "runs").glob("*/local-*/metrics.json"))
        )
    image = metrics_first["image"]
    print(
        f"compile cache, {arguments.backbone} 32 px, {arguments.epochs} epochs of "
        f"{arguments.steps} steps, on {image['device_kind']} (jax {image['jax']}, keras "
        f"{image['keras']}), {time.strftime('%Y-%m-%d')}"
    )
    print(
        f"{'run':8} {'compile s':>10} {'hits':>6} {'misses':>7} {'saved s (JAX)':>14} {'wall s':>7}"
    )
    for name, metrics, wall in zip(
        ("first", "--rerun"), (metrics_first, metrics_second), runs, strict=True
    ):
        cache = metrics["compile_cache"]
        print(
            f"{name:8} {metrics['stage_seconds']['compile']:10.1f} {cache['hits']:6d} "
            f"{cache['misses']:7d} {cache['seconds_saved']:14.1f} {wall:7.0f}"
        )
    ratio = metrics_second["stage_seconds"]["compile"] / metrics_first["stage_seconds"]["compile"]
    print(f"compile with the cache / without: {ratio:.2f}")


if __name__ == "__main__":
    main()
