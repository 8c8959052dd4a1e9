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
* ``"noisy-student"`` (EfficientNet B0-B7): the Noisy Student weights of the top 2020 entries.
  They come from the `efficientnet` package, which builds only on Keras's TensorFlow backend,
  while the kit may train on JAX. So a subprocess with KERAS_BACKEND=tensorflow builds the
  package model, copies its weights into the matching keras.applications EfficientNet, checks
  that both give the same features for a probe image, and saves a ``.weights.h5`` file in a
  cache folder, which any backend then loads (`convert_noisy_student`).
"""

import argparse
import dataclasses
import functools
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from petals import NUM_CLASSES

# Torch-style ImageNet statistics of RGB images scaled to 0-1: what DenseNet201 and the
# EfficientNet weights (keras.applications' and the efficientnet package's) were trained on.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_VARIANCE = tuple(std**2 for std in IMAGENET_STD)

# The named weight choices; any other string or os.PathLike is a path to a weights file.
WEIGHT_CHOICES = ("imagenet", "noisy-student", None)

# The efficientnet package release whose noisy-student weights the 2020 entries used.
EFFICIENTNET_REQUIREMENT = "efficientnet==1.1.1"

# Relative tolerance (to the largest feature) within which two models count as giving the same
# features: float32 rounding through ~80 layers stays around 1e-6, a wrong weight mapping or
# input normalisation is off by far more.
FEATURE_TOLERANCE = 1e-4


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
        ensure_noisy_student_packages()
    elif not os.path.isfile(weights):
        raise ValueError(
            f"weights file {os.fspath(weights)!r} does not exist; give the path of a backbone "
            f"weights file, or one of: imagenet, noisy-student, None"
        )


def _missing_noisy_student_packages():
    return [
        package for package in ("efficientnet", "tensorflow")
        if importlib.util.find_spec(package) is None
    ]


def ensure_noisy_student_packages():
    """Make sure the noisy-student conversion can run; raise ValueError saying what it needs.

    Kaggle's TPU image has TensorFlow but not the `efficientnet` package: inside a Kaggle
    notebook (KAGGLE_KERNEL_RUN_TYPE set) it is pip-installed into the running environment,
    which needs the notebook's Internet setting on. Elsewhere the error names the command.
    """
    missing = _missing_noisy_student_packages()
    if missing == ["efficientnet"] and "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", EFFICIENTNET_REQUIREMENT],
            capture_output=True, text=True, check=False,
        )
        importlib.invalidate_caches()
        if result.returncode == 0 and not _missing_noisy_student_packages():
            return
        output = (result.stderr or result.stdout).strip().splitlines()
        raise ValueError(
            f"noisy-student weights need the efficientnet package, which Kaggle's TPU image "
            f"lacks, and `pip install {EFFICIENTNET_REQUIREMENT}` failed "
            f"({output[-1] if output else 'no output'}); turn on Internet in the notebook's "
            f"settings, or use WEIGHTS='imagenet'"
        )
    if missing:
        raise ValueError(
            f"noisy-student weights need the {' and '.join(missing)} package(s); "
            f"run: pip install {EFFICIENTNET_REQUIREMENT} tensorflow"
        )


def default_cache_dir():
    """Where converted weights are kept: $KERAS_HOME/petals, else ~/.keras/petals."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "petals"


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
    (default: `default_cache_dir()`). `head_dropout` (0 <= rate < 1) adds a Dropout layer
    "head_dropout" between the pooled features and the head, active in training only. The model
    is named after the backbone.
    """
    validate_weights(weights, backbone)
    if not 0.0 <= head_dropout < 1.0:
        raise ValueError(f"HEAD_DROPOUT = {head_dropout!r} is not valid: expected a rate in [0, 1)")
    spec = BACKBONES[backbone]
    if weights == "noisy-student":
        weights = convert_noisy_student(backbone, cache_dir or default_cache_dir()).weights
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


def _normalization_layer(efficientnet):
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


def _set_normalization(normalization, mean, variance):
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
    normalization = _normalization_layer(efficientnet)
    variance = keras.ops.convert_to_numpy(normalization.adapt_variance)
    if np.allclose(variance, IMAGENET_STD):
        _set_normalization(
            normalization, keras.ops.convert_to_numpy(normalization.adapt_mean), IMAGENET_VARIANCE
        )


def features_match(features, reference):
    """Whether two feature arrays agree within FEATURE_TOLERANCE of the reference's scale."""
    scale = float(np.abs(reference).max())
    return float(np.abs(features - reference).max()) <= FEATURE_TOLERANCE * scale


