"""Soft targets: label smoothing, MixUp and CutMix inside the compiled train step.

The data pipeline keeps delivering uint8 images and sparse integer labels; targets become
one-hot (or soft) only inside the step, on the accelerator.

* Label smoothing alone needs no change to the model: `SparseSmoothedCrossentropy` one-hots the
  sparse labels inside the loss and applies categorical cross-entropy with label smoothing.
* MixUp and CutMix change the images *and* the targets of the same step, with the same random
  draws. `MixingModel` wraps the classifier: in training, its `call` draws per-image mixing
  weights (from a `keras.random.SeedGenerator` it owns, so Keras threads the random state
  through the compiled step on every backend), mixes each image with its partner, runs the
  classifier, and returns the probabilities together with each image's own share of the pixels.
  Its `compute_loss` and `compute_metrics` turn the sparse labels into the matching soft targets.
  Both trainers (keras/src/backend/{jax,tensorflow}/trainer.py, Keras 3.13.2 to 3.15.1) run
  ``y_pred = call(x, training=True)`` then ``compute_loss(x, y, y_pred, ...)`` and
  ``compute_metrics(x, y, y_pred, ...)`` inside the one compiled step, so overriding these three
  public methods works unchanged on JAX and TensorFlow, with no backend-specific train step. At
  inference `call` is the classifier alone: predictions are not mixed.

Each image is mixed with its neighbour in the batch (image i with image i - 1, the batch rolled
by one). The training stream is shuffled, so neighbours are random pairs; and a roll by a fixed
amount moves one image across each replica boundary under data parallelism, where a random
permutation of the global batch would copy every replica's images to every chip.
"""

import keras
from keras import ops

# MixUp's own-image weight follows Beta(alpha, alpha) (Zhang et al. 2018 use 0.1-0.4 on
# ImageNet); CutMix's patch area share is uniform on [0, 1], i.e. Beta(1, 1) (Yun et al. 2019).
MIXUP_ALPHA = 0.2


def validate_probabilities(mixup, cutmix):
    """Raise ValueError unless MixUp and CutMix are probabilities whose sum is at most 1."""
    for name, value in (("MIXUP", mixup), ("CUTMIX", cutmix)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} = {value!r} is not valid: expected a probability in [0, 1]")
    if mixup + cutmix > 1.0:
        raise ValueError(
            f"MIXUP + CUTMIX = {mixup + cutmix:g} is more than 1: each image gets at "
            f"most one of the two, so their probabilities must add up to at most 1"
        )


def pixel_weights(images, mixup, cutmix, seed):
    """Each image's own weight per pixel, [batch, height, width, 1] float32 in [0, 1].

    Per image, one uniform draw chooses: CutMix with probability `cutmix` (weight 0 inside a
    rectangle whose area share is uniform on [0, 1] and whose centre is anywhere in the image,
    clipped at the borders; 1 outside), else MixUp with probability `mixup` (the same weight
    lambda ~ Beta(MIXUP_ALPHA, MIXUP_ALPHA) everywhere), else 1 (the image is left as it is).
    The partner image gets one minus the weight. `seed` is a `keras.random.SeedGenerator`.
    """
    batch, height, width = ops.shape(images)[0], images.shape[1], images.shape[2]
    shape = (batch,)
    choice = keras.random.uniform(shape, seed=seed)
    cut = choice < cutmix
    blend = ops.logical_and(choice >= cutmix, choice < cutmix + mixup)
    own_share = keras.random.beta(shape, MIXUP_ALPHA, MIXUP_ALPHA, seed=seed)

    side = ops.sqrt(keras.random.uniform(shape, seed=seed))  # patch side / image side
    centre_row = keras.random.uniform(shape, seed=seed) * height
    centre_col = keras.random.uniform(shape, seed=seed) * width

    def inside(centre, size):
        """[batch, size] booleans: the pixel indices covered by each image's patch."""
        first = ops.round(centre - side * size / 2)
        last = ops.round(centre + side * size / 2)  # exclusive
        indices = ops.cast(ops.arange(size), "float32")[None, :]
        return ops.logical_and(indices >= first[:, None], indices < last[:, None])

    patch = ops.logical_and(
        inside(centre_row, height)[:, :, None], inside(centre_col, width)[:, None, :]
    )
    weights = ops.where(
        cut[:, None, None],
        ops.where(patch, 0.0, 1.0),
        ops.where(blend[:, None, None], own_share[:, None, None], 1.0),
    )
    return ops.cast(weights[..., None], "float32")


