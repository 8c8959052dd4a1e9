"""Tests for petals.backbones: registry and argument checks, every backbone builds, weight files
load, noisy-student conversion gives the package model's features, and the tiny CNN learns."""

import h5py
import keras
import numpy as np
import pytest

from petals import NUM_CLASSES
from petals.backbones import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    IMAGENET_VARIANCE,
    build_model,
    convert_noisy_student,
    converted_paths,
    features_match,
    validate_backbone,
    validate_weights,
)

EXPECTED_NAMES = [
    "densenet201",
    *(f"efficientnet_b{index}" for index in range(8)),
    *(f"efficientnetv2_{variant}" for variant in ("b0", "b1", "b2", "b3", "s", "m", "l")),
    "tiny",
]
# keras.applications' smallest allowed input: the cheapest build that still runs every layer.
SMALLEST_SIZE = 32


def backbone_of(model):
    """The backbone nested in a classifier from build_model (its only sub-model)."""
    (backbone,) = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return backbone


def normalization_of(backbone):
    """The input Normalization layer inside a keras.applications EfficientNet."""
    (layer,) = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Normalization)]
    return layer


def randomize(model, seed=0):
    """Give every weight of `model` distinct random values, so a load that misses one shows."""
    random = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(random.uniform(0.5, 1.5, variable.shape).astype(variable.dtype))


def feature_extractor(model):
    """The classifier's pooled backbone features for its uint8 input."""
    return keras.Model(model.input, model.get_layer("features").output)


def test_registry_names():
    assert list(BACKBONES) == EXPECTED_NAMES


def test_unknown_backbone_lists_the_registry():
    with pytest.raises(ValueError, match="unknown backbone 'resnet50'; choose one of: ") as error:
        validate_backbone("resnet50")
    assert str(error.value).endswith(", ".join(EXPECTED_NAMES))


def test_validate_weights_accepts_valid_choices(tmp_path):
    path = tmp_path / "backbone.weights.h5"
    path.write_bytes(b"")
    validate_weights(None, EXPECTED_NAMES)
    validate_weights("imagenet", ["densenet201", "efficientnetv2_s"])
    validate_weights("noisy-student", ["efficientnet_b0", "efficientnet_b7"])
    validate_weights(str(path), "tiny")
    validate_weights(path, ["efficientnet_b0"])


@pytest.mark.parametrize(
    ("weights", "backbones", "message"),
    [
        ("/no/such/file.h5", ["efficientnet_b0"], "weights file '/no/such/file.h5' does not exist"),
        ("noisy-student", ["densenet201"], "only for efficientnet_b0 .* not 'densenet201'"),
        ("noisy-student", ["efficientnet_b0", "efficientnetv2_s"], "not 'efficientnetv2_s'"),
        ("imagenet", ["tiny"], "'tiny' has no ImageNet weights"),
        (3, ["tiny"], "weights must be None, 'imagenet', 'noisy-student' or a file path, not int"),
        (None, ["efficientnet_b0", "resnet"], "unknown backbone 'resnet'"),
    ],
)
def test_validate_weights_rejects(weights, backbones, message):
    with pytest.raises(ValueError, match=message):
        validate_weights(weights, backbones)


@pytest.mark.parametrize("backbone", EXPECTED_NAMES)
def test_every_backbone_builds_and_predicts(backbone):
    # No training: this catches a Keras upgrade that breaks one of the constructors.
    model = build_model(backbone, SMALLEST_SIZE)
    assert model.name == backbone
    assert model.input.name == "image"
    assert model.input.dtype == "uint8"
    assert tuple(model.input.shape) == (None, SMALLEST_SIZE, SMALLEST_SIZE, 3)
    image = np.random.default_rng(0).integers(0, 256, (1, SMALLEST_SIZE, SMALLEST_SIZE, 3))
    probabilities = keras.ops.convert_to_numpy(model(image.astype("uint8"), training=False))
    assert probabilities.shape == (1, NUM_CLASSES)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)


def test_tiny_is_small():
    model = build_model("tiny", SMALLEST_SIZE)
    assert 10_000 < backbone_of(model).count_params() < 100_000


def test_augmentation_layer_sits_before_the_backbone():
    flip = keras.layers.RandomFlip(name="flip")
    model = build_model("tiny", SMALLEST_SIZE, augmentation=flip)
    names = [layer.name for layer in model.layers]
    assert names.index("flip") < names.index(backbone_of(model).name)


