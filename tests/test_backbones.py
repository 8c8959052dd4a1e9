"""Tests for petals.backbones: registry and argument checks, every backbone builds, weight files
load, and the tiny CNN learns."""

import json
import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest

# Keras 3 saves only .weights.h5 files; its legacy module writes the older .h5 layout that
# keras.applications' downloadable weight files use.
from keras.src.legacy.saving import legacy_h5_format

from kit.demo_data import digit_images
from petals import NUM_CLASSES, backbones, parameters
from petals.backbones import BACKBONES, build_model, validate_backbone, validate_weights
from petals.normalization import IMAGENET_MEAN, IMAGENET_STD, IMAGENET_VARIANCE
from tests.conftest import assert_names

# The parameter counts KerasHub 0.29.1 publishes for its HGNetV2 presets (hgnetv2_presets.py):
# the configurations kept in petals.backbones must build exactly these backbones.
HGNETV2_PARAMETERS = {
    "hgnetv2_b4_ssld_stage2_ft_in1k": 13_599_072,
    "hgnetv2_b5_ssld_stage1_in22k_in1k": 33_419_680,
    "hgnetv2_b5_ssld_stage2_ft_in1k": 33_419_680,
    "hgnetv2_b6_ssld_stage1_in22k_in1k": 69_179_888,
    "hgnetv2_b6_ssld_stage2_ft_in1k": 69_179_888,
}
EXPECTED_NAMES = [
    "densenet201",
    *(f"efficientnet_b{index}" for index in range(8)),
    *(f"efficientnetv2_{variant}" for variant in ("b0", "b1", "b2", "b3", "s", "m", "l")),
    *(f"convnext_{size}" for size in ("tiny", "small", "base", "large", "xlarge")),
    *HGNETV2_PARAMETERS,
    "tiny",
    "tiny_wide",
]
SMALLEST_PRESET = "hgnetv2_b4_ssld_stage2_ft_in1k"
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


def without_normalization(efficientnet):
    """An EfficientNet's weights other than its input Normalization's."""
    set_aside = {id(variable) for variable in normalization_of(efficientnet).weights}
    return [variable for variable in efficientnet.weights if id(variable) not in set_aside]


def assert_same_values(expected_variables, actual_variables):
    for expected, actual in zip(expected_variables, actual_variables, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(actual), keras.ops.convert_to_numpy(expected)
        )


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


BUILD_EVERY_BACKBONE = """
import json, keras
from petals.backbones import build_model
size = {size}
results = {{}}
for name in {names}:
    model = build_model(name, size)
    output = model.compute_output_spec(keras.KerasTensor((1, size, size, 3), dtype="uint8"))
    (backbone,) = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    results[name] = [model.name, model.input.name, str(model.input.dtype),
                     list(model.input.shape), list(output.shape), str(output.dtype),
                     backbone.count_params()]
print(json.dumps(results))
"""


@pytest.mark.slow
def test_every_backbone_builds():
    """Catches a Keras upgrade that breaks one of the constructors.

    Built on the TensorFlow backend in a child process: on JAX, Keras compiles one program per
    distinct weight shape while initialising, which makes building all of them take minutes on
    two cores. Real forward passes of each family on the current backend run below. Offline:
    nothing is downloaded with weights None (this machine could not).
    """
    script = BUILD_EVERY_BACKBONE.format(size=SMALLEST_SIZE, names=EXPECTED_NAMES)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    built = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(built) == EXPECTED_NAMES
    for name, (
        model_name,
        input_name,
        input_dtype,
        input_shape,
        output_shape,
        output_dtype,
        backbone_parameters,
    ) in built.items():
        assert (model_name, input_name, input_dtype) == (name, "image", "uint8")
        assert input_shape == [None, SMALLEST_SIZE, SMALLEST_SIZE, 3]
        assert (output_shape, output_dtype) == ([1, NUM_CLASSES], "float32")
        if name in HGNETV2_PARAMETERS:
            assert backbone_parameters == HGNETV2_PARAMETERS[name], name


def test_tiny_is_small():
    assert 10_000 < backbone_of(build_model("tiny", SMALLEST_SIZE)).count_params() < 100_000


def test_augmentation_layer_sits_before_the_backbone():
    flip = keras.layers.RandomFlip(name="flip")
    model = build_model("tiny", SMALLEST_SIZE, augmentation=flip)
    names = [layer.name for layer in model.layers]
    assert names.index("flip") < names.index(backbone_of(model).name)


# One backbone per family: each preprocessing path (inside the model, torch-style layers
# before it, the tiny CNN's) runs for real here.
@pytest.mark.parametrize(
    "backbone",
    [
        "tiny",
        *(
            pytest.param(name, marks=pytest.mark.slow)
            for name in (
                "efficientnet_b0",
                "efficientnetv2_b0",
                "densenet201",
                "convnext_tiny",
            )
        ),
    ],
)
def test_mixed_bfloat16_keeps_the_output_float32(backbone):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(backbone, SMALLEST_SIZE)
        image = np.random.default_rng(0).integers(0, 256, (1, SMALLEST_SIZE, SMALLEST_SIZE, 3))
        probabilities = model.predict(image.astype("uint8"), verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert backbone_of(model).compute_dtype == "bfloat16"  # the policy was in force
    assert model.output.dtype == "float32"
    assert probabilities.shape == (1, NUM_CLASSES)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)


def test_weights_path_loads_the_same_values(tmp_path):
    source = backbone_of(build_model("tiny", SMALLEST_SIZE))
    randomize(source)
    path = tmp_path / "tiny.weights.h5"
    source.save_weights(path)
    loaded = backbone_of(build_model("tiny", SMALLEST_SIZE, weights=str(path)))
    assert_same_values(source.weights, loaded.weights)


