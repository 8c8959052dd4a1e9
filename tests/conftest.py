"""Shared fixtures: a tiny competition-format dataset generated once per session."""

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.fake_kaggle import fake_kaggle  # noqa: F401 - the fixture, for every test module

# Set before any test module imports Keras; the smoke tests pick each backend explicitly.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# In the tests only, XLA compiles for the CPU without LLVM's optimisations: the same programs,
# run here on a few small batches, compile in about two thirds of the time (a notebook smoke run:
# 17.6 s instead of 24.6 s), and most of the suite's time is compiles. Every process the tests
# start inherits it; a test that sets a device count adds to it (`xla_flags`). The benchmarks
# measure without it.
os.environ["XLA_FLAGS"] = (
    f"--xla_backend_optimization_level=0 {os.environ.get('XLA_FLAGS', '')}".strip()
)


def xla_flags(devices):
    """XLA_FLAGS for a JAX process with `devices` virtual CPU devices (a TPU v5e-8 has 8)."""
    return f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count={devices}"


TINY_SIZE = 32
REPOSITORY = Path(__file__).resolve().parent.parent
# Each test's seconds (setup, call and teardown) in the runs so far, in pytest's cache
# (.pytest_cache), by node id; a test never timed counts as SLOW_GUESS seconds if marked slow.
DURATIONS_KEY = "petals/durations"
SLOW_GUESS = 20.0
DURATIONS = {}  # this run's seconds per test
# Before any run has timed them (a fresh clone): the units (a test by its name, or a group)
# that took longest in a full run on 2 cores (2026-12-04, seconds under load), so that they
# start first all the same.
MEASURED = {
    "test_a_convnext_and_a_keras_hub_preset_train_together_offline": 230,
    "test_every_backbone_builds": 167,
    "group:jax_run": 150,
    "group:two_process_run": 140,
    "test_a_rerun_loads_the_programs_the_first_run_compiled": 138,
    "group:random_conversion": 105,
    "test_local_sweep_is_resumable_and_tabulated": 96,
    "test_readme_runner_example_runs_as_written": 81,
    "test_default_sweep_through_a_cap_of_one": 80,
    "group:tensorflow_run": 80,
    "test_processes_stream_process_0_and_stop_together_on_interrupt": 76,
    "test_cpu_version_prints_one_row_of_figures_for_the_tiny_backbone": 71,
    "test_a_local_sweep_at_two_sizes_blends_into_one_submission": 68,
}


def unit_of(item):
    """What runs as one piece: the tests of one xdist group (they share a module-scoped run,
    and `--dist loadgroup` gives them to one worker), else the test alone."""
    group = item.get_closest_marker("xdist_group")
    return f"group:{group.args[0]}" if group else item.nodeid.split("@")[0]


def pytest_collection_modifyitems(config, items):
    """The slowest first, so that the two workers of `make test` do not end on one long test
    while the other waits: each unit ordered by its tests' seconds in the last run (before
    any, MEASURED), the tests of a group kept together (a group's shared run is executed
    once). Every worker reads the same cache, so every worker collects the same order, as xdist
    requires."""
    if getattr(config.option, "loadgroup", False):  # an xdist worker under --dist loadgroup
        from _pytest.nodeid import NodeId

        for item in items:
            group = item.get_closest_marker("xdist_group")
            if group and "@" not in item.nodeid:
                # xdist 3.8 names the group in item._nodeid, which pytest 9.2 no longer reads
                # (its node id is item._id): without the suffix, xdist splits the group.
                item._id = NodeId.parse(f"{item.nodeid}@{group.args[0]}")
    cache = getattr(config, "cache", None)
    seconds = cache.get(DURATIONS_KEY, {}) if cache is not None else {}
    totals = {}
    for item in items:
        expected = seconds.get(item.nodeid.split("@")[0])
        if expected is None:
            expected = SLOW_GUESS if item.get_closest_marker("slow") else 0.0
        totals[unit_of(item)] = totals.get(unit_of(item), 0.0) + expected
    if not seconds:
        for unit in totals:
            totals[unit] = MEASURED.get(unit.split("::")[-1], totals[unit])
    # Stable: a unit's tests keep their order, and equal units their collection order.
    items.sort(key=lambda item: -totals[unit_of(item)])


