"""What the kit needs installed, checked, and installed at run time inside a Kaggle notebook:
the tested Keras, `efficientnet` for noisy-student weights, keras-hub for the KerasHub presets.

Kaggle's TPU image has TensorFlow but not the `efficientnet` package whose Noisy Student weights
the top 2020 entries used. Checking (`check_noisy_student_packages`) installs nothing, so the
parameter checks stay free of side effects; installing (`ensure_noisy_student_packages`) happens
only inside a Kaggle notebook, when the weights are about to be converted.
"""

import importlib
import importlib.util
import os
import subprocess
import sys

from petals.versions import installed_version, version_tuple

# The oldest Keras the kit is tested with: `make test-kaggle-image KAGGLE_KERAS=3.13.2` runs the
# notebook's tests, and the built kernel as Kaggle runs it, on it (JAX 0.7.2, tensorflow-cpu
# 2.20), as the plain `make test-kaggle-image` does on the newest Keras. Kaggle's TPU image
# installs an unpinned Keras when it is built, so a kernel may meet an older one: the kernel's
# Setup then installs this one (`ensure_keras`).
MINIMUM_KERAS = "3.13.2"
KERAS_REQUIREMENT = f"keras=={MINIMUM_KERAS}"
# The efficientnet package release whose noisy-student weights the 2020 entries used.
EFFICIENTNET_REQUIREMENT = "efficientnet==1.1.1"
# The keras-hub the kit is tested with (requirements.txt), and the oldest it accepts.
MINIMUM_KERAS_HUB = "0.29.1"
KERAS_HUB_REQUIREMENT = f"keras-hub=={MINIMUM_KERAS_HUB}"
# What `import keras_hub` 0.29.1 imports that keras-hub before 0.28 did not require (module name:
# requirement); installed with keras-hub where the image lacks them.
KERAS_HUB_IMPORTS = {"sentencepiece": "sentencepiece", "tokenizers": "tokenizers"}


def on_kaggle():
    """Whether this process runs inside a Kaggle notebook (Kaggle sets this variable)."""
    return "KAGGLE_KERNEL_RUN_TYPE" in os.environ


