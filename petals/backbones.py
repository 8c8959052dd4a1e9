"""Backbones: the ImageNet CNNs the 2020 entries used, and the classifier built around each.

`build_model` turns a backbone name into a Keras classifier that takes the data pipeline's
uint8 images and feeds each backbone exactly the input its weights were trained on:

* keras.applications' EfficientNet and EfficientNetV2 rescale inside the model (they take 0-255);
* DenseNet201 expects torch-style ``(x / 255 - mean) / std``, added here as Keras layers (not
  TensorFlow ops) so the model runs on every Keras backend;
* "tiny" (and the twice as wide "tiny_wide") is a small CNN for CPU smoke runs and the digits
  demo; it rescales inside.

Weights (`WEIGHT_CHOICES`, or a path):

* ``None``: random initialisation, no network.
* ``"imagenet"``: keras.applications downloads its own ImageNet weights.
* a path: a weights file for the backbone alone (include_top=False), such as keras.applications'
  ``*_notop.h5`` files or ``backbone.save_weights("x.weights.h5")``; loaded without network.
* ``"noisy-student"`` (EfficientNet B0-B7): the Noisy Student weights of the top 2020 entries,
  converted from the `efficientnet` package into the keras.applications model and cached
  (`petals.convert_weights`).
"""

import dataclasses
import functools
import os
from collections.abc import Callable

import keras
import numpy as np

from petals import NUM_CLASSES, install, parameters

# Torch-style ImageNet statistics of RGB images scaled to 0-1: what DenseNet201 and the
# EfficientNet weights (keras.applications' and the efficientnet package's) were trained on.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_VARIANCE = tuple(std**2 for std in IMAGENET_STD)

# The named weight choices; any other string or os.PathLike is a path to a weights file.
WEIGHT_CHOICES = ("imagenet", "noisy-student", None)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone (include_top=False) and what input its weights expect."""

    # Called as builder(input_shape=(S, S, 3), weights=None | "imagenet" | path).
    builder: Callable[..., keras.Model]
    # True: the backbone expects torch-style (x / 255 - mean) / std, applied before it.
    torch_normalization: bool = False
    # "B0".."B7" for the original EfficientNets: the efficientnet package's variant that has
    # noisy-student weights, and the models whose weight files need `_repair_normalization`.
    efficientnet_variant: str | None = None
    has_imagenet_weights: bool = True


def _tiny_cnn(input_shape, weights=None, width=1):
    """A small fast CNN (about 60k parameters x width**2) on 0-255 images, for smoke runs.

    Four conv/BN/ReLU/pool blocks: at 32 px the last one sees nearly the whole image, and the
    digits demo learns several times faster than with three.
    """
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    for filters in (16 * width, 32 * width, 64 * width, 64 * width):
        # No bias: the batch normalisation right after has its own offset.
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        # Momentum 0.9, not 0.99: smoke runs and demos train for a few hundred steps, too few
        # for slow moving averages to catch up with the weights, and validation would lag.
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    model = keras.Model(inputs, x, name=f"tiny_cnn_x{width}")
    if weights is not None:
        model.load_weights(weights)
    return model


def _application(name):
    """A keras.applications constructor without its ImageNet classifier."""
    return functools.partial(getattr(keras.applications, name), include_top=False)


BACKBONES = {
    "densenet201": BackboneSpec(_application("DenseNet201"), torch_normalization=True),
    **{
        f"efficientnet_b{index}": BackboneSpec(
            _application(f"EfficientNetB{index}"), efficientnet_variant=f"B{index}"
        )
        for index in range(8)
    },
    **{
        f"efficientnetv2_{variant}": BackboneSpec(_application(f"EfficientNetV2{variant.upper()}"))
        for variant in ("b0", "b1", "b2", "b3", "s", "m", "l")
    },
    "tiny": BackboneSpec(_tiny_cnn, has_imagenet_weights=False),
    # A second, different small model, so that ensembling can be smoke-tested on a CPU.
    "tiny_wide": BackboneSpec(functools.partial(_tiny_cnn, width=2), has_imagenet_weights=False),
}


def validate_backbone(name):
    """Raise ValueError unless `name` is in BACKBONES."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")


def validate_weights(weights, backbones):
    """Raise ValueError unless `weights` suits every backbone named in `backbones`.

    `backbones` is one name or a list of names (the notebook may ensemble several).
    """
    names = [backbones] if isinstance(backbones, str) else list(backbones)
    for name in names:
        validate_backbone(name)
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"weights must be None, 'imagenet', 'noisy-student' or a file path, "
            f"not {type(weights).__name__} {weights!r}"
        )
    if weights == "imagenet":
        without = [name for name in names if not BACKBONES[name].has_imagenet_weights]
        if without:
            raise ValueError(
                f"backbone {without[0]!r} has no ImageNet weights; set WEIGHTS = None (null or "
                f"None on a command line) or a weights file"
            )
    elif weights == "noisy-student":
        without = [name for name in names if BACKBONES[name].efficientnet_variant is None]
        if without:
            raise ValueError(
                f"noisy-student weights exist only for efficientnet_b0 ... efficientnet_b7, "
                f"not {without[0]!r}; use weights='imagenet' for it"
            )
        install.check_noisy_student_packages()
    elif not os.path.isfile(weights):
        raise ValueError(
            f"weights file {os.fspath(weights)!r} does not exist; give the path of a backbone "
            f"weights file, or one of: imagenet, noisy-student, None"
        )