class ConvertedWeights(NamedTuple):
    """Files written by `convert_noisy_student`."""

    weights: Path  # .weights.h5 for the keras.applications backbone (include_top=False)
    probe: Path  # .npz: a uint8 probe "image" [1, P, P, 3] and the package model's "features"


def converted_paths(backbone, destination, source_weights="noisy-student"):
    """Where `convert_noisy_student` puts its files for this backbone and source."""
    stem = f"{backbone}_{source_weights or 'random'}_notop"
    destination = Path(destination)
    return ConvertedWeights(destination / f"{stem}.weights.h5", destination / f"{stem}.probe.npz")


def convert_noisy_student(backbone, destination, source_weights="noisy-student", probe_size=64):
    """Convert the efficientnet package's weights for keras.applications; return the files.

    Runs `python -m petals.backbones` under KERAS_BACKEND=tensorflow (the only backend the
    package builds on), whatever backend this process uses. Files already in `destination` are
    reused. `source_weights=None` converts seeded random weights instead: an offline check.
    """
    validate_backbone(backbone)
    if BACKBONES[backbone].efficientnet_variant is None:
        raise ValueError(
            f"noisy-student weights exist only for efficientnet_b0 ... b7, not {backbone!r}"
        )
    if source_weights not in ("noisy-student", None):
        raise ValueError(
            f"source_weights must be 'noisy-student' or None, not {source_weights!r}"
        )
    paths = converted_paths(backbone, destination, source_weights)
    # The weights file is written last, so its presence means a finished conversion.
    if paths.weights.exists() and paths.probe.exists():
        return paths

    package_root = str(Path(__file__).resolve().parent.parent)
    environment = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        # The conversion is small CPU work; keep TensorFlow off a GPU the training process holds.
        "CUDA_VISIBLE_DEVICES": "-1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # The notebook may import petals from a folder it added to sys.path, which a
        # subprocess does not inherit.
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable, "-m", "petals.backbones", backbone, str(paths.weights.parent),
        "--source-weights", source_weights or "random", "--probe-size", str(probe_size),
    ]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log = (result.stderr or result.stdout).strip()
        last_line = log.splitlines()[-1] if log else "no output"
        raise RuntimeError(
            f"converting {source_weights or 'random'} weights for {backbone} failed: {last_line}"
            f"\n--- conversion log (tail) ---\n{log[-4000:]}"
        )
    return paths


def _randomize_statistics(model, seed):
    """Give every batch-norm and bias tensor distinct random values.

    Fresh initialisation leaves all gammas and variances at 1 and betas, means and biases at 0,
    so a conversion that swapped two of them would go unnoticed; random values expose it. The
    gammas and variances lie in [1, 2]: with smaller gains the signal fades over ~80 layers, the
    biases alone set the features, and a wrong input normalisation would barely change them.
    """
    random = np.random.default_rng(seed)
    for variable in model.weights:
        kind = variable.path.rsplit("/", 1)[-1]
        if kind in ("gamma", "moving_variance"):
            variable.assign(random.uniform(1.0, 2.0, variable.shape).astype("float32"))
        elif kind in ("beta", "moving_mean", "bias"):
            variable.assign(random.normal(0.0, 0.1, variable.shape).astype("float32"))


