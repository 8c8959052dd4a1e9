"""Random affine augmentation on the accelerator: the 2020 "rotation augmentation" recipe.

Chris Deotte's 2020 notebook for this competition augmented each image with a random rotation,
shear, zoom and shift by computing, for every output pixel, the input pixel it copies from and
gathering those pixels. This module does the same for a whole batch at once with `keras.ops`
and `keras.random` only, so it runs inside the compiled train step on JAX and TensorFlow.

Convention (the notebook's, with the centre made exact):

* Pixel coordinates are measured from the image centre ``((height - 1) / 2, (width - 1) / 2)``
  as ``[up, right, 1]``: ``up = centre_row - row`` points up the image and
  ``right = col - centre_col`` points right.
* A matrix maps an *output* pixel's ``[up, right, 1]`` to the *input* location it copies from
  (the inverse of the motion of the content). That location is rounded to the nearest pixel
  (exact halves to even, as `keras.ops.round` does on every backend) and clamped to the image.
* The matrix is ``rotation @ shear @ zoom @ shift`` with, for angles ``r`` and ``s``::

      rotation = [[cos r, sin r, 0], [-sin r, cos r, 0], [0, 0, 1]]
      shear    = [[1, sin s, 0], [0, cos s, 0], [0, 0, 1]]
      zoom     = [[1 / zoom_height, 0, 0], [0, 1 / zoom_width, 0], [0, 0, 1]]
      shift    = [[1, 0, shift_height], [0, 1, shift_width], [0, 0, 1]]

  so a positive rotation turns the content clockwise (90 degrees gives ``np.rot90(image, -1)``),
  a zoom above 1 magnifies, a positive ``shift_height`` moves the content down and a positive
  ``shift_width`` moves it left.
"""

import math

import keras
import numpy as np
from keras import ops


def _stack_matrices(rows):
    """Stack a 3x3 nested list of per-image [batch] tensors into [batch, 3, 3] matrices."""
    return ops.stack([ops.stack(row, axis=-1) for row in rows], axis=-2)


def affine_matrices(
    rotation_degrees, shear_degrees, zoom_height, zoom_width, shift_height, shift_width
):
    """Per-image 3x3 matrices [batch, 3, 3] from per-image parameter vectors (each [batch]).

    Each matrix maps an output pixel's centred ``[up, right, 1]`` to the input location it
    copies from; see the module docstring for the exact matrices and the sign conventions.
    """
    rotation = ops.convert_to_tensor(rotation_degrees, "float32") * (math.pi / 180.0)
    shear = ops.convert_to_tensor(shear_degrees, "float32") * (math.pi / 180.0)
    zoom_height = ops.convert_to_tensor(zoom_height, "float32")
    zoom_width = ops.convert_to_tensor(zoom_width, "float32")
    shift_height = ops.convert_to_tensor(shift_height, "float32")
    shift_width = ops.convert_to_tensor(shift_width, "float32")
    zero = ops.zeros_like(rotation)
    one = ops.ones_like(rotation)

    rotation_matrix = _stack_matrices(
        [
            [ops.cos(rotation), ops.sin(rotation), zero],
            [-ops.sin(rotation), ops.cos(rotation), zero],
            [zero, zero, one],
        ]
    )
    shear_matrix = _stack_matrices(
        [[one, ops.sin(shear), zero], [zero, ops.cos(shear), zero], [zero, zero, one]]
    )
    zoom_matrix = _stack_matrices(
        [[1.0 / zoom_height, zero, zero], [zero, 1.0 / zoom_width, zero], [zero, zero, one]]
    )
    shift_matrix = _stack_matrices(
        [[one, zero, shift_height], [zero, one, shift_width], [zero, zero, one]]
    )
    return ops.matmul(
        ops.matmul(rotation_matrix, shear_matrix), ops.matmul(zoom_matrix, shift_matrix)
    )


