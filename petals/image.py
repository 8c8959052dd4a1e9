"""The image a run ran on, on record: where it was built, the versions that matter, the devices.

Kaggle's image writes `/etc/git_commit` and `/etc/build_date`, and resolves its package versions
when it is built, so two runs on "the same" TPU image may differ. A compiled XLA program is valid
only for the same jax, jaxlib and libtpu, the same flags and the same topology: the record below
names all of that, and its short fingerprint names the image (one compile cache per fingerprint,
petals.compile_cache). metrics.json keeps the record under `image`.
"""

import hashlib
import json
import sys

from petals.versions import PACKAGES, installed_version

# Files Kaggle's image writes when it is built; absent elsewhere.
IMAGE_FILES = {"git_commit": "/etc/git_commit", "build_date": "/etc/build_date"}
FINGERPRINT_LENGTH = 12  # hex digits: short enough for a dataset slug, long enough to differ


def _read_first_line(path):
    """The file's first line, stripped, or None when it is not there (not Kaggle's image)."""
    try:
        with open(path) as handle:
            return handle.readline().strip() or None
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None


def record(device_kind, device_count, process_count, image_files=None):
    """The image's record: Kaggle's build files, the Python and package versions (None where
    not installed), and the devices: their kind (e.g. "TPU v5 lite"), count and processes."""
    files = IMAGE_FILES if image_files is None else image_files
    document = {name: _read_first_line(path) for name, path in files.items()}
    document["python"] = sys.version.split()[0]
    document.update({name: installed_version(names) for name, names in PACKAGES.items()})
    document.update(
        {
            "device_kind": device_kind,
            "device_count": int(device_count),
            "process_count": int(process_count),
        }
    )
    return document


def fingerprint(document):
    """A short hex digest of the record (its `fingerprint` key left out): names the image."""
    content = {key: value for key, value in document.items() if key != "fingerprint"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_LENGTH]


def fingerprinted(document):
    """The record with its fingerprint added, as metrics.json keeps it."""
    return {**document, "fingerprint": fingerprint(document)}


def of_device(device):
    """The fingerprinted record of this process's image and `device` (accelerator.Accelerator)."""
    from petals import accelerator

    return fingerprinted(record(accelerator.device_kind(), device.replicas, device.process_count))


def line(document):
    """`image 3f2a9c1b0d4e: jax 0.7.2, jaxlib 0.7.2, keras 3.13.2, TPU v5 lite × 8 (Kaggle
    build 2026-03-01)`: what the notebook prints."""
    versions = ", ".join(
        f"{name} {document[name]}"
        for name in ("jax", "jaxlib", "libtpu", "keras")
        if document.get(name)
    )
    built = f" (Kaggle build {document['build_date']})" if document.get("build_date") else ""
    return (
        f"image {document['fingerprint']}: {versions}, {document['device_kind']} × "
        f"{document['device_count']}{built}"
    )