def pytest_runtest_logreport(report):
    """Adds up each test's seconds, for the next run's order (on the controller: with xdist,
    every worker's reports reach it)."""
    nodeid = report.nodeid.split("@")[0]
    DURATIONS[nodeid] = DURATIONS.get(nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    """Writes this run's seconds into the cache, over the earlier run's (tests not run keep
    theirs). Only the controller writes: an xdist worker has `workerinput`."""
    cache = getattr(session.config, "cache", None)
    if cache is None or hasattr(session.config, "workerinput") or not DURATIONS:
        return
    cache.set(DURATIONS_KEY, {**cache.get(DURATIONS_KEY, {}), **DURATIONS})


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small real dataset (digits) in the competition layout; returns its root folder."""
    from kit.demo_data import write_demo_dataset

    root = tmp_path_factory.mktemp("tiny-data")
    write_demo_dataset(str(root), image_size=TINY_SIZE, shards=2, limit=240)
    return str(root)


PAIR_SIZES = (32, 64)


def pair_sweep_file(folder, dataset=None):
    """The local sweep `pair`: `tiny` at 32 and 64 px (petals-pair-32 and petals-pair-64), one
    epoch of two steps on TensorFlow (the faster start on a CPU), no TTA."""
    path = Path(folder) / "pair.toml"
    path.write_text(f"""
name = "pair"
accelerator = "cpu"
[parameters]
BACKBONES = ["tiny"]
WEIGHTS = "None"
EPOCHS = 1
MAX_STEPS_PER_EPOCH = 2
BATCH_SIZE_PER_REPLICA = 16
LR_MAX = 0.003
TTA_VIEWS = []
DATA_DIR = "{dataset}"
KERAS_BACKEND = "tensorflow"
[grid]
IMAGE_SIZE = {list(PAIR_SIZES)}
""")
    return path


def build_py(folder, *arguments, timeout=900):
    """`build.py ARGUMENTS` run in `folder`, its output captured."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, str(REPOSITORY / "build.py"), *arguments],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def local_sweep(tmp_path_factory):
    """The pair sweep run once by `build.py sweep` on the demo digits (the same ids at both
    sizes), for the tests of the local verbs (sweep, results, blend; xdist group "local_sweep",
    so that one worker runs it). Returns its folder (the sweep file and runs/), the dataset and
    the sweep's first `build.py sweep`; each test works on a copy of the folder (`copy_of`)."""
    from kit.demo_data import write_demo_dataset

    folder = tmp_path_factory.mktemp("local-sweep")
    dataset = tmp_path_factory.mktemp("pair-data")
    for size in PAIR_SIZES:
        write_demo_dataset(str(dataset), image_size=size, shards=2, limit=240)
    sweep = pair_sweep_file(folder, dataset)
    result = build_py(folder, "sweep", "--sweep", str(sweep))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return SimpleNamespace(folder=folder, dataset=str(dataset), first=result)


def copy_of(folder, destination):
    """A copy of `folder`'s files in `destination` (a test's own tmp_path)."""
    shutil.copytree(folder, destination, dirs_exist_ok=True)
    return Path(destination)


def run_in_child(source, backend="jax", devices=8, timeout=300):
    """Run a Python script in a child process on `backend` with `devices` virtual CPU devices
    (8: a TPU v5e-8's count; XLA_FLAGS must reach JAX before it starts); return its last stdout
    line as JSON."""
    import json
    import subprocess
    import sys

    root = str(REPOSITORY)
    environment = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": root,
        "XLA_FLAGS": xla_flags(devices),
    }
    result = subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        env=environment,
        cwd=root,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_names(text, *facts):
    """Check that `text` (an error's message, a printed line) names every fact: a parameter, a
    value, a number, an option. The wording around them is free to change; the test of the
    module that owns a message pins its sentence once, where the message is the feature."""
    text = str(text)
    missing = [fact for fact in facts if str(fact) not in text]
    assert not missing, f"{text!r} does not name {missing}"
