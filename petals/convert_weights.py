"""Noisy Student weights for keras.applications' EfficientNets, converted from `efficientnet`.

The top 2020 entries trained EfficientNets from the Noisy Student weights of the `efficientnet`
package, which builds only on Keras's TensorFlow backend, while the kit may train on JAX. So
`convert_noisy_student` runs this module's command line in a subprocess with
KERAS_BACKEND=tensorflow: it builds the package model, copies its weights into the matching
keras.applications EfficientNet, checks that both give the same features for a probe image,
and saves a ``.weights.h5`` file in a cache folder, which `backbones.build_model` then loads on
any backend. The conversion runs inside Kaggle notebooks too, so this module ships in kernels.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from petals import install
from petals.normalization import (
    IMAGENET_MEAN,
    IMAGENET_VARIANCE,
    normalization_layer,
    set_normalization,
)
from petals.parameters import NOISY_STUDENT_BACKBONES

# Relative tolerance (to the largest feature) within which two models count as giving the same
# features: float32 rounding through ~80 layers stays around 1e-6, a wrong weight mapping or
# input normalisation is off by far more.
FEATURE_TOLERANCE = 1e-4


def default_cache_dir():
    """Where converted weights are kept: $KERAS_HOME/petals, else ~/.keras/petals."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "petals"


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

    Runs `python -m petals.convert_weights` under KERAS_BACKEND=tensorflow (the only backend the
    package builds on), whatever backend this process uses. Files already in `destination` are
    reused. `source_weights=None` converts seeded random weights instead: an offline check.
    """
    if backbone not in NOISY_STUDENT_BACKBONES:
        raise ValueError(
            f"noisy-student weights exist only for efficientnet_b0 ... b7, not {backbone!r}"
        )
    if source_weights not in ("noisy-student", None):
        raise ValueError(f"source_weights must be 'noisy-student' or None, not {source_weights!r}")
    paths = converted_paths(backbone, destination, source_weights)
    # The weights file is written last, so its presence means a finished conversion.
    if paths.weights.exists() and paths.probe.exists():
        return paths
    install.ensure_noisy_student_packages()

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
        sys.executable,
        "-m",
        "petals.convert_weights",
        backbone,
        str(paths.weights.parent),
        "--source-weights",
        source_weights or "random",
        "--probe-size",
        str(probe_size),
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

    # keras.applications' EfficientNetB0 … B7, the models the package's variants match.
    variant = backbone.removeprefix("efficientnet_").upper()
    application = getattr(keras.applications, f"EfficientNet{variant}")
    paths = converted_paths(backbone, destination, source_weights)
    paths.weights.parent.mkdir(parents=True, exist_ok=True)
    input_shape = (probe_size, probe_size, 3)
    keras.utils.set_random_seed(seed)
    source = getattr(efficientnet_package, f"EfficientNet{variant}")(
        weights=source_weights, include_top=False, input_shape=input_shape, pooling="avg"
    )
    if source_weights is None:
        _randomize_statistics(source, seed)
    target = application(include_top=False, input_shape=input_shape, weights=None)

    # The two models hold the same tensors in the same order once keras.applications' input
    # Normalization (mean, variance, count) is set aside; check that rather than trust it.
    normalization = normalization_layer(target)
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
    set_normalization(normalization, IMAGENET_MEAN, IMAGENET_VARIANCE)

    image = np.random.default_rng(seed).integers(0, 256, (1, *input_shape), dtype=np.uint8)
    package_input = efficientnet_package.preprocess_input(image.astype("float32"))
    reference = source.predict(package_input, verbose=0)

    # Check the saved file itself, loaded the way build_model loads it.
    # Written under another name first, so an interrupted run leaves no file the cache trusts.
    partial = paths.weights.with_name("partial_" + paths.weights.name)
    target.save_weights(partial)
    reloaded = application(include_top=False, input_shape=input_shape, weights=str(partial))
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


def main(argv=None):
    """Command line for the conversion subprocess (see `convert_noisy_student`)."""
    parser = argparse.ArgumentParser(description=convert_noisy_student.__doc__.splitlines()[0])
    parser.add_argument("backbone", choices=NOISY_STUDENT_BACKBONES)
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
