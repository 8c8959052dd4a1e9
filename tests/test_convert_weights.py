"""Tests for petals.convert_weights: noisy-student conversion gives the package model's features
(checked offline, from seeded random package weights), and converted files are reused."""

import keras
import numpy as np
import pytest

from petals.backbones import build_model
from petals.convert_weights import (
    FEATURE_TOLERANCE,
    convert_noisy_student,
    converted_paths,
    features_match,
)
from tests.test_backbones import (
    assert_same_values,
    backbone_of,
    feature_extractor,
    normalization_of,
)


@pytest.fixture(scope="module")
def random_conversion(tmp_path_factory):
    """efficientnet_b0 converted from seeded random package weights (offline, ~15 s)."""
    return convert_noisy_student(
        "efficientnet_b0", tmp_path_factory.mktemp("converted"), source_weights=None
    )


@pytest.mark.slow
@pytest.mark.xdist_group("random_conversion")
def test_converted_weights_give_the_package_model_features(random_conversion):
    """The converted file, loaded by the package's model, gives the reference features within
    the tolerance, and a preprocessing slip (no ImageNet mean and std) fails that check."""
    probe = np.load(random_conversion.probe)
    image, reference = probe["image"], probe["features"]
    model = build_model("efficientnet_b0", image.shape[1], weights=random_conversion.weights)
    features = keras.ops.convert_to_numpy(feature_extractor(model)(image, training=False))
    scale = np.abs(reference).max()
    np.testing.assert_allclose(features, reference, rtol=0, atol=FEATURE_TOLERANCE * scale)

    # The same weights behind keras.applications' default 0-1 input scaling (no ImageNet mean
    # and std) must fail the check: the tolerance is tight enough to see a preprocessing slip.
    normalization = normalization_of(backbone_of(model))
    normalization.adapt_mean.assign(np.zeros(3, "float32"))
    normalization.adapt_variance.assign(np.ones(3, "float32"))
    normalization.finalize_state()
    unnormalized = keras.ops.convert_to_numpy(feature_extractor(model)(image, training=False))
    assert np.abs(unnormalized - reference).max() > 100 * FEATURE_TOLERANCE * scale
    assert not features_match(unnormalized, reference)


@pytest.mark.slow
@pytest.mark.xdist_group("random_conversion")
def test_noisy_student_weights_come_from_the_cache(random_conversion, tmp_path):
    """Files already under the noisy-student names are reused without converting again, and
    build_model loads them."""
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
    assert_same_values(reference.weights, backbone_of(model).weights)


def test_conversion_rejects_other_backbones(tmp_path):
    with pytest.raises(ValueError, match="not 'efficientnetv2_b0'"):
        convert_noisy_student("efficientnetv2_b0", tmp_path, source_weights=None)
