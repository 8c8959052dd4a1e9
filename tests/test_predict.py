"""Tests for petals.predict: each view's geometry against numpy, and TTA averaging over padded
batches."""

import gc
import warnings
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from petals import predict
from tests.conftest import run_in_child

NUMPY_VIEWS = {
    "flip_lr": np.fliplr,
    "flip_ud": np.flipud,
    "rot90": lambda image: np.rot90(image, k=1),
    "rot270": lambda image: np.rot90(image, k=3),
}


def random_images(count, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3)).astype("uint8")


@pytest.mark.parametrize("view", list(NUMPY_VIEWS))
def test_each_view_matches_numpy(view):
    images = random_images(3, 5)
    transformed = keras.ops.convert_to_numpy(predict.VIEWS[view](images))
    for image, result in zip(images, transformed, strict=True):
        np.testing.assert_array_equal(result, NUMPY_VIEWS[view](image))


def test_select_view_picks_each_images_view():
    images = random_images(5, 4)
    views = ["rot270", "flip_lr", "flip_ud", "rot90"]
    numbers = np.array([0, 1, 2, 3, 4], "int32")
    selected = keras.ops.convert_to_numpy(predict.SelectView(views)(images, numbers))
    np.testing.assert_array_equal(selected[0], images[0])
    for number, view in enumerate(views, start=1):
        np.testing.assert_array_equal(selected[number], NUMPY_VIEWS[view](images[number]))


def small_classifier(size, classes=4):
    """A classifier on uint8 images that is not invariant to flips or turns."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), dtype="uint8")
    flat = keras.layers.Flatten()(keras.ops.cast(inputs, "float32") / 255)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(flat))


def padded_batches(images, batch, labeled):
    """Full batches, the last one padded with blank images, as petals.data makes them."""
    padding = -len(images) % batch
    padded = np.concatenate([images, np.zeros((padding, *images.shape[1:]), np.uint8)])
    elements = (padded, np.zeros(len(padded), "int32")) if labeled else padded
    return tf.data.Dataset.from_tensor_slices(elements).batch(batch, drop_remainder=True)


@pytest.mark.parametrize("labeled", [False, True])
def test_predictions_average_the_views(labeled):
    images = random_images(10, 6, seed=1)
    model = small_classifier(6)
    views = ["flip_lr", "rot90", "flip_ud"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probabilities = predict.predict(model, padded_batches(images, 4, labeled), 10, views)
    assert not [warning for warning in caught if "ran out of data" in str(warning.message)]
    expected = model.predict(images, verbose=0)
    for view in views:
        turned = np.stack([NUMPY_VIEWS[view](image) for image in images])
        expected = expected + model.predict(turned, verbose=0)
    expected /= len(views) + 1
    assert probabilities.shape == (10, 4) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    # The views change this model's predictions, so averaging them is visible.
    assert np.abs(probabilities - model.predict(images, verbose=0)).max() > 1e-3


def test_no_views_is_the_plain_prediction():
    images = random_images(7, 6, seed=2)
    model = small_classifier(6)
    probabilities = predict.predict(model, padded_batches(images, 4, labeled=True), 7)
    np.testing.assert_allclose(probabilities, model.predict(images, verbose=0), atol=1e-6)


@pytest.mark.parametrize("views", [[], ["flip_lr"]])
def test_non_finite_predictions_are_refused_naming_how_many(views):
    """A batch normalisation whose moving variance broke (training, on batch statistics, never
    used it, so the loss stayed finite) makes the predictions NaN: they are refused, so that
    the run can drop the model instead of saving them."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3), dtype="uint8")
    flat = keras.layers.Flatten()(keras.ops.cast(inputs, "float32") / 255)
    normalization = keras.layers.BatchNormalization()
    outputs = keras.layers.Dense(4, activation="softmax")(normalization(flat))
    model = keras.Model(inputs, outputs)
    normalization.moving_variance.assign(np.full(6 * 6 * 3, np.nan, "float32"))
    dataset = padded_batches(random_images(7, 6), 4, labeled=True)
    with pytest.raises(predict.NonFinitePredictions, match="for 7 of 7 images"):
        predict.predict(model, dataset, 7, views)


def test_the_views_model_is_built_once_and_lives_and_dies_with_its_model():
    model = small_classifier(6)
    dataset = padded_batches(random_images(4, 6), 4, labeled=False)
    predict.predict(weakref.proxy(model), dataset, 4, ["flip_lr"])  # as train.members yields it
    built = predict.views_model(model, (6, 6, 3), "uint8", ["flip_lr"])
    assert predict.views_model(weakref.proxy(model), [6, 6, 3], "uint8", ("flip_lr",)) is built
    assert predict.views_model(model, (6, 6, 3), "uint8", ["flip_ud"]) is not built
    # An ensemble's next member needs the memory back: nothing here keeps the model alive.
    alive = weakref.ref(model)
    del model, built
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("views", [["mirror"], ["flip_lr", "flip_lr"]])
def test_views_are_checked(views):
    with pytest.raises(ValueError, match="TTA_VIEWS"):
        predict.validate_views(views)


