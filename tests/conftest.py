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