@pytest.mark.slow
def test_keras_efficientnet_h5_file_gets_the_real_imagenet_variance(tmp_path):
    # keras.applications' downloadable EfficientNet files are legacy .h5 files whose
    # Normalization variance holds the ImageNet std; given as a path, the model must still
    # divide by the std (Keras only compensates for weights="imagenet").
    source = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(SMALLEST_SIZE, SMALLEST_SIZE, 3)
    )
    randomize(source)
    normalization_of(source).adapt_mean.assign(np.asarray(IMAGENET_MEAN, "float32"))
    normalization_of(source).adapt_variance.assign(np.asarray(IMAGENET_STD, "float32"))
    path = tmp_path / "efficientnetb0_notop.h5"
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, source)

    loaded = backbone_of(build_model("efficientnet_b0", SMALLEST_SIZE, weights=str(path)))
    # The constants the layer computes with, not just its variables.
    normalization = normalization_of(loaded)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(normalization.variance).ravel(), IMAGENET_VARIANCE
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(normalization.mean).ravel(), IMAGENET_MEAN
    )
    assert_same_values(without_normalization(source), without_normalization(loaded))


@pytest.mark.slow
def test_tiny_learns_the_digits():
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
    model.fit(images[train], labels[train], batch_size=32, epochs=4, verbose=0)
    _, train_accuracy = model.evaluate(images[train], labels[train], verbose=0)
    _, held_out_accuracy = model.evaluate(images[held_out], labels[held_out], verbose=0)
    assert train_accuracy >= 0.95
    assert held_out_accuracy >= 0.95


@pytest.mark.slow
def test_head_dropout_sits_before_the_head_and_trains_only():
    model = build_model("tiny", SMALLEST_SIZE, num_classes=4, head_dropout=0.5)
    names = [layer.name for layer in model.layers]
    assert names.index("features") < names.index("head_dropout") < names.index("probabilities")
    assert model.get_layer("head_dropout").rate == 0.5
    image = np.random.default_rng(0).integers(0, 256, (8, SMALLEST_SIZE, SMALLEST_SIZE, 3))
    image = image.astype("uint8")
    # The dropout layer's input and output in one call: the whole model's output would change in
    # training anyway (batch normalization then uses the batch's statistics).
    around = keras.Model(
        model.input, [model.get_layer("features").output, model.get_layer("head_dropout").output]
    )
    for training, share in ((True, 0.5), (False, 0.0)):
        features, dropped = (
            keras.ops.convert_to_numpy(value) for value in around(image, training=training)
        )
        live = features != 0
        assert abs(np.mean(dropped[live] == 0) - share) < 0.12, training  # the share dropped
        kept = live & (dropped != 0)
        np.testing.assert_allclose(dropped[kept], features[kept] / (1 - share), rtol=1e-5)
    assert "head_dropout" not in [layer.name for layer in build_model("tiny", SMALLEST_SIZE).layers]
    # The bound the parameters cell is checked by (0.95), not merely < 1.
    with pytest.raises(ValueError) as error:
        build_model("tiny", SMALLEST_SIZE, head_dropout=0.97)
    assert_names(error.value, "HEAD_DROPOUT", "0.97", "0.95]")


def test_a_preset_is_read_from_its_attached_kaggle_model(tmp_path):
    handle = parameters.KERAS_HUB_PRESETS[SMALLEST_PRESET]
    assert backbones.preset_source(SMALLEST_PRESET, tmp_path) == f"kaggle://{handle}"
    # Kaggle's mount (<model>/<framework>/<variation>/<version>), and the newer one in front.
    for folder in (
        tmp_path / "old" / "hgnetv2" / "keras" / SMALLEST_PRESET / "1",
        tmp_path / "new" / "models" / "keras" / "hgnetv2" / "keras" / SMALLEST_PRESET / "1",
    ):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        root = tmp_path / folder.relative_to(tmp_path).parts[0]
        assert backbones.preset_source(SMALLEST_PRESET, root) == str(folder)


@pytest.mark.slow
def test_preset_weights_load_from_the_attached_folder(tmp_path, monkeypatch):
    """WEIGHTS "imagenet" of a KerasHub preset: the preset saved by KerasHub, found where Kaggle
    mounts an attached model, is what the classifier's backbone holds."""
    import keras_hub

    saved = keras_hub.models.HGNetV2Backbone(
        **backbones.hgnetv2_config("b4"), image_shape=(SMALLEST_SIZE, SMALLEST_SIZE, 3)
    )
    randomize(saved)
    saved.save_to_preset(str(tmp_path / "hgnetv2" / "keras" / SMALLEST_PRESET / "1"))
    monkeypatch.setattr(backbones, "KAGGLE_INPUT", str(tmp_path))
    loaded = backbone_of(build_model(SMALLEST_PRESET, SMALLEST_SIZE, weights="imagenet"))
    assert_same_values(saved.weights, loaded.weights)


@pytest.mark.slow
def test_preset_weights_neither_attached_nor_downloadable_is_one_line(tmp_path, monkeypatch):
    # No Internet: every request goes to a closed port.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(backbones, "KAGGLE_INPUT", str(tmp_path))
    with pytest.raises(ValueError, match="turn on Internet") as error:
        build_model(SMALLEST_PRESET, SMALLEST_SIZE, weights="imagenet")
    assert parameters.KERAS_HUB_PRESETS[SMALLEST_PRESET] in str(error.value)
    assert "\n" not in str(error.value)
