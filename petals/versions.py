"""The versions of the packages a run depends on, read from their installed metadata, so before
any of them is imported."""

import importlib.metadata
import re
import sys

# The packages whose versions a run records: the first installed distribution of each counts.
PACKAGES = {
    "jax": ("jax",),
    "jaxlib": ("jaxlib",),
    "libtpu": ("libtpu", "libtpu-nightly"),
    "keras": ("keras",),
    "keras_hub": ("keras-hub", "keras-hub-nightly"),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-tpu", "tf-nightly"),
}


def installed_version(distributions):
    """The version of the first installed distribution among `distributions`, else None."""
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def version_tuple(version):
    """(3, 15, 1) from "3.15.1" or "3.16.0.dev2026..."; the leading numbers only."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def installed():
    """The versions a run depends on, for metrics.json and the notebook's first output.

    Each of PACKAGES (None where not installed), libtpu only where installed, Python, and the
    device kind of the active backend.
    """
    from petals import accelerator

    found = {name: installed_version(distributions) for name, distributions in PACKAGES.items()}
    if found["libtpu"] is None:
        del found["libtpu"]
    return {**found, "python": sys.version.split()[0], "device_kind": accelerator.device_kind()}
