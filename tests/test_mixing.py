"""Tests for petals.mixing: the soft-target losses against hand-computed values, MixUp and CutMix
targets that match the pixels, identity where nothing is mixed, and training on both backends."""

import keras
import numpy as np
import pytest

from petals import mixing, train
from tests.conftest import run_in_child

# Three images, three classes; rows of probabilities the "model" predicted.
PROBABILITIES = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]], "float32")
LABELS = np.array([0, 2, 1])


def cross_entropy(targets, probabilities):
    return float(np.mean(-np.sum(targets * np.log(probabilities), axis=-1)))


def constant_images(values, size=16):
    """One uint8 image per value, every pixel of it that value."""
    return np.stack([np.full((size, size, 3), value, np.uint8) for value in values])


def test_label_smoothing_loss_on_sparse_labels():
    loss = mixing.SparseSmoothedCrossentropy(label_smoothing=0.3)
    # One-hot targets smoothed by 0.3 over three classes: 0.7 + 0.1 on the label, 0.1 elsewhere.
    targets = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]])
    value = float(keras.ops.convert_to_numpy(loss(LABELS, PROBABILITIES)))
    assert value == pytest.approx(cross_entropy(targets, PROBABILITIES), rel=1e-5)
    unsmoothed = float(
        keras.ops.convert_to_numpy(
            mixing.SparseSmoothedCrossentropy()(LABELS[:, None], PROBABILITIES)
        )
    )
    assert unsmoothed == pytest.approx(cross_entropy(np.eye(3)[LABELS], PROBABILITIES), rel=1e-5)


def test_mixing_model_loss_uses_the_partners_labels():
    classifier = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model = train.compile_model(classifier, label_smoothing=0.3, mixup=0.5)
    assert isinstance(model, mixing.MixingModel)
    # Own shares of the pixels; image i is mixed with image i - 1 (image 0 with image 2).
    shares = np.array([1.0, 0.25, 0.5], "float32")
    soft = np.array([[1.0, 0.0, 0.0], [0.75, 0.0, 0.25], [0.0, 0.5, 0.5]])
    smoothed = soft * 0.7 + 0.1
    value = model.compute_loss(y=LABELS, y_pred=(PROBABILITIES, shares), training=True)
    assert float(value) == pytest.approx(cross_entropy(smoothed, PROBABILITIES), rel=1e-5)
    # Validation: no shares, one-hot targets.
    value = model.compute_loss(y=LABELS, y_pred=PROBABILITIES, training=False)
    assert float(value) == pytest.approx(
        cross_entropy(np.eye(3)[LABELS] * 0.7 + 0.1, PROBABILITIES), rel=1e-5
    )


@pytest.mark.slow
def test_cutmix_targets_match_the_pixel_shares():
    """CutMix: every pixel comes from the image or its partner, and the targets weigh each
    label by its share of the pixels."""
    values = [10, 60, 110, 160, 210, 250, 30, 90]
    images = constant_images(values)
    labels = np.arange(len(values))
    weights = mixing.pixel_weights(
        images, mixup=0.0, cutmix=1.0, seed=keras.random.SeedGenerator(3)
    )
    mixed = keras.ops.convert_to_numpy(mixing.mix_images(images, weights))
    targets = keras.ops.convert_to_numpy(
        mixing.mix_targets(mixing.one_hot(labels, 8), mixing.own_shares(weights))
    )
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    own = np.array([(mixed[index] == value).mean() for index, value in enumerate(values)])
    partner = np.array([(mixed[index] == values[index - 1]).mean() for index in labels])
    np.testing.assert_allclose(own + partner, 1.0)  # every pixel comes from one of the two
    np.testing.assert_allclose(targets[labels, labels], own, atol=1e-6)
    np.testing.assert_allclose(targets[labels, np.roll(labels, 1)], partner, atol=1e-6)
    assert ((own > 0) & (own < 1)).any()  # some patches were cut, not all images kept whole
    assert mixed.dtype == np.uint8


@pytest.mark.slow
def test_mixup_targets_match_the_blend():
    """MixUp: the blended pixels and the targets use the same share."""
    values = np.array([0, 250, 100, 200])
    images = constant_images(values)
    weights = mixing.pixel_weights(
        images, mixup=1.0, cutmix=0.0, seed=keras.random.SeedGenerator(5)
    )
    mixed = keras.ops.convert_to_numpy(mixing.mix_images(images, weights)).astype(float)
    shares = keras.ops.convert_to_numpy(mixing.own_shares(weights))
    targets = keras.ops.convert_to_numpy(
        mixing.mix_targets(mixing.one_hot(np.arange(4), 4), shares)
    )
    expected = shares * values + (1 - shares) * np.roll(values, 1)
    for index in range(4):
        assert np.abs(mixed[index] - expected[index]).max() <= 0.5  # rounded to grey levels
        assert targets[index, index] == pytest.approx(shares[index])
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    assert ((shares > 0.01) & (shares < 0.99)).any()