def partners(values):
    """Each image's partner in the batch: image i is mixed with image i - 1."""
    return ops.roll(values, 1, axis=0)


def mix_images(images, weights):
    """Blend every image with its partner by the per-pixel weights; the dtype is kept.

    Integer images (the pipeline's uint8) are rounded back to integers: CutMix copies pixels
    exactly, MixUp is off by at most half a grey level.
    """
    source = ops.cast(images, "float32")
    mixed = weights * source + (1.0 - weights) * partners(source)
    if "int" in str(images.dtype):
        mixed = ops.round(mixed)
    return ops.cast(mixed, images.dtype)


def own_shares(weights):
    """Each image's own share of the mixed image's pixels, [batch]."""
    return ops.mean(weights, axis=(1, 2, 3))


def mix_targets(targets, shares):
    """Soft targets [batch, classes]: own share of the own target, the rest of the partner's."""
    targets = ops.convert_to_tensor(targets, "float32")
    shares = ops.cast(shares, "float32")[:, None]
    return shares * targets + (1.0 - shares) * partners(targets)


def one_hot(labels, classes, dtype="float32"):
    """Sparse integer labels ([batch] or [batch, 1]) as one-hot rows [batch, classes]."""
    return ops.one_hot(ops.reshape(ops.cast(labels, "int32"), (-1,)), classes, dtype=dtype)


@keras.saving.register_keras_serializable(package="petals")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy with label smoothing, on sparse integer labels.

    Keras's sparse cross-entropy has no label smoothing; this one-hots the labels inside the
    compiled step (the class count is the predictions' last dimension), so the dataset keeps
    sending integers.
    """

    def __init__(self, label_smoothing=0.0, name="smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        targets = one_hot(y_true, y_pred.shape[-1], y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            targets, y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class MixingModel(keras.Model):
    """A classifier trained on MixUp / CutMix batches with soft targets (see the module docstring).

    Compile it with a categorical loss (targets arrive one-hot or soft, [batch, classes]) and
    "accuracy", which then counts the prediction right when it picks the class with the largest
    target share. Validation and prediction see unmixed images and one-hot targets.
    """

    def __init__(self, classifier, mixup=0.0, cutmix=0.0, seed=None, **kwargs):
        validate_probabilities(mixup, cutmix)
        kwargs.setdefault("name", f"{classifier.name}_mixing")
        super().__init__(**kwargs)
        self.classifier = classifier
        self.mixup = mixup
        self.cutmix = cutmix
        self.classes = classifier.outputs[0].shape[-1]
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Nothing to build: the classifier already is, and the seed state needs no input shape.
        # Marked built so that summary() and count_params() work before training, as they do on
        # the classifier.
        self.built = True

    def call(self, images, training=None):
        if not training:
            return self.classifier(images, training=training)
        weights = pixel_weights(images, self.mixup, self.cutmix, self.seed_generator)
        probabilities = self.classifier(mix_images(images, weights), training=training)
        return probabilities, own_shares(weights)

    def targets(self, y, y_pred):
        """(targets, probabilities): soft targets in training (y_pred carries the shares)."""
        if isinstance(y_pred, (tuple, list)):
            probabilities, shares = y_pred
            return mix_targets(one_hot(y, self.classes), shares), probabilities
        return one_hot(y, self.classes), y_pred

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        targets, probabilities = self.targets(y, y_pred)
        return super().compute_loss(x, targets, probabilities, sample_weight, training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        targets, probabilities = self.targets(y, y_pred)
        return super().compute_metrics(x, targets, probabilities, sample_weight)