def _convert_here(backbone, destination, source_weights, probe_size, seed=0):
    """The conversion itself; runs in the TensorFlow-backend subprocess."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("the efficientnet package needs KERAS_BACKEND=tensorflow")
    # Imported here: the package imports TensorFlow and builds only on its backend.
    import efficientnet.tfkeras as efficientnet_package

    spec = BACKBONES[backbone]
    paths = converted_paths(backbone, destination, source_weights)
    paths.weights.parent.mkdir(parents=True, exist_ok=True)
    input_shape = (probe_size, probe_size, 3)
    keras.utils.set_random_seed(seed)
    source = getattr(efficientnet_package, f"EfficientNet{spec.efficientnet_variant}")(
        weights=source_weights, include_top=False, input_shape=input_shape, pooling="avg"
    )
    if source_weights is None:
        _randomize_statistics(source, seed)
    target = spec.builder(input_shape=input_shape, weights=None)

    # The two models hold the same tensors in the same order once keras.applications' input
    # Normalization (mean, variance, count) is set aside; check that rather than trust it.
    normalization = _normalization_layer(target)
    set_aside = {id(variable) for variable in normalization.weights}
    target_variables = [variable for variable in target.weights if id(variable) not in set_aside]
    if len(source.weights) != len(target_variables):
        raise RuntimeError(
            f"efficientnet package model has {len(source.weights)} weight tensors, "
            f"keras.applications {len(target_variables)}: cannot map them"
        )
    for source_variable, target_variable in zip(source.weights, target_variables, strict=True):
        if tuple(source_variable.shape) != tuple(target_variable.shape):
            raise RuntimeError(
                f"shape mismatch: {source_variable.path} {tuple(source_variable.shape)} vs "
                f"{target_variable.path} {tuple(target_variable.shape)}"
            )
        target_variable.assign(source_variable.numpy())
    # The package model takes its preprocess_input's output: torch-style (x / 255 - mean) / std.
    # keras.applications applies x / 255 and then this Normalization, so give it mean and std**2.
    _set_normalization(normalization, IMAGENET_MEAN, IMAGENET_VARIANCE)

    image = np.random.default_rng(seed).integers(0, 256, (1, *input_shape), dtype=np.uint8)
    package_input = efficientnet_package.preprocess_input(image.astype("float32"))
    reference = source.predict(package_input, verbose=0)

    # Check the saved file itself, loaded the way build_model loads it.
    # Written under another name first, so an interrupted run leaves no file the cache trusts.
    partial = paths.weights.with_name("partial_" + paths.weights.name)
    target.save_weights(partial)
    reloaded = spec.builder(input_shape=input_shape, weights=str(partial))
    features = reloaded.predict(image.astype("float32"), verbose=0).mean(axis=(1, 2))
    difference = float(np.abs(features - reference).max())
    scale = float(np.abs(reference).max())
    if not features_match(features, reference):
        raise RuntimeError(
            f"converted {backbone} gives different features from the package model: "
            f"max difference {difference:.3g} at feature scale {scale:.3g}"
        )
    np.savez(paths.probe, image=image, features=reference)
    os.replace(partial, paths.weights)
    print(
        f"{backbone}: {len(target_variables)} tensors converted to {paths.weights}; "
        f"max feature difference {difference:.3g} at scale {scale:.3g}"
    )


class Summary:
    """`model.summary()` as the notebook shows it: collapsed under one line (layers, parameters)
    in Jupyter, nbconvert's HTML and Kaggle, expanded on a click; the full table as text."""

    def __init__(self, model):
        lines = []
        model.summary(print_fn=lambda text, **_: lines.append(text))
        self.text = "\n".join(lines)
        self.headline = (f"{model.name}: {len(model.layers)} layers, {model.count_params():,} "
                         "parameters (click for the summary)")

    def _repr_html_(self):
        import html

        return (f"<details><summary>{html.escape(self.headline)}</summary>"
                f"<pre>{html.escape(self.text)}</pre></details>")

    def __repr__(self):
        return self.text


def main(argv=None):
    """Command line for the conversion subprocess (see `convert_noisy_student`)."""
    parser = argparse.ArgumentParser(description=convert_noisy_student.__doc__.splitlines()[0])
    convertible = [name for name, spec in BACKBONES.items() if spec.efficientnet_variant]
    parser.add_argument("backbone", choices=convertible)
    parser.add_argument("destination")
    parser.add_argument(
        "--source-weights", choices=("noisy-student", "random"), default="noisy-student"
    )
    parser.add_argument("--probe-size", type=int, default=64)
    arguments = parser.parse_args(argv)
    source_weights = None if arguments.source_weights == "random" else arguments.source_weights
    _convert_here(arguments.backbone, arguments.destination, source_weights, arguments.probe_size)


if __name__ == "__main__":
    main()
