"""Tests for petals.augment: the geometry against hand-computed pixels, then the random layer."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from petals.augment import RandomAffine, affine_matrices, apply_affine


def square_image(size, channels=1):
    """A [1, size, size, channels] image whose pixels all differ, so any move shows."""
    return np.arange(size * size * channels, dtype="float32").reshape(1, size, size, channels)


# One batch shape for all the random-layer tests: JAX compiles each eager op once per shape.
BATCH = np.repeat(square_image(8, channels=3), 16, axis=0)


def transform(
    images,
    rotation=0.0,
    shear=0.0,
    zoom_height=1.0,
    zoom_width=1.0,
    shift_height=0.0,
    shift_width=0.0,
):
    """Apply one set of parameters to every image of the batch; returns numpy."""
    batch = np.ones(images.shape[0], dtype="float32")
    matrices = affine_matrices(
        rotation * batch,
        shear * batch,
        zoom_height * batch,
        zoom_width * batch,
        shift_height * batch,
        shift_width * batch,
    )
    return ops.convert_to_numpy(apply_affine(ops.convert_to_tensor(images), matrices))


def test_identity_parameters_return_the_input_exactly():
    images = np.random.default_rng(0).random((2, 7, 7, 3), dtype="float32")
    np.testing.assert_array_equal(transform(images), images)


def test_matrix_is_rotation_shear_zoom_shift_in_that_order():
    rotation, shear = math.radians(12.0), math.radians(-4.0)
    rotation_matrix = [
        [math.cos(rotation), math.sin(rotation), 0],
        [-math.sin(rotation), math.cos(rotation), 0],
        [0, 0, 1],
    ]
    shear_matrix = [[1, math.sin(shear), 0], [0, math.cos(shear), 0], [0, 0, 1]]
    zoom_matrix = [[1 / 1.25, 0, 0], [0, 1 / 0.8, 0], [0, 0, 1]]
    shift_matrix = [[1, 0, 3.0], [0, 1, -5.0], [0, 0, 1]]
    expected = (
        np.array(rotation_matrix)
        @ np.array(shear_matrix)
        @ np.array(zoom_matrix)
        @ np.array(shift_matrix)
    )
    matrices = affine_matrices([12.0], [-4.0], [1.25], [0.8], [3.0], [-5.0])
    np.testing.assert_allclose(ops.convert_to_numpy(matrices)[0], expected, atol=1e-6)


def test_positive_90_degree_rotation_turns_the_content_clockwise():
    image = square_image(5)
    clockwise = np.rot90(image[0, :, :, 0], k=-1)
    np.testing.assert_array_equal(transform(image, rotation=90.0)[0, :, :, 0], clockwise)
    counterclockwise = np.rot90(image[0, :, :, 0], k=1)
    np.testing.assert_array_equal(transform(image, rotation=-90.0)[0, :, :, 0], counterclockwise)


def test_positive_height_shift_moves_the_content_down_repeating_the_top_row():
    image = square_image(5)[0, :, :, 0]
    # Output row r copies input row r - 2, clamped to row 0 at the top.
    expected = image[[0, 0, 0, 1, 2], :]
    shifted = transform(image[None, :, :, None], shift_height=2.0)[0, :, :, 0]
    np.testing.assert_array_equal(shifted, expected)


def test_positive_width_shift_moves_the_content_left_repeating_the_right_column():
    image = square_image(5)[0, :, :, 0]
    # Output column c copies input column c + 1, clamped to column 4 on the right.
    expected = image[:, [1, 2, 3, 4, 4]]
    shifted = transform(image[None, :, :, None], shift_width=1.0)[0, :, :, 0]
    np.testing.assert_array_equal(shifted, expected)


def test_zoom_of_two_magnifies_about_the_centre():
    image = square_image(6)[0, :, :, 0]
    # Centre 2.5: output index i reads 2.5 + (i - 2.5) / 2 = 1.25, 1.75, ..., 3.75 -> nearest.
    nearest = [1, 2, 2, 3, 3, 4]
    both = transform(image[None, :, :, None], zoom_height=2.0, zoom_width=2.0)[0, :, :, 0]
    np.testing.assert_array_equal(both, image[np.ix_(nearest, nearest)])
    height_only = transform(image[None, :, :, None], zoom_height=2.0)[0, :, :, 0]
    np.testing.assert_array_equal(height_only, image[nearest, :])


def test_shear_of_20_degrees_slides_the_outer_columns_vertically():
    image = square_image(5)[0, :, :, 0]
    # Output (row, col) reads row - sin(20)(col - 2), 2 + cos(20)(col - 2): columns 1 to 3 stay
    # put (offsets 0.34, 0.94 round away), column 0 reads one row lower and column 4 one row
    # higher, clamped at the image edge.
    expected = image.copy()
    expected[:, 0] = image[[1, 2, 3, 4, 4], 0]
    expected[:, 4] = image[[0, 0, 1, 2, 3], 4]
    sheared = transform(image[None, :, :, None], shear=20.0)[0, :, :, 0]
    np.testing.assert_array_equal(sheared, expected)
    assert sheared[0, 0] == image[1, 0] and sheared[4, 0] == image[4, 0]
    assert sheared[0, 4] == image[0, 4] and sheared[4, 4] == image[3, 4]


def test_different_images_get_their_own_matrix():
    images = np.concatenate([square_image(5), square_image(5)])
    matrices = affine_matrices(
        [0.0, 90.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]
    )
    out = ops.convert_to_numpy(apply_affine(ops.convert_to_tensor(images), matrices))
    np.testing.assert_array_equal(out[0], images[0])
    np.testing.assert_array_equal(out[1, :, :, 0], np.rot90(images[1, :, :, 0], k=-1))


@pytest.mark.parametrize("training", [False, None])
def test_layer_is_identity_at_inference(training):
    out = RandomAffine(seed=0)(BATCH, training=training)
    np.testing.assert_array_equal(ops.convert_to_numpy(out), BATCH)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_moves_pixels_differently_per_image(dtype):
    # 16 copies of one image of 8 * 8 * 3 = 192 distinct integers, exact in bfloat16 too.
    images = ops.convert_to_tensor(BATCH, dtype)
    # Shifts scaled to the 8-pixel image: the default 16 pixels would often push all of it out,
    # leaving only a clamped corner pixel that two images can share.
    out = RandomAffine(shift_pixels=2.0, seed=0)(images, training=True)
    assert out.shape == BATCH.shape
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    out = ops.convert_to_numpy(ops.cast(out, "float32"))
    assert set(np.unique(out)) <= set(np.unique(BATCH))  # nearest sampling copies pixels
    for first in range(len(out)):
        assert not np.array_equal(out[first], BATCH[0])
        for second in range(first + 1, len(out)):
            assert not np.array_equal(out[first], out[second])


def test_flip_alone_gives_the_image_or_its_mirror_and_both_occur():
    layer = RandomAffine(
        rotation_degrees=0.0,
        shear_degrees=0.0,
        zoom_stddev=0.0,
        shift_pixels=0.0,
        flip=True,
        seed=0,
    )
    out = ops.convert_to_numpy(layer(BATCH, training=True))
    mirror = BATCH[0, :, ::-1]
    is_image = [np.array_equal(one, BATCH[0]) for one in out]
    is_mirror = [np.array_equal(one, mirror) for one in out]
    assert all(a or b for a, b in zip(is_image, is_mirror, strict=True))
    assert any(is_image) and any(is_mirror)


def test_no_flip_and_zero_magnitudes_leave_the_images_alone():
    layer = RandomAffine(
        rotation_degrees=0.0,
        shear_degrees=0.0,
        zoom_stddev=0.0,
        shift_pixels=0.0,
        flip=False,
        seed=0,
    )
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(BATCH, training=True)), BATCH)


@pytest.mark.slow
def test_trains_inside_a_compiled_model():
    """RandomAffine trains inside a compiled model, batch size varying, its seed advancing."""
    layer = RandomAffine(seed=0)
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(layer(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    state_before = ops.convert_to_numpy(layer.seed_generator.state.value)
    rng = np.random.default_rng(0)
    # 6 images in batches of 4: the last batch is partial, so the batch size varies.
    history = model.fit(
        rng.random((6, 8, 8, 3), dtype="float32"),
        np.array([0, 1, 2, 0, 1, 2]),
        batch_size=4,
        epochs=1,
        verbose=0,
    )
    assert np.isfinite(history.history["loss"][0])
    # The compiled steps advanced the layer's seed state, so each step draws new parameters.
    assert not np.array_equal(ops.convert_to_numpy(layer.seed_generator.state.value), state_before)


def test_config_round_trip():
    layer = RandomAffine(
        rotation_degrees=10.0,
        shear_degrees=2.0,
        zoom_stddev=0.05,
        shift_pixels=8.0,
        flip=False,
        seed=7,
        name="augment",
    )
    config = layer.get_config()
    clone = RandomAffine.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(revived, RandomAffine) and revived.get_config() == config
    # Same seed, same first draw.
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer(BATCH, training=True)),
        ops.convert_to_numpy(clone(BATCH, training=True)),
    )


def test_uint8_images_are_gathered_as_integers_then_cast_to_the_compute_dtype():
    """The model's uint8 input can go straight into the layer: same pixels as the float path."""
    images = BATCH.astype("uint8")  # 0..191, exact in uint8
    from_uint8 = RandomAffine(shift_pixels=2.0, seed=3)(images, training=True)
    from_float = RandomAffine(shift_pixels=2.0, seed=3)(images.astype("float32"), training=True)
    assert keras.backend.standardize_dtype(from_uint8.dtype) == "float32"
    np.testing.assert_array_equal(
        ops.convert_to_numpy(from_uint8), ops.convert_to_numpy(from_float)
    )
    assert not np.array_equal(ops.convert_to_numpy(from_uint8), BATCH)  # pixels did move
    # At inference too the integers come out as the compute dtype, unmoved.
    unchanged = RandomAffine(seed=3)(images, training=False)
    assert keras.backend.standardize_dtype(unchanged.dtype) == "float32"
    np.testing.assert_array_equal(ops.convert_to_numpy(unchanged), BATCH)


