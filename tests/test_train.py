import math

import pytest

from petals import train


def test_steps_per_epoch_from_counts():
    assert train.steps_per_epoch(12753, 128) == 99
    assert train.steps_per_epoch(12753, 128, cap=5) == 5
    with pytest.raises(ValueError, match="only 100 training records for a global batch of 128"):
        train.steps_per_epoch(100, 128)


def test_compile_time_is_the_first_epochs_excess():
    assert train.compile_seconds([50.0, 10.0, 12.0, 11.0]) == pytest.approx(39.0)
    assert train.compile_seconds([10.0]) == 0.0
    assert train.compile_seconds([9.0, 10.0]) == 0.0


def test_steady_epoch_seconds_skip_the_first():
    assert train.steady_epoch_seconds([100.0, 2.0, 4.0]) == 3.0
    assert train.steady_epoch_seconds([5.0]) == 5.0


def test_images_per_second_skips_the_first_epoch():
    assert train.images_per_second([100.0, 2.0, 2.0], steps=10, global_batch=8) == 40.0
    assert train.images_per_second([4.0], steps=10, global_batch=8) == 20.0
    assert math.isnan(train.steady_epoch_seconds([]))


def test_fit_records_history_and_epoch_times():
    import keras
    import numpy as np
    import tensorflow as tf

    from petals.schedule import Schedule

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    train.compile_model(model, learning_rate=0.1)
    inputs = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    labels = (inputs[:, 0] > 0).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(16).repeat()
    history, seconds = train.fit(model, dataset, epochs=3, steps=4,
                                 schedule=Schedule(0.1, 0.1, 0.01, 0, 1, 0.5), verbose=0)
    assert len(seconds) == 3 and all(value > 0 for value in seconds)
    assert history["learning_rate"] == pytest.approx([0.1, 0.1, 0.055])
    assert history["loss"][-1] < history["loss"][0]