def apply_affine(images, matrices):
    """Resample each image [batch, height, width, channels] with its matrix [batch, 3, 3].

    Inverse mapping: every output pixel looks up where it comes from, so each one gets exactly
    one value and there are no holes. Nearest-pixel sampling copies real pixel values (no
    blur, no interpolation cost) and clamping to the image repeats the edge pixels instead of
    leaving black corners the model could learn to notice. The dtype of ``images`` is kept.
    """
    _, height, width, channels = images.shape
    centre_row = (height - 1) / 2.0
    centre_col = (width - 1) / 2.0
    # Centred coordinates of every output pixel, flattened in row-major order (static shapes).
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    up = ops.convert_to_tensor((centre_row - rows).reshape(-1), "float32")
    right = ops.convert_to_tensor((cols - centre_col).reshape(-1), "float32")

    matrices = ops.convert_to_tensor(matrices, "float32")
    source_up = matrices[:, 0, 0:1] * up + matrices[:, 0, 1:2] * right + matrices[:, 0, 2:3]
    source_right = matrices[:, 1, 0:1] * up + matrices[:, 1, 1:2] * right + matrices[:, 1, 2:3]
    source_row = ops.clip(ops.round(centre_row - source_up), 0, height - 1)
    source_col = ops.clip(ops.round(centre_col + source_right), 0, width - 1)

    # Each image gathers from itself only ([batch, height * width] indices into its own pixels):
    # under data parallelism a gather over the whole flattened batch would make XLA copy every
    # replica's images to every chip at each step.
    flat_indices = ops.cast(source_row, "int32") * width + ops.cast(source_col, "int32")
    pixels = ops.take_along_axis(
        ops.reshape(images, (-1, height * width, channels)), flat_indices[..., None], axis=1
    )
    return ops.reshape(pixels, (-1, height, width, channels))


@keras.saving.register_keras_serializable(package="petals")
class RandomAffine(keras.layers.Layer):
    """Random rotation, shear, zoom, shift and left-right flip per image; identity at inference.

    Per image: rotation ~ normal(0, ``rotation_degrees``) degrees, shear ~ normal(0,
    ``shear_degrees``) degrees, height and width zoom each ~ 1 + normal(0, ``zoom_stddev``),
    height and width shift each ~ normal(0, ``shift_pixels``) pixels, and, with ``flip``, a
    left-right mirror with probability 0.5. The randomness comes from a
    `keras.random.SeedGenerator` held by the layer, whose state Keras threads through compiled
    train steps. Input and output: [batch, size, size, channels].

    Integer images (the data pipeline's uint8) are gathered as integers, a quarter of float32's
    bytes, and cast to the layer's compute dtype afterwards (float32, or bfloat16 under a
    mixed_bfloat16 policy: 0-255 are exact in both), in training and at inference alike, so the
    layer can take the model's uint8 input directly. Float images keep their dtype.
    """

    def __init__(
        self,
        rotation_degrees=15.0,
        shear_degrees=5.0,
        zoom_stddev=0.1,
        shift_pixels=16.0,
        flip=True,
        seed=None,
        **kwargs,
    ):
        # No autocast: the layer only moves pixels, so it keeps whatever float dtype it gets.
        # Integer input is cast after the gather instead (see the class docstring).
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.rotation_degrees = rotation_degrees
        self.shear_degrees = shear_degrees
        self.zoom_stddev = zoom_stddev
        self.shift_pixels = shift_pixels
        self.flip = flip
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if training:
            images = apply_affine(images, self._random_matrices(ops.shape(images)[0]))
        return self._as_output(images)

    def _output_dtype(self, input_dtype):
        """The compute dtype for integer images, the input's own dtype for float images."""
        dtype = keras.backend.standardize_dtype(input_dtype)
        return dtype if keras.backend.is_float_dtype(dtype) else self.compute_dtype

    def _as_output(self, images):
        dtype = self._output_dtype(images.dtype)
        if keras.backend.standardize_dtype(images.dtype) == dtype:
            return images
        return ops.cast(images, dtype)

    def _random_matrices(self, batch_size):
        """One random affine matrix per image, [batch, 3, 3], the flip folded in."""
        batch_shape = (batch_size,)

        def normal(stddev):
            return keras.random.normal(batch_shape, stddev=stddev, seed=self.seed_generator)

        matrices = affine_matrices(
            rotation_degrees=normal(self.rotation_degrees),
            shear_degrees=normal(self.shear_degrees),
            zoom_height=1.0 + normal(self.zoom_stddev),
            zoom_width=1.0 + normal(self.zoom_stddev),
            shift_height=normal(self.shift_pixels),
            shift_width=normal(self.shift_pixels),
        )
        if self.flip:
            # Mirroring the output is negating the output's `right` coordinate, i.e. negating the
            # matrices' second column: the flip rides along in the same single gather.
            mirrored = keras.random.uniform(batch_shape, seed=self.seed_generator) < 0.5
            sign = ops.where(mirrored, -1.0, 1.0)
            column_signs = ops.stack([ops.ones_like(sign), sign, ops.ones_like(sign)], axis=-1)
            matrices = matrices * column_signs[:, None, :]
        return matrices

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, images, training=None):
        return keras.KerasTensor(images.shape, dtype=self._output_dtype(images.dtype))

    def get_config(self):
        return {
            **super().get_config(),
            "rotation_degrees": self.rotation_degrees,
            "shear_degrees": self.shear_degrees,
            "zoom_stddev": self.zoom_stddev,
            "shift_pixels": self.shift_pixels,
            "flip": self.flip,
            "seed": self.seed,
        }
