import math

import pytest

from petals import train
from tests.conftest import assert_names, run_in_child


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


def small_problem():
    """A linearly separable problem as an endless training and a finite validation dataset.

    The validation dataset is filtered, so (like a TFRecord dataset) Keras cannot know its length.
    """
    import numpy as np
    import tensorflow as tf

    inputs = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    labels = (inputs[:, 0] > 0).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(16)
    return dataset.repeat(), dataset.filter(lambda batch, labels: True)


def dense_classifier():
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])


@pytest.mark.slow
def test_fit_records_history_and_epoch_times_without_warnings():
    """A real fit records its history and per-epoch seconds, with no warning from Keras."""
    import warnings

    from petals.schedule import Schedule

    model = train.compile_model(dense_classifier(), learning_rate=0.1)
    training, validation = small_problem()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = train.fit(
            model,
            training,
            epochs=3,
            steps=4,
            schedule=Schedule(0.1, 0.1, 0.01, 0, 1, 0.5),
            validation=validation,
            validation_steps=4,
            verbose=0,
        )
    messages = [str(warning.message) for warning in caught]
    assert not [message for message in messages if "ran out of data" in message], messages
    assert not [message for message in messages if "shuffle" in message], messages
    assert len(fitted.seconds) == 3 and all(value > 0 for value in fitted.seconds)
    assert len(fitted.validation_seconds) == 3
    assert all(value > 0 for value in fitted.validation_seconds)
    assert fitted.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.055])
    assert fitted.history["loss"][-1] < fitted.history["loss"][0]
    assert len(fitted.history["val_accuracy"]) == 3


def test_fit_needs_validation_steps_with_validation():
    from petals.schedule import Schedule

    training, validation = small_problem()
    with pytest.raises(ValueError, match="validation_steps"):
        train.fit(
            train.compile_model(dense_classifier()),
            training,
            1,
            1,
            Schedule(0.1, 0.1, 0.1, 0, 1, 1.0),
            validation=validation,
        )


def test_compile_model_chooses_the_loss():
    import keras

    from petals import mixing

    fast = train.compile_model(dense_classifier())
    assert fast.loss == "sparse_categorical_crossentropy"
    smoothed = train.compile_model(dense_classifier(), label_smoothing=0.1)
    assert isinstance(smoothed.loss, mixing.SparseSmoothedCrossentropy)
    assert smoothed.loss.label_smoothing == 0.1
    mixed = train.compile_model(dense_classifier(), label_smoothing=0.1, cutmix=0.5)
    assert isinstance(mixed, mixing.MixingModel)
    assert isinstance(mixed.loss, keras.losses.CategoricalCrossentropy)
    # The bound the parameters cell is checked by (0.999), not merely < 1.
    with pytest.raises(ValueError) as error:
        train.compile_model(dense_classifier(), label_smoothing=0.9995)
    assert_names(error.value, "LABEL_SMOOTHING", "0.9995", "0.999]")


