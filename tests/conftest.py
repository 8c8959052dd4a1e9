"""Shared fixtures: a tiny competition-format dataset generated once per session."""

import os

import pytest

from tests.fake_kaggle import fake_kaggle  # noqa: F401 - the fixture, for every test module

# Set before any test module imports Keras; the smoke tests pick each backend explicitly.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY_SIZE = 32


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small real dataset (digits) in the competition layout; returns its root folder."""
    from petals.demo_data import write_demo_dataset

    root = tmp_path_factory.mktemp("tiny-data")
    write_demo_dataset(str(root), image_size=TINY_SIZE, shards=2, limit=240)
    return str(root)


def run_in_child(source, backend="jax", devices=8, timeout=300):
    """Run a Python script in a child process on `backend` with `devices` virtual CPU devices
    (8: a TPU v5e-8's count; XLA_FLAGS must reach JAX before it starts); return its last stdout
    line as JSON."""
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": root,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
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