@pytest.mark.parametrize("backbone", ["tiny", "efficientnet_b0", "densenet201"])
def test_mixed_bfloat16_keeps_the_output_float32(backbone):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(backbone, SMALLEST_SIZE)
        image = np.zeros((1, SMALLEST_SIZE, SMALLEST_SIZE, 3), "uint8")
        probabilities = model(image, training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert backbone_of(model).compute_dtype == "bfloat16"  # the policy was in force
    assert model.output.dtype == "float32"
    assert keras.ops.convert_to_numpy(probabilities).dtype == np.float32


def test_weights_path_loads_the_same_values(tmp_path):
    source = backbone_of(build_model("tiny", SMALLEST_SIZE))
    randomize(source)
    path = tmp_path / "tiny.weights.h5"
    source.save_weights(path)
    loaded = backbone_of(build_model("tiny", SMALLEST_SIZE, weights=str(path)))
    for expected, actual in zip(source.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(actual), expected.numpy())


def test_keras_efficientnet_h5_file_gets_the_real_imagenet_variance(tmp_path):
    # keras.applications' downloadable EfficientNet files are legacy .h5 files whose
    # Normalization variance holds the ImageNet std; given as a path, the model must still
    # divide by the std (Keras only compensates for weights="imagenet").
    source = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(SMALLEST_SIZE, SMALLEST_SIZE, 3)
    )
    randomize(source)
    normalization = normalization_of(source)
    normalization.adapt_mean.assign(np.asarray(IMAGENET_MEAN, "float32"))
    normalization.adapt_variance.assign(np.asarray(IMAGENET_STD, "float32"))
    path = tmp_path / "efficientnetb0_notop.h5"
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, source)

    loaded = backbone_of(build_model("efficientnet_b0", SMALLEST_SIZE, weights=str(path)))
    loaded_normalization = normalization_of(loaded)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded_normalization.variance).ravel(), IMAGENET_VARIANCE
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded_normalization.mean).ravel(), IMAGENET_MEAN
    )
    skip = {id(variable) for variable in loaded_normalization.weights}
    expected = [v for v in source.weights if id(v) not in {id(w) for w in normalization.weights}]
    actual = [variable for variable in loaded.weights if id(variable) not in skip]
    for expected_variable, actual_variable in zip(expected, actual, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(actual_variable), expected_variable.numpy()
        )


@pytest.fixture(scope="module")
def random_conversion(tmp_path_factory):
    """efficientnet_b0 converted from seeded random package weights (offline, ~25 s)."""
    return convert_noisy_student(
        "efficientnet_b0", tmp_path_factory.mktemp("converted"), source_weights=None
    )


def test_converted_weights_give_the_package_model_features(random_conversion):
    probe = np.load(random_conversion.probe)
    image, reference = probe["image"], probe["features"]
    model = build_model("efficientnet_b0", image.shape[1], weights=random_conversion.weights)
    features = keras.ops.convert_to_numpy(feature_extractor(model)(image, training=False))
    scale = np.abs(reference).max()
    assert reference.std() > 0.01 * scale  # features that vary, so the comparison means something
    np.testing.assert_allclose(features, reference, rtol=0, atol=1e-4 * scale)

    # The same weights behind keras.applications' default 0-1 input scaling (no ImageNet mean
    # and std) must fail the check: the tolerance is tight enough to see a preprocessing slip.
    normalization = normalization_of(backbone_of(model))
    normalization.adapt_mean.assign(np.zeros(3, "float32"))
    normalization.adapt_variance.assign(np.ones(3, "float32"))
    normalization.finalize_state()
    unnormalized = keras.ops.convert_to_numpy(feature_extractor(model)(image, training=False))
    assert not features_match(unnormalized, reference)


def test_noisy_student_weights_come_from_the_cache(random_conversion, tmp_path):
    # Offline stand-in for the real download: files already under the noisy-student names are
    # reused, so build_model loads them without starting the conversion.
    cached = converted_paths("efficientnet_b0", tmp_path)
    cached.weights.write_bytes(random_conversion.weights.read_bytes())
    cached.probe.write_bytes(random_conversion.probe.read_bytes())
    assert convert_noisy_student("efficientnet_b0", tmp_path) == cached
    model = build_model("efficientnet_b0", 64, weights="noisy-student", cache_dir=tmp_path)
    reference = keras.applications.EfficientNetB0(
        include_top=False, weights=str(random_conversion.weights), input_shape=(64, 64, 3)
    )
    for expected, actual in zip(reference.weights, backbone_of(model).weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(actual), keras.ops.convert_to_numpy(expected)
        )


def test_conversion_rejects_other_backbones(tmp_path):
    with pytest.raises(ValueError, match="not 'efficientnetv2_b0'"):
        convert_noisy_student("efficientnetv2_b0", tmp_path, source_weights=None)


def test_tiny_learns_the_digits():
    from petals.demo_data import digit_images

    images, labels = digit_images(32)
    order = np.random.default_rng(0).permutation(len(images))
    train, held_out = order[:1400], order[1400:]
    keras.utils.set_random_seed(0)
    model = build_model("tiny", 32, num_classes=10)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(images[train], labels[train], batch_size=32, epochs=5, verbose=0)
    _, train_accuracy = model.evaluate(images[train], labels[train], verbose=0)
    _, held_out_accuracy = model.evaluate(images[held_out], labels[held_out], verbose=0)
    assert train_accuracy >= 0.95
    assert held_out_accuracy >= 0.9
