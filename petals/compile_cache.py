"""JAX's persistent compile cache, carried from one run to the next and counted.

Compiling a large backbone's train step takes minutes on an accelerator; JAX can load the
compiled program from a folder instead (`COMPILE_CACHE_DIR`). A program is valid only on the
image that compiled it (petals.image), so the folder has the image's record in a file beside it
(`<folder>-image.json`), and a cache to start from (`COMPILE_CACHE_FROM`: a folder, or the
account's own cache dataset attached to a Kaggle kernel) is copied in only when its fingerprint
is this run's. A compile cache is code the process runs: load only caches you produced.

How many programs came from the cache is counted from what JAX reports (jax.monitoring events),
not guessed: each compile that consults the cache, each one it answered, each program written.
"""

import json
import os
import shutil
import tempfile

from petals import hosts
from petals.files import write_atomically

# jax.monitoring events (jax/_src/compiler.py and compilation_cache.py, JAX 0.4 to 0.10): a
# compile that consults the cache, one the cache answered, and a program written to it (JAX
# names that event "cache_misses"); the compile seconds a hit saved.
REQUEST_EVENT = "/jax/compilation_cache/compile_requests_use_cache"
HIT_EVENT = "/jax/compilation_cache/cache_hits"
WRITE_EVENT = "/jax/compilation_cache/cache_misses"
SAVED_EVENT = "/jax/compilation_cache/compile_time_saved_sec"
# The image file beside a cache folder (and, in a cache dataset, among its files).
IMAGE_SUFFIX = "-image.json"
DATASET_IMAGE_FILE = "compile-cache" + IMAGE_SUFFIX
# A JAX cache entry is `<key>-cache` (and `<key>-atime` when eviction is on): the programs.
PROGRAM_SUFFIX = "-cache"
KAGGLE_INPUT = "/kaggle/input"


class Counter:
    """The cache's hits and misses in this process, from the jax.monitoring events."""

    def __init__(self, folder):
        self.folder = str(folder)
        self.requests = self.hits = self.written = 0
        self.seconds_saved = 0.0

    def listen(self):
        """Start counting (the listeners stay for the process's life, as JAX's own do)."""
        import jax.monitoring

        jax.monitoring.register_event_listener(self.event)
        jax.monitoring.register_event_duration_secs_listener(self.duration)
        return self

    def event(self, name, **metadata):
        if name == REQUEST_EVENT:
            self.requests += 1
        elif name == HIT_EVENT:
            self.hits += 1
        elif name == WRITE_EVENT:
            self.written += 1

    def duration(self, name, seconds, **metadata):
        if name == SAVED_EVENT:
            self.seconds_saved += seconds

    def summary(self):
        """What metrics.json records as `compile_cache`: misses are the compiles that consulted
        the cache and were not answered by it."""
        return {
            "folder": self.folder,
            "hits": self.hits,
            "misses": self.requests - self.hits,
            "written": self.written,
            "seconds_saved": round(self.seconds_saved, 1),
        }

    def line(self):
        summary = self.summary()
        return (
            f"compile cache {self.folder}: {summary['hits']} program(s) loaded, "
            f"{summary['misses']} compiled"
        )


def image_file(folder):
    """The image record's file beside a cache folder: `<folder>-image.json`."""
    return os.path.normpath(str(folder)) + IMAGE_SUFFIX


def programs(folder):
    """The names of the compiled programs in a folder (sorted; none when it does not exist)."""
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder) if name.endswith(PROGRAM_SUFFIX))


def read_fingerprint(path):
    """The fingerprint in an image file, or None when the file is missing or unreadable."""
    try:
        with open(path) as handle:
            return json.load(handle).get("fingerprint")
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return None


def find_source(entry, input_root=KAGGLE_INPUT):
    """The folder COMPILE_CACHE_FROM names: a folder, or an attached Kaggle dataset `owner/name`
    (mounted at <input>/datasets/owner/name since 2026, <input>/name before); None if neither."""
    from petals.parameters import DATASET_SLUG, is_local_path

    if os.path.isdir(entry):
        return entry
    if not is_local_path(entry) and DATASET_SLUG.fullmatch(entry):
        owner, name = entry.split("/")
        for candidate in (
            os.path.join(input_root, "datasets", owner, name),
            os.path.join(input_root, name),
        ):
            if os.path.isdir(candidate):
                return candidate
    return None


def copy_in(source, folder, image):
    """Copy the programs of the cache `source` (a dataset holding them and its image file, or
    another run's cache folder, its image file beside it) into `folder`, when its fingerprint
    is `image`'s; returns how many were copied. Otherwise one line says why the cache is not
    used, and nothing is copied."""
    found = find_source(source)
    if found is None:
        print(f"compile cache {source} not found (attach it to the kernel): compiling afresh")
        return 0
    # A dataset holds its image file among the programs; a cache folder has it beside it.
    theirs = read_fingerprint(os.path.join(found, DATASET_IMAGE_FILE)) or read_fingerprint(
        image_file(found)
    )
    if theirs != image["fingerprint"]:
        print(
            f"compile cache {source} not used: it was made on image {theirs or 'unknown'}, "
            f"this run's image is {image['fingerprint']} (its programs would not load)"
        )
        return 0
    os.makedirs(folder, exist_ok=True)
    copied = 0
    for name in programs(found):
        destination = os.path.join(folder, name)
        if not os.path.exists(destination):
            copy_file(os.path.join(found, name), destination)
            copied += 1
    print(f"compile cache {source}: {copied} program(s) of image {theirs} copied to {folder}")
    return copied


def copy_file(source, destination):
    """Copy a file beside its destination, then rename it into place: a killed copy leaves no
    partial program that JAX would try to load."""
    descriptor, temporary = tempfile.mkstemp(prefix=".partial-", dir=os.path.dirname(destination))
    os.close(descriptor)
    try:
        shutil.copyfile(source, temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def check_joined():
    """RuntimeError unless the run's processes have joined (or there is one process): JAX
    decides when they join whether this process writes the cache (only process 0 does)."""
    import jax

    several = hosts.launched_process() not in (None, hosts.SINGLE) or (
        hosts.launched_process() is None and hosts.cloud_tpu_hosts() > 1
    )
    if several and not jax.distributed.is_initialized():
        raise RuntimeError(
            "enable the compile cache after the processes have joined: call "
            "accelerator.detect() before compile_cache.start()"
        )


def start(folder, image, source=None):
    """Use `folder` as JAX's compile cache for this run (None: no cache); returns its Counter.

    Call it after accelerator.detect (the processes have joined) and before the first compile.
    `source` (COMPILE_CACHE_FROM) is copied in first when it is of this image (`copy_in`);
    the image's record is written beside the folder (process 0).
    """
    if folder is None:
        if source is not None:
            raise ValueError(
                f"COMPILE_CACHE_FROM {source!r} needs COMPILE_CACHE_DIR: the writable folder "
                "its programs are copied to"
            )
        return None
    from petals import accelerator

    check_joined()
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    if source is not None:
        copy_in(source, folder, image)
    path = image_file(folder)
    earlier = read_fingerprint(path)
    if earlier is not None and earlier != image["fingerprint"]:
        print(
            f"compile cache {folder} holds programs of image {earlier}; this run's image is "
            f"{image['fingerprint']}, so they will not load (JAX keys them by version)"
        )
    write_atomically(path, lambda handle: json.dump(image, handle, indent=2), overwrite=True)
    accelerator.enable_compilation_cache(folder)
    return Counter(folder).listen()
