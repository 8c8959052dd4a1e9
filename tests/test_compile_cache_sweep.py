"""`build.py sweep` shares one compile cache among its runs: a rerun loads what the first
compiled (counted from JAX's events), and --no-compile-cache compiles afresh."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import build
from kit import sweeps

REPOSITORY = Path(__file__).resolve().parent.parent


def sweep_file(folder, dataset):
    path = Path(folder) / "cache.toml"
    path.write_text(
        'name = "cache"\naccelerator = "cpu"\n[parameters]\nIMAGE_SIZE = 32\n'
        'BACKBONES = ["tiny"]\nWEIGHTS = "None"\nEPOCHS = 1\nMAX_STEPS_PER_EPOCH = 2\n'
        f'TTA_VIEWS = []\nKERAS_BACKEND = "jax"\nDATA_DIR = "{dataset}"\n'
    )
    return path


def test_a_sweep_names_its_one_cache_unless_told_not_to(tmp_path):
    sweep = sweeps.load(sweep_file(tmp_path, tmp_path))
    arguments = argparse.Namespace(runs_dir=str(tmp_path / "runs"), no_compile_cache=False)
    parameters = build.with_compile_cache(arguments, sweep, {"EPOCHS": 2})
    assert parameters == {
        "EPOCHS": 2,
        "COMPILE_CACHE_DIR": str(tmp_path / "runs/cache/compile-cache"),
    }
    arguments.no_compile_cache = True
    assert build.with_compile_cache(arguments, sweep, {"EPOCHS": 2}) == {"EPOCHS": 2}
    # A variant's own folder wins.
    arguments.no_compile_cache = False
    own = {"COMPILE_CACHE_DIR": "/elsewhere"}
    assert build.with_compile_cache(arguments, sweep, own) == own


@pytest.mark.slow
def test_a_rerun_loads_the_programs_the_first_run_compiled(tmp_path, tiny_dataset):
    """Two real notebook runs through `build.py sweep`: the first fills the sweep's cache, the
    rerun compiles nothing (every program a hit). (--no-compile-cache gives the notebook no
    folder, test above; a run without one records no cache: tests/test_notebook.py.)"""
    sweep = sweep_file(tmp_path, tiny_dataset)

    def sweep_run(*options):
        result = subprocess.run(
            [
                sys.executable,
                str(REPOSITORY / "build.py"),
                "sweep",
                "--sweep",
                str(sweep),
                *options,
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    sweep_run()
    sweep_run("--rerun")
    (variant,) = sweeps.load(sweep).variants
    first, second = (
        json.loads(
            (tmp_path / "runs" / variant.slug / f"local-{number}" / "metrics.json").read_text()
        )
        for number in (1, 2)
    )
    folder = str(tmp_path / "runs" / "cache" / "compile-cache")
    assert first["compile_cache"]["folder"] == second["compile_cache"]["folder"] == folder
    assert first["compile_cache"]["misses"] > 0
    # The second run compiled nothing the first had compiled: every program came from the cache.
    assert second["compile_cache"]["hits"] >= first["compile_cache"]["misses"]
    assert second["compile_cache"]["misses"] == 0
    assert first["image"]["fingerprint"] == second["image"]["fingerprint"]
