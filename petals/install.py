"""What the kit may install at run time, inside a Kaggle notebook: `efficientnet`, for
noisy-student weights (and, through `pip_install`, the tested Keras: petals.accelerator).

Kaggle's TPU image has TensorFlow but not the `efficientnet` package whose Noisy Student weights
the top 2020 entries used. Checking (`check_noisy_student_packages`) installs nothing, so the
parameter checks stay free of side effects; installing (`ensure_noisy_student_packages`) happens
only inside a Kaggle notebook, when the weights are about to be converted.
"""

import importlib.util
import os
import subprocess
import sys

# The efficientnet package release whose noisy-student weights the 2020 entries used.
EFFICIENTNET_REQUIREMENT = "efficientnet==1.1.1"


def on_kaggle():
    """Whether this process runs inside a Kaggle notebook (Kaggle sets this variable)."""
    return "KAGGLE_KERNEL_RUN_TYPE" in os.environ


def pip_install(requirement):
    """pip-install `requirement` into the running environment; None when it worked, else pip's
    last line of output (what went wrong, e.g. no Internet)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", requirement],
        capture_output=True,
        text=True,
        check=False,
    )
    importlib.invalidate_caches()
    if result.returncode == 0:
        return None
    output = (result.stderr or result.stdout).strip().splitlines()
    return output[-1] if output else "no output"


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
