"""Tests for benchmarks/feed.py (not wired into the kit): batches come out on the devices, in
order, the next ones in flight."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks.feed import device_prefetch
from tests.conftest import xla_flags


def numbered_batches(count, pulled):
    """`count` (images, labels, None) batches whose values tell them apart; counts pulls."""
    for index in range(count):
        pulled.append(index)
        yield (np.full((4, 2, 2, 3), index, "uint8"), np.full((4,), index, "int32"), None)


@pytest.mark.parametrize("depth", [1, 3])
def test_yields_every_batch_in_order_on_the_device_with_none_kept(depth):
    pulled = []
    placed = list(device_prefetch(numbered_batches(5, pulled), depth=depth))
    assert len(placed) == 5
    for index, (images, labels, weights) in enumerate(placed):
        assert isinstance(images, jax.Array) and isinstance(labels, jax.Array)
        assert weights is None
        np.testing.assert_array_equal(np.asarray(images), np.full((4, 2, 2, 3), index, "uint8"))
        np.testing.assert_array_equal(np.asarray(labels), np.full((4,), index, "int32"))


@pytest.mark.parametrize("depth", [1, 2])
def test_the_next_depth_batches_are_placed_before_the_current_one_is_handed_out(depth):
    pulled = []
    feed = device_prefetch(numbered_batches(6, pulled), depth=depth)
    next(feed)
    assert pulled == list(range(depth + 1))
    next(feed)
    assert pulled == list(range(depth + 2))


@pytest.mark.parametrize("depth", [0, -1, 1.5, None])
def test_depth_must_be_a_positive_whole_number(depth):
    with pytest.raises(ValueError, match="depth must be a whole number"):
        next(device_prefetch(iter([(np.zeros(2),)]), depth=depth))


SHARDED_CHECK = """
import os
os.environ["KERAS_BACKEND"] = "jax"
import jax, keras, numpy as np
from benchmarks.feed import device_prefetch
from tests.conftest import xla_flags
distribution = keras.distribution.DataParallel(devices=jax.devices())
batches = [(np.arange(16 * 3, dtype="uint8").reshape(16, 3) + i, np.arange(16) + i, None)
           for i in range(3)]
for (images, labels, _), (sharded_images, sharded_labels, nothing) in zip(
        batches, device_prefetch(iter(batches), distribution, depth=2), strict=True):
    for array, sharded in ((images, sharded_images), (labels, sharded_labels)):
        layout = distribution.get_data_layout(array.shape).backend_layout
        assert sharded.sharding == layout, (sharded.sharding, layout)
        assert len(sharded.addressable_shards) == 8
        assert sharded.addressable_shards[1].data.shape[0] == 2
        np.testing.assert_array_equal(np.asarray(sharded), array)
    assert nothing is None
print("sharded as fit shards")
"""


@pytest.mark.slow
def test_with_a_distribution_each_array_is_split_across_the_devices_as_fit_splits_it():
    """In a child process of eight devices, the feed splits each array across the devices as
    Keras's fit does."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", SHARDED_CHECK],
        capture_output=True,
        text=True,
        cwd=root,
        env={
            **os.environ,
            "XLA_FLAGS": xla_flags(8),
            "PYTHONPATH": root,
        },
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sharded as fit shards" in result.stdout