@pytest.mark.slow
def test_probability_zero_leaves_images_and_labels_untouched():
    """With both probabilities zero, images and labels pass through unchanged."""
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3)).astype("uint8")
    weights = mixing.pixel_weights(images, 0.0, 0.0, seed=keras.random.SeedGenerator(1))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(mixing.mix_images(images, weights)), images
    )
    one_hot = mixing.one_hot(np.arange(6) % 3, 3)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(mixing.mix_targets(one_hot, mixing.own_shares(weights))),
        keras.ops.convert_to_numpy(one_hot),
    )


@pytest.mark.slow
def test_inference_is_the_classifier_alone():
    """The mixing model predicts as its classifier does, with no extra parameters; only a
    training call returns the shares."""
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    outputs = keras.layers.Dense(3, activation="softmax")(
        keras.layers.Flatten()(keras.ops.cast(inputs, "float32") / 255)
    )
    classifier = keras.Model(inputs, outputs)
    model = mixing.MixingModel(classifier, mixup=0.5, cutmix=0.5, seed=0)
    assert model.count_params() == classifier.count_params()  # usable before training
    images = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3)).astype("uint8")
    np.testing.assert_array_equal(
        model.predict(images, verbose=0), classifier.predict(images, verbose=0)
    )
    probabilities, shares = model(images, training=True)
    assert tuple(probabilities.shape) == (4, 3) and tuple(shares.shape) == (4,)


@pytest.mark.slow
def test_training_calls_mix_the_images_the_classifier_sees():
    """In training, the classifier sees the mixed images (MixUp, then CutMix)."""
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    outputs = keras.layers.Dense(3, activation="softmax")(
        keras.layers.Flatten()(keras.ops.cast(inputs, "float32") / 255)
    )
    classifier = keras.Model(inputs, outputs)
    images = np.random.default_rng(1).integers(0, 256, (32, 8, 8, 3)).astype("uint8")
    plain = keras.ops.convert_to_numpy(classifier(images))
    for mixup, cutmix in ((1.0, 0.0), (0.0, 1.0)):
        model = mixing.MixingModel(classifier, mixup=mixup, cutmix=cutmix, seed=0)
        probabilities, shares = (
            keras.ops.convert_to_numpy(value) for value in model(images, training=True)
        )
        assert (shares < 0.99).mean() > 0.5, (mixup, cutmix)  # most images got a partner's part
        mixed = shares < 0.99
        assert np.abs(probabilities[mixed] - plain[mixed]).max() > 1e-4


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.6, 0.6), (-0.1, 0.0), (0.0, 1.5)])
def test_probabilities_are_checked(mixup, cutmix):
    with pytest.raises(ValueError, match="MIXUP|CUTMIX"):
        mixing.validate_probabilities(mixup, cutmix)


TRAIN_WITH_MIXING = """
import json, warnings
import keras, numpy as np, tensorflow as tf
from petals import accelerator, train
from petals.schedule import Schedule

device = accelerator.detect()
keras.utils.set_random_seed(0)
random = np.random.default_rng(0)
images = random.integers(0, 256, (64, 8, 8, 3)).astype("uint8")
labels = (images[:, :, :4].mean(axis=(1, 2, 3)) > images[:, :, 4:].mean(axis=(1, 2, 3)))
dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype("int32")))
with device.scope():
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    hidden = keras.layers.Dense(16, activation="relu")(
        keras.layers.Flatten()(keras.ops.cast(inputs, "float32") / 255))
    classifier = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    model = train.compile_model(classifier, 3e-3, label_smoothing=0.1, mixup=0.4, cutmix=0.4,
                                seed=1)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fitted = train.fit(model, dataset.batch(16, drop_remainder=True).repeat(), epochs=4, steps=4,
                       schedule=Schedule(3e-3, 3e-3, 3e-3, 0, 9, 1.0),
                       validation=dataset.batch(16, drop_remainder=True), validation_steps=4,
                       verbose=0)
print(json.dumps({"type": type(model).__name__, "replicas": device.replicas,
                  "loss": fitted.history["loss"],
                  "val_accuracy": fitted.history["val_accuracy"],
                  "warnings": [str(warning.message) for warning in caught]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "devices"), [("jax", 1), ("jax", 8), ("tensorflow", 1)])
def test_mixing_trains_on_both_backends(backend, devices):
    """Also on 8 virtual JAX devices: the batch is then split across them, and the partner of
    the first image of each replica's share comes from the previous replica."""
    report = run_in_child(TRAIN_WITH_MIXING, backend, devices)
    assert (report["type"], report["replicas"]) == ("MixingModel", devices)
    assert report["loss"][-1] < report["loss"][0]
    assert len(report["val_accuracy"]) == 4
    assert not [
        message
        for message in report["warnings"]
        if "ran out of data" in message or "shuffle" in message
    ]