def pip_install(requirement, *options):
    """pip-install `requirement` (with pip `options`) into the running environment; None when it
    worked, else pip's last line of output (what went wrong, e.g. no Internet)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", *options, requirement],
        capture_output=True,
        text=True,
        check=False,
    )
    importlib.invalidate_caches()
    if result.returncode == 0:
        return None
    output = (result.stderr or result.stdout).strip().splitlines()
    return output[-1] if output else "no output"


def check_keras_version(version=None):
    """Raise ValueError unless Keras (installed, or `version`) is at least MINIMUM_KERAS.

    Reads the installed distribution's metadata, so it can run before Keras is imported.
    """
    version = version or installed_version(("keras",))
    if version is None:
        raise ValueError(f"Keras is not installed; run: pip install 'keras>={MINIMUM_KERAS}'")
    if version_tuple(version) < version_tuple(MINIMUM_KERAS):
        raise ValueError(
            f"Keras {version} is older than {MINIMUM_KERAS}, the oldest version this "
            f"kit is tested with; run: pip install 'keras>={MINIMUM_KERAS}'"
        )
    return version


def ensure_keras(version=None):
    """On Kaggle, pip-install KERAS_REQUIREMENT when the image's Keras is older than
    MINIMUM_KERAS (or missing); returns the requirement installed, or None when nothing was.

    The built kernel's Setup calls it before anything imports Keras. It acts only inside a
    Kaggle notebook (KAGGLE_KERNEL_RUN_TYPE set); elsewhere `check_keras_version` names the
    command instead. Installing needs the notebook's Internet setting on: without it, one line
    says so (ValueError).
    """
    version = version or installed_version(("keras",))
    if not on_kaggle() or (
        version is not None and version_tuple(version) >= version_tuple(MINIMUM_KERAS)
    ):
        return None
    image = f"Keras {version}" if version else "no Keras"
    failure = pip_install(KERAS_REQUIREMENT)
    if failure is not None:
        raise ValueError(
            f"this image has {image}, older than {MINIMUM_KERAS}, and `pip install "
            f"{KERAS_REQUIREMENT}` failed ({failure})"
            "; turn on Internet in the notebook's settings and run again"
        )
    print(
        f"installed {KERAS_REQUIREMENT}: this image has {image}, older than the oldest Keras "
        "this kit is tested with"
    )
    return KERAS_REQUIREMENT


def missing_noisy_student_packages():
    """The packages the noisy-student conversion needs that this environment lacks."""
    return [
        package
        for package in ("efficientnet", "tensorflow")
        if importlib.util.find_spec(package) is None
    ]


def check_noisy_student_packages():
    """Raise ValueError unless the noisy-student conversion can run here; install nothing.

    It can when both packages are installed, or when only `efficientnet` is missing inside a
    Kaggle notebook, where `ensure_noisy_student_packages` installs it.
    """
    missing = missing_noisy_student_packages()
    if missing and not (missing == ["efficientnet"] and on_kaggle()):
        raise ValueError(
            f"noisy-student weights need the {' and '.join(missing)} package(s); "
            f"run: pip install {EFFICIENTNET_REQUIREMENT} tensorflow"
        )


def ensure_noisy_student_packages():
    """Make the noisy-student conversion runnable; raise ValueError saying what it needs.

    Inside a Kaggle notebook a missing `efficientnet` is pip-installed into the running
    environment, which needs the notebook's Internet setting on.
    """
    check_noisy_student_packages()
    if not missing_noisy_student_packages():
        return
    failure = pip_install(EFFICIENTNET_REQUIREMENT)
    if failure is None and not missing_noisy_student_packages():
        return
    raise ValueError(
        f"noisy-student weights need the efficientnet package, which Kaggle's TPU image "
        f"lacks, and `pip install {EFFICIENTNET_REQUIREMENT}` failed "
        f"({failure or 'it is still missing'}); turn on Internet in the notebook's "
        f"settings, or use WEIGHTS='imagenet'"
    )


def keras_hub_version():
    """The installed keras-hub's version as a tuple of numbers, or None when it is missing."""
    version = installed_version(("keras-hub",))
    return None if version is None else version_tuple(version)


def _keras_hub_too_old(version):
    return version is None or version < version_tuple(MINIMUM_KERAS_HUB)


def check_keras_hub():
    """Raise ValueError unless keras-hub is installed at MINIMUM_KERAS_HUB or newer."""
    version = keras_hub_version()
    if _keras_hub_too_old(version):
        found = "is not installed" if version is None else f"{'.'.join(map(str, version))} is"
        raise ValueError(
            f"the KerasHub backbones need keras-hub >= {MINIMUM_KERAS_HUB}; keras-hub {found} "
            f"here; run: pip install {KERAS_HUB_REQUIREMENT}"
        )


def ensure_keras_hub():
    """In a Kaggle notebook, install KERAS_HUB_REQUIREMENT when the image's keras-hub is missing
    or older; returns the requirement installed, or None when nothing was.

    Without its dependencies (keras-hub's tensorflow-text would bring a second, newer TensorFlow
    beside the image's), but with those it imports that an older keras-hub's image may lack.
    Needs the notebook's Internet setting on.
    """
    if not on_kaggle() or not _keras_hub_too_old(keras_hub_version()):
        return None
    failure = pip_install(KERAS_HUB_REQUIREMENT, "--no-deps")
    for module, requirement in KERAS_HUB_IMPORTS.items():
        if failure is None and importlib.util.find_spec(module) is None:
            failure = pip_install(requirement)
    if failure is not None:
        raise ValueError(
            f"this image's keras-hub is missing or older than {MINIMUM_KERAS_HUB} and `pip "
            f"install {KERAS_HUB_REQUIREMENT}` failed ({failure}); turn on Internet in the "
            "notebook's settings"
        )
    print(f"installed {KERAS_HUB_REQUIREMENT}: the image's keras-hub is missing or older")
    return KERAS_HUB_REQUIREMENT