@pytest.mark.slow
def test_epoch_seconds_include_the_compute_that_jax_dispatches_asynchronously():
    """With JAX, fit's Python loop finishes an epoch before the device does; a timer that does
    not wait reads the dispatch time only (measured here: 0.12 s of a 1.1 s fit). Training here is
    heavy and validation one tiny batch, so training must take most of fit's wall time."""
    import time

    import keras
    import numpy as np
    import tensorflow as tf

    from petals.schedule import Schedule

    assert keras.backend.backend() == "jax"
    # Heavy enough (about a second per epoch on 2 CPU cores) that fit's own overhead per epoch
    # (iterators, callbacks) stays a small share of the wall time even on a loaded machine.
    width = 1024
    model = keras.Sequential(
        [
            keras.Input((width,)),
            *[keras.layers.Dense(width, activation="relu") for _ in range(4)],
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    train.compile_model(model)
    inputs = np.random.default_rng(0).normal(size=(256, width)).astype("float32")
    labels = (inputs[:, 0] > 0).astype("int32")
    training = tf.data.Dataset.from_tensors((inputs, labels)).repeat()
    validation = tf.data.Dataset.from_tensors((inputs[:2], labels[:2]))
    schedule = Schedule(1e-3, 1e-3, 1e-3, 0, 9, 1.0)
    # Compile both steps first: compiling blocks the host, which even a timer that does not
    # wait for the device would count.
    train.fit(model, training, 1, 1, schedule, validation=validation, validation_steps=1, verbose=0)
    started = time.perf_counter()
    fitted = train.fit(
        model,
        training,
        epochs=2,
        steps=30,
        schedule=schedule,
        validation=validation,
        validation_steps=1,
        verbose=0,
    )
    wall = time.perf_counter() - started
    assert sum(fitted.seconds) > 0.5 * wall
    assert sum(fitted.seconds) + sum(fitted.validation_seconds) <= wall


def test_fit_turns_out_of_memory_into_one_line():
    import jax
    import keras

    from petals.out_of_memory import OutOfMemoryError
    from petals.schedule import Schedule

    class Exhausting(keras.layers.Layer):
        """Fails while the train step is compiled, as XLA does when a program does not fit."""

        def call(self, inputs, training=None):
            if training:
                raise jax.errors.JaxRuntimeError(
                    "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17.2GiB"
                )
            return inputs

    model = keras.Sequential(
        [keras.Input((4,)), Exhausting(), keras.layers.Dense(3, activation="softmax")], name="big"
    )
    train.compile_model(model)
    training, _ = small_problem()
    with pytest.raises(OutOfMemoryError) as error:
        train.fit(model, training, 1, 2, Schedule(0.1, 0.1, 0.1, 0, 1, 1.0), verbose=0)
    assert "\n" not in str(error.value)
    assert_names(error.value, "training big", "BATCH_SIZE_PER_REPLICA", "IMAGE_SIZE")
    assert isinstance(error.value, ValueError)


MEMBERS_ON_EIGHT_DEVICES = """
import json, weakref
import jax, keras, numpy as np
from petals import accelerator, train

device = accelerator.detect()
keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
inputs = np.random.default_rng(0).normal(size=(32, 64)).astype("float32")
labels = np.arange(32) % 10
WIDTHS = {"wide": 512, "narrow": 64}
built, report = [], {"replicas": device.replicas, "before_build": [], "during": []}

def build(name):
    report["before_build"].append({
        "live_bytes": sum(array.nbytes for array in jax.live_arrays()),
        "earlier_models_alive": [reference() is not None for reference in built]})
    with device.scope():
        model = train.compile_model(keras.Sequential([
            keras.Input((64,)), keras.layers.Dense(WIDTHS[name], activation="relu"),
            keras.layers.Dense(10, activation="softmax", dtype="float32")]))
    built.append(weakref.ref(model))
    return model

for name, model in train.members(list(WIDTHS), build):
    model.fit(inputs, labels, batch_size=16, epochs=1, verbose=0)
    report["during"].append({
        "name": name, "live_bytes": sum(array.nbytes for array in jax.live_arrays()),
        "distribution": type(keras.distribution.distribution()).__name__,
        "policy": keras.mixed_precision.dtype_policy().name,
        "sharded_over": len(model.trainable_weights[0].value.sharding.device_set)})
print(json.dumps(report))
"""


@pytest.mark.slow
def test_members_release_each_model_before_building_the_next():
    """On eight devices, each member's arrays are freed before the next is built, and the
    run's distribution and precision policy survive clear_session."""
    report = run_in_child(MEMBERS_ON_EIGHT_DEVICES)
    assert report["replicas"] == 8
    first, second = report["before_build"]
    assert second["earlier_models_alive"] == [False]
    assert second["live_bytes"] == first["live_bytes"]  # all of the first model's arrays freed
    during_first = report["during"][0]["live_bytes"]
    assert during_first > first["live_bytes"] + 100_000  # the check would see a kept model
    for during in report["during"]:  # the run's settings survive clear_session
        assert (during["distribution"], during["policy"]) == ("DataParallel", "mixed_bfloat16")
        assert during["sharded_over"] == 8