def build_model(
    backbone,
    image_size,
    num_classes=NUM_CLASSES,
    weights=None,
    augmentation=None,
    cache_dir=None,
    head_dropout=0.0,
):
    """The classifier: uint8 image -> augmentation -> backbone -> average pool -> softmax.

    Input "image" is uint8 [image_size, image_size, 3], as the data pipeline delivers it. The
    pooled backbone features are the layer named "features"; the softmax head is float32 so it
    stays exact under a mixed-precision policy. `augmentation` is a Keras layer that takes the
    uint8 image and returns it as 0-255 floats (moved in training, unchanged at inference), as
    `petals.augment.RandomAffine` does. `cache_dir` keeps converted noisy-student weights
    (default: `convert_weights.default_cache_dir()`). `head_dropout` (a rate, within the bounds
    of petals.parameters) adds a Dropout layer "head_dropout" between the pooled features and
    the head, active in training only. The model is named after the backbone.
    """
    validate_weights(weights, backbone)
    parameters.check_value("HEAD_DROPOUT", head_dropout)
    spec = BACKBONES[backbone]
    if weights == "noisy-student":
        from petals import convert_weights  # which imports this module

        cache_dir = cache_dir or convert_weights.default_cache_dir()
        weights = convert_weights.convert_noisy_student(backbone, cache_dir).weights
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    input_shape = (image_size, image_size, 3)

    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    # The augmentation gathers the uint8 pixels (a quarter of float32's bytes) and casts after.
    x = augmentation(inputs) if augmentation is not None else keras.ops.cast(inputs, "float32")
    if spec.torch_normalization:
        x = keras.layers.Rescaling(1.0 / 255)(x)
        x = keras.layers.Normalization(mean=IMAGENET_MEAN, variance=IMAGENET_VARIANCE)(x)
    backbone_model = spec.builder(input_shape=input_shape, weights=weights)
    if spec.efficientnet_variant is not None and weights not in (None, "imagenet"):
        _repair_normalization(backbone_model)
    x = backbone_model(x)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    if head_dropout:
        x = keras.layers.Dropout(head_dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=backbone)


def normalization_layer(efficientnet):
    """The input Normalization layer of a keras.applications EfficientNet (B0-B7)."""
    found = [
        layer for layer in efficientnet.layers if isinstance(layer, keras.layers.Normalization)
    ]
    if len(found) != 1:
        raise RuntimeError(
            f"expected one Normalization layer in {efficientnet.name}, found {len(found)}: "
            f"keras.applications changed; petals.backbones needs updating"
        )
    return found[0]


def set_normalization(normalization, mean, variance):
    """Give an adapted Normalization layer new statistics."""
    normalization.adapt_mean.assign(np.asarray(mean, "float32"))
    normalization.adapt_variance.assign(np.asarray(variance, "float32"))
    # The layer computes with constants derived from its variables when it was built or loaded.
    normalization.finalize_state()


def _repair_normalization(efficientnet):
    """Make an EfficientNet loaded from a weights file divide by the ImageNet std, not its root.

    keras.applications' EfficientNet files store the ImageNet std where the Normalization
    layer's variance belongs, so the layer divides by sqrt(std). With weights="imagenet" Keras
    adds a Rescaling layer that divides by sqrt(std) once more, but not when the same file is
    given as a path (e.g. attached to an offline Kaggle notebook): store the real variance then.
    """
    normalization = normalization_layer(efficientnet)
    variance = keras.ops.convert_to_numpy(normalization.adapt_variance)
    if np.allclose(variance, IMAGENET_STD):
        set_normalization(
            normalization, keras.ops.convert_to_numpy(normalization.adapt_mean), IMAGENET_VARIANCE
        )


class Summary:
    """`model.summary()` as the notebook shows it: collapsed under one line (layers, parameters)
    in Jupyter, nbconvert's HTML and Kaggle, expanded on a click; the full table as text."""

    def __init__(self, model):
        lines = []
        model.summary(print_fn=lambda text, **_: lines.append(text))
        self.text = "\n".join(lines)
        self.headline = (
            f"{model.name}: {len(model.layers)} layers, {model.count_params():,} "
            "parameters (click for the summary)"
        )

    def _repr_html_(self):
        import html

        return (
            f"<details><summary>{html.escape(self.headline)}</summary>"
            f"<pre>{html.escape(self.text)}</pre></details>"
        )

    def __repr__(self):
        return self.text