def test_uint8_output_follows_a_mixed_bfloat16_policy_and_the_symbolic_dtype_matches():
    layer = RandomAffine(seed=0, dtype="mixed_bfloat16")
    out = layer(BATCH.astype("uint8"), training=True)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    symbolic = layer(keras.Input((8, 8, 3), dtype="uint8"))
    assert symbolic.dtype == "bfloat16"
    # Float input keeps its dtype, symbolically as well.
    assert RandomAffine(dtype="mixed_bfloat16")(keras.Input((8, 8, 3))).dtype == "float32"


@pytest.mark.slow
def test_trains_on_uint8_input_inside_a_compiled_model():
    """On uint8 input, the compiled step moves the pixels and the model learns."""
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    moved = keras.layers.Rescaling(1 / 255)(RandomAffine(shift_pixels=2.0, seed=0)(inputs))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(moved))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype="uint8")
    labels = np.array([0, 1, 2, 0])
    unmoved_loss = model.evaluate(images, labels, batch_size=4, verbose=0)
    weights_before = [ops.convert_to_numpy(weight) for weight in model.trainable_weights]
    history = model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    # One step: its loss is that of the starting weights on the pixels the compiled step moved.
    assert history.history["loss"][0] != pytest.approx(unmoved_loss, rel=1e-4)
    for before, after in zip(weights_before, model.trainable_weights, strict=True):
        assert not np.array_equal(ops.convert_to_numpy(after), before)  # and it learned
