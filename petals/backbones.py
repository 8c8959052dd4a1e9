"""Backbones: the ImageNet CNNs the 2020 entries used, and the classifier built around each.

`build_model` turns a backbone name into a Keras classifier that takes the data pipeline's
uint8 images and feeds each backbone exactly the input its weights were trained on:

* keras.applications' EfficientNet and EfficientNetV2 rescale inside the model (they take 0-255);
* DenseNet201 expects torch-style ``(x / 255 - mean) / std``, added here as Keras layers (not
  TensorFlow ops) so the model runs on every Keras backend;
* keras.applications' ConvNeXt (Tiny to XLarge) normalises inside too (it takes 0-255);
* KerasHub's HGNetV2 presets (`parameters.KERAS_HUB_PRESETS`, by their preset names) were
  converted from timm with ImageNet's torch-style statistics, added here as for DenseNet201.
  Their configurations are kept here, so that they build without a download;
* "tiny" (and the twice as wide "tiny_wide") is a small CNN for CPU smoke runs and the digits
  demo; it rescales inside.

Weights (`WEIGHT_CHOICES`, or a path):

* ``None``: random initialisation, no network.
* ``"imagenet"``: keras.applications downloads its own ImageNet weights; a KerasHub preset's
  weights come from its Kaggle Model, read from /kaggle/input when the kernel has it attached
  (build.py kernels attaches it), else downloaded (Internet on).
* a path: a weights file for the backbone alone (include_top=False), such as keras.applications'
  ``*_notop.h5`` files or ``backbone.save_weights("x.weights.h5")``; loaded without network.
* ``"noisy-student"`` (EfficientNet B0-B7): the Noisy Student weights of the top 2020 entries,
  converted from the `efficientnet` package into the keras.applications model and cached
  (`petals.convert_weights`).
"""

import dataclasses
import functools
import glob
import os
from collections.abc import Callable

import keras
import numpy as np

from petals import NUM_CLASSES, convert_weights, install, parameters
from petals.normalization import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    IMAGENET_VARIANCE,
    normalization_layer,
    set_normalization,
)

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


# keras.applications' spelling of a ConvNeXt size where .title() misses it.
CONVNEXT_CASE = {"xlarge": "XLarge"}
# Where Kaggle mounts the Kaggle Models attached to a kernel.
KAGGLE_INPUT = "/kaggle/input"
# timm's hgnetv2_b4 ... b6 (timm/models/hgnet.py, model_cfgs), which KerasHub's presets were
# converted from: the stem's two widths, then per stage (input, middle and output channels,
# blocks, layers per block, kernel size). Every one downsamples but the first; the last two use
# the light blocks. tests/test_backbones.py holds the parameter counts to KerasHub's presets.
HGNETV2_STAGES = {
    "b4": (
        (32, 48),
        (
            (48, 48, 128, 1, 6, 3),
            (128, 96, 512, 1, 6, 3),
            (512, 192, 1024, 3, 6, 5),
            (1024, 384, 2048, 1, 6, 5),
        ),
    ),
    "b5": (
        (32, 64),
        (
            (64, 64, 128, 1, 6, 3),
            (128, 128, 512, 2, 6, 3),
            (512, 256, 1024, 5, 6, 5),
            (1024, 512, 2048, 2, 6, 5),
        ),
    ),
    "b6": (
        (48, 96),
        (
            (96, 96, 192, 2, 6, 3),
            (192, 192, 512, 3, 6, 3),
            (512, 384, 1024, 6, 6, 5),
            (1024, 768, 2048, 3, 6, 5),
        ),
    ),
}


def hgnetv2_config(variant):
    """keras_hub.models.HGNetV2Backbone's arguments for HGNetV2 `variant` ("b4", "b5", "b6")."""
    stem, stages = HGNETV2_STAGES[variant]
    return {
        "depths": [stage[3] for stage in stages],
        "embedding_size": stem[-1],
        "hidden_sizes": [stage[2] for stage in stages],
        "stem_channels": [3, *stem],
        "hidden_act": "relu",
        "use_learnable_affine_block": False,
        "stackwise_stage_filters": [list(stage) for stage in stages],
        "apply_downsample": [False, True, True, True],
        "use_lightweight_conv_block": [False, False, True, True],
    }


def preset_source(name, root=None):
    """Where KerasHub preset `name` is read from: its Kaggle Model's folder when attached to the
    kernel (under `root`, default KAGGLE_INPUT), else its kaggle:// handle, which KerasHub
    downloads (Internet on)."""
    root = root or KAGGLE_INPUT
    owner, model, framework, variation, version = parameters.KERAS_HUB_PRESETS[name].split("/")
    # Kaggle mounts a model at <model>/<framework>/<variation>/<version>; newer mounts add a
    # folder and the owner in front.
    for pattern in (
        os.path.join(root, model, framework, variation, version, "config.json"),
        os.path.join(root, "*", owner, model, framework, variation, version, "config.json"),
    ):
        found = sorted(glob.glob(pattern))
        if found:
            return os.path.dirname(found[0])
    return f"kaggle://{parameters.KERAS_HUB_PRESETS[name]}"


def _keras_hub_backbone(name, input_shape, weights=None):
    """KerasHub preset `name` as a model whose output is its last stage's features.

    weights None or a file: built from the configuration kept here (no download); "imagenet":
    the preset's weights, from the attached Kaggle Model or downloaded.
    """
    install.check_keras_hub()
    import keras_hub

    if weights == "imagenet":
        source = preset_source(name)
        try:
            backbone = keras_hub.models.Backbone.from_preset(source, image_shape=input_shape)
        except OSError as error:  # requests' errors are OSErrors: no Internet, or refused
            raise ValueError(
                f"backbone {name!r}: its Kaggle Model {parameters.KERAS_HUB_PRESETS[name]} is "
                f"not attached (nothing under {KAGGLE_INPUT}) and downloading {source} failed "
                f"({type(error).__name__}); turn on Internet in the notebook's settings, or "
                "attach the model (build.py kernels does)"
            ) from None
    else:
        variant = name.split("_")[1]
        backbone = keras_hub.models.HGNetV2Backbone(
            **hgnetv2_config(variant), image_shape=input_shape
        )
        if weights is not None:
            backbone.load_weights(weights)
    return keras.Model(backbone.input, backbone.output[backbone.stage_names[-1]], name=name)


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
    **{
        f"convnext_{size}": BackboneSpec(
            _application(f"ConvNeXt{CONVNEXT_CASE.get(size, size.title())}")
        )
        for size in parameters.CONVNEXT_SIZES
    },
    **{
        name: BackboneSpec(functools.partial(_keras_hub_backbone, name), torch_normalization=True)
        for name in parameters.KERAS_HUB_PRESETS
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


def _check_weights_in_notebook(checked):
    """WEIGHTS for every backbone of the run, as the notebook will build them (noisy-student:
    whether its converter can run here)."""
    for backbone in checked["BACKBONES"]:
        validate_weights(parameters.weights_for(checked["WEIGHTS"], backbone), backbone)


parameters.register_notebook_check("WEIGHTS", _check_weights_in_notebook)


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