TTA_ON_EIGHT_DEVICES = """
import json
import jax, keras, numpy as np, tensorflow as tf
from petals import accelerator, predict

device = accelerator.detect()
per_device_shapes = []


class RecordPerDeviceShape(keras.layers.Layer):
    \"""Records the per-device shape of its input each time a compiled step is traced.\"""

    def call(self, images):
        if isinstance(images, jax.core.Tracer):  # Not while Keras builds the model.
            jax.debug.inspect_array_sharding(images, callback=lambda sharding: (
                per_device_shapes.append(list(sharding.shard_shape(images.shape)))))
        return images


with device.scope():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3), dtype="uint8")
    seen = RecordPerDeviceShape()(inputs)
    flat = keras.layers.Flatten()(keras.ops.cast(seen, "float32") / 255)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(flat))
images = np.random.default_rng(3).integers(0, 256, (13, 6, 6, 3)).astype("uint8")
padded = np.concatenate([images, np.zeros((3, 6, 6, 3), np.uint8)])
dataset = tf.data.Dataset.from_tensor_slices(padded).batch(8, drop_remainder=True)
mirrored = predict.predict(model, dataset, 13, ["flip_lr"])
again = predict.predict(model, dataset, 13, ["flip_lr"])
traced_for_one_views_model = len(per_device_shapes)
probabilities = predict.predict(model, dataset, 13, ["rot90", "flip_ud"])
plain = model.predict(padded, batch_size=8, verbose=0)[:13]
expected_mirrored = (plain + model.predict(padded[:, :, ::-1].copy(), batch_size=8,
                                           verbose=0)[:13]) / 2
expected = (plain + model.predict(np.rot90(padded, 1, axes=(1, 2)).copy(), batch_size=8,
                                  verbose=0)[:13]
            + model.predict(padded[:, ::-1].copy(), batch_size=8, verbose=0)[:13]) / 3
print(json.dumps({
    "replicas": device.replicas, "shape": list(probabilities.shape),
    "per_device_shapes": per_device_shapes, "traced": traced_for_one_views_model,
    "mirrored_difference": float(np.abs(mirrored - expected_mirrored).max()),
    "mirror_changes": float(np.abs(expected_mirrored - plain).max()),
    "repeat_difference": float(np.abs(again - mirrored).max()),
    "difference": float(np.abs(probabilities - expected).max())}))
"""


@pytest.mark.slow
def test_views_on_eight_virtual_devices_split_each_batch_and_compile_once():
    """TTA on eight devices: each batch split across them, one program compiled for repeated
    calls with the same views, and the average of the plain image's and the views'
    predictions, as model.predict gives them, for a split the batches do not divide."""
    report = run_in_child(TTA_ON_EIGHT_DEVICES)
    assert report["replicas"] == 8 and report["shape"] == [13, 4]
    # Every compiled step saw one eighth of the batch of 8 on each device, not the whole batch.
    assert report["per_device_shapes"] and all(
        shape == [1, 6, 6, 3] for shape in report["per_device_shapes"]
    ), report
    # The second call with the same model and views reused the first one's compiled program.
    assert report["traced"] == 1 and report["repeat_difference"] == 0
    assert report["mirrored_difference"] < 2e-3 and report["mirror_changes"] > 1e-3
    assert report["difference"] < 1e-6


TTA_ON_TENSORFLOW = """
import json
import keras, numpy as np, tensorflow as tf
from petals import accelerator, predict

accelerator.detect()
keras.utils.set_random_seed(0)
inputs = keras.Input((6, 6, 3), dtype="uint8")
flat = keras.layers.Flatten()(keras.ops.cast(inputs, "float32") / 255)
model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(flat))
images = np.random.default_rng(4).integers(0, 256, (8, 6, 6, 3)).astype("uint8")
dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(8, "int32"))).batch(
    4, drop_remainder=True)
probabilities = predict.predict(model, dataset, 8, ["flip_lr"])
expected = (model.predict(images, verbose=0) + model.predict(images[:, :, ::-1].copy(),
                                                             verbose=0)) / 2
print(json.dumps({"backend": keras.backend.backend(),
                  "difference": float(np.abs(probabilities - expected).max())}))
"""


@pytest.mark.slow
def test_views_on_the_tensorflow_backend():
    """TTA on the TensorFlow backend gives the average of the plain and the flipped
    predictions too."""
    report = run_in_child(TTA_ON_TENSORFLOW, backend="tensorflow", devices=1)
    assert report == {"backend": "tensorflow", "difference": report["difference"]}
    assert report["difference"] < 2e-3
