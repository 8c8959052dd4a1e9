"""Where the CPU smoke run of the notebook spends its time, per stage and backend.

    .venv/bin/python benchmarks/notebook_stages.py [--repeats 3]

Runs the real notebook through papermill (as the smoke tests do) on a freshly generated tiny
dataset, once per backend per repeat, and prints the median seconds of each stage the notebook
records in metrics.json (import, data, build, compile, train, evaluate, predict) next to the
whole run's wall time, so a slow stage is visible.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

SMOKE = {
    "IMAGE_SIZE": 32,
    "BACKBONES": ["tiny"],
    "WEIGHTS": None,
    "EPOCHS": 2,
    "BATCH_SIZE_PER_REPLICA": 16,
    "MAX_STEPS_PER_EPOCH": 3,
    "SHIFT_PIXELS": 2.0,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()

    from kit import runner
    from kit.demo_data import write_demo_dataset

    with tempfile.TemporaryDirectory(prefix="petals-stages-") as scratch:
        write_demo_dataset(scratch, image_size=32, shards=2, limit=240)
        figures = {}
        for backend in ("jax", "tensorflow"):
            runs = []
            for repeat in range(arguments.repeats):
                output_dir = Path(scratch) / f"{backend}-{repeat}"
                started = time.perf_counter()
                runner.execute(
                    str(REPOSITORY / "notebooks" / "flowers.py"),
                    str(output_dir),
                    {**SMOKE, "DATA_DIR": scratch, "KERAS_BACKEND": backend},
                )
                wall = time.perf_counter() - started
                stages = json.loads((output_dir / "metrics.json").read_text())["stage_seconds"]
                runs.append({**stages, "notebook wall": wall})
            figures[backend] = {
                stage: statistics.median(run[stage] for run in runs) for stage in runs[0]
            }
    stages = list(figures["jax"])
    print(
        f"notebook smoke run, median of {arguments.repeats}, seconds ({time.strftime('%Y-%m-%d')}):"
    )
    print(f"{'stage':14}" + "".join(f"{backend:>12}" for backend in figures))
    for stage in stages:
        print(f"{stage:14}" + "".join(f"{figures[backend][stage]:12.1f}" for backend in figures))
    for backend, values in figures.items():
        accounted = sum(value for stage, value in values.items() if stage != "notebook wall")
        print(
            f"{backend}: stages account for {accounted:.1f} s of {values['notebook wall']:.1f} s"
            " (the rest: kernel start, figures, papermill)"
        )


if __name__ == "__main__":
    main()
