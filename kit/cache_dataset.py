"""Compile caches carried from one Kaggle run to the next, as private datasets of the user's own.

A kernel on JAX writes its compiled programs to `/kaggle/working/compile-cache/`, with its image's
record beside it (`compile-cache-image.json`, petals.compile_cache), so they come back with its
outputs. After a version is collected, its programs join the local copy of that image's cache,
`<runs>/compile-caches/<fingerprint>/` (`gather`), and `upload` makes it a private dataset,
`<owner>/petals-compile-cache-<fingerprint>`: one dataset per image, a new version only when new
programs appeared. Before a sweep's kernels are pushed, `attach` names the cache of the image
their accelerator last ran on in each kernel's `dataset_sources` and sets its COMPILE_CACHE_FROM,
and the notebook copies it in before the first compile (when its fingerprint is the running
image's). A compile cache is code the kernel runs: only datasets of the kernel's owner, that
Kaggle says the owner owns, are ever attached.
"""

import json
import re
from pathlib import Path

from kit import results
from kit.kaggle_client import KaggleError, call, http_status
from petals import compile_cache
from petals.files import write_atomically

CACHES_FOLDER = "compile-caches"
UPLOADS_FILE = "uploads.json"
SLUG_PREFIX = "petals-compile-cache-"
# The outputs a kernel leaves: the cache folder and the image file beside it.
OUTPUT_FOLDER = "compile-cache"
LICENSE = "CC0-1.0"
METADATA_FILE = "dataset-metadata.json"
PARAMETER = "COMPILE_CACHE_FROM"
INJECTED_TAG = "injected-parameters"


def dataset_ref(owner, fingerprint):
    return f"{owner}/{SLUG_PREFIX}{fingerprint}"


def caches_dir(runs_dir):
    return Path(runs_dir) / CACHES_FOLDER


def mirror(runs_dir, fingerprint):
    """The local copy of one image's cache: its programs and its image file, as uploaded."""
    return caches_dir(runs_dir) / fingerprint


def read_uploads(runs_dir):
    """{fingerprint: {"dataset", "version", "accelerator", "programs"}} of the caches uploaded."""
    path = caches_dir(runs_dir) / UPLOADS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def write_uploads(runs_dir, uploads):
    path = caches_dir(runs_dir) / UPLOADS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda handle: json.dump(uploads, handle, indent=2), overwrite=True)


def gather(version_folder, runs_dir):
    """Add a collected version's programs to its image's local cache; returns (fingerprint,
    programs added), or (None, 0) when the version left no cache (not JAX, or older kit)."""
    version_folder = Path(version_folder)
    image_path = Path(compile_cache.image_file(version_folder / OUTPUT_FOLDER))
    fingerprint = compile_cache.read_fingerprint(image_path)
    if fingerprint is None:
        return None, 0
    destination = mirror(runs_dir, fingerprint)
    destination.mkdir(parents=True, exist_ok=True)
    added = 0
    for name in compile_cache.programs(version_folder / OUTPUT_FOLDER):
        if not (destination / name).exists():
            compile_cache.copy_file(version_folder / OUTPUT_FOLDER / name, destination / name)
            added += 1
    target = destination / compile_cache.DATASET_IMAGE_FILE
    if not target.exists():
        compile_cache.copy_file(image_path, target)
    return fingerprint, added


def remote_files(api, ref):
    """The file names of the dataset's current version, or None when it does not exist (or
    this account cannot see it)."""
    import requests

    owner, slug = ref.split("/")

    def listing():
        names, token = [], None
        while True:
            try:
                answer = api.dataset_list_files(ref, page_token=token, page_size=100)
            except requests.exceptions.HTTPError as error:
                if http_status(error) in (403, 404):
                    return None
                raise
            names += [item.name for item in answer.dataset_files or []]
            token = answer.next_page_token
            if not token:
                return names

    return call(listing, f"list the files of the dataset {owner}/{slug}")


def upload(api, owner, runs_dir, fingerprint, accelerator):
    """Make the image's local cache the private dataset `dataset_ref(owner, fingerprint)`:
    created when missing, a new version when it lacks programs found here, else left as it is.
    Returns the line to print."""
    ref = dataset_ref(owner, fingerprint)
    folder = mirror(runs_dir, fingerprint)
    local = compile_cache.programs(folder)
    remote = remote_files(api, ref)
    uploads = read_uploads(runs_dir)
    new = sorted(set(local) - set(remote or []))
    if remote is not None and not new:
        line = f"compile cache {ref}: no new programs ({len(local)} here), not uploaded again"
    else:
        document = {
            "id": ref,
            "title": f"Petals compile cache {fingerprint}",
            "licenses": [{"name": LICENSE}],
            "description": "Compiled XLA programs of the Petals notebook for one image "
            f"(fingerprint {fingerprint}); private: a compile cache is code a kernel runs.",
        }
        (folder / METADATA_FILE).write_text(json.dumps(document, indent=2))
        if remote is None:
            answer = call(
                lambda: api.dataset_create_new(str(folder), public=False, quiet=True),
                f"create the dataset {ref}",
                repeatable=False,
            )
        else:
            answer = call(
                lambda: api.dataset_create_version(
                    str(folder), f"{len(new)} new program(s)", quiet=True
                ),
                f"add a version to the dataset {ref}",
                repeatable=False,
            )
        if getattr(answer, "error", None):
            raise KaggleError(f"uploading the compile cache {ref}: {answer.error}")
        line = (
            f"compile cache {ref}: "
            + ("created (private)" if remote is None else "new version")
            + f" with {len(local)} program(s), {len(new)} new"
        )
    uploads[fingerprint] = {"dataset": ref, "accelerator": accelerator, "programs": len(local)}
    write_uploads(runs_dir, uploads)
    return line


def upload_collected(api, owner, runs_dir, version_folders):
    """`gather` each collected version's cache, then `upload` each image's once; returns the
    lines to print (none when no version left a cache)."""
    touched = {}
    for folder in version_folders:
        fingerprint, _ = gather(folder, runs_dir)
        if fingerprint is not None:
            touched[fingerprint] = accelerator_of(folder)
    return [
        upload(api, owner, runs_dir, fingerprint, accelerator)
        for fingerprint, accelerator in touched.items()
    ]


def accelerator_of(version_folder):
    """The accelerator kind a collected version ran on (metrics.json), or None."""
    path = Path(version_folder) / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    return (metrics.get("accelerator") or {}).get("kind")


def expected_fingerprint(runs_dir, accelerator):
    """The image the next kernel on `accelerator` is expected to meet: the newest collected
    run's on that accelerator whose cache was uploaded; None when there is none."""
    uploads = read_uploads(runs_dir)
    newest = None
    for folder, _ in results.run_folders(runs_dir):
        path = folder / "metrics.json"
        metrics = json.loads(path.read_text())
        fingerprint = results.image_fingerprint(metrics)
        kind = (metrics.get("accelerator") or {}).get("kind")
        if fingerprint in uploads and kind == accelerator:
            stamp = path.stat().st_mtime
            if newest is None or stamp > newest[0]:
                newest = (stamp, fingerprint)
    return None if newest is None else newest[1]


def check_owned(api, ref, owner):
    """KaggleError unless Kaggle says the dataset `ref` is `owner`'s own: a compile cache is
    code the kernel runs, so no one else's may be attached."""
    from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetRequest

    if not ref.startswith(owner + "/"):
        raise KaggleError(f"compile cache {ref} is not {owner}'s own dataset; not attached")

    def look_up():
        request = ApiGetDatasetRequest()
        request.owner_slug, request.dataset_slug = ref.split("/")
        with api.build_kaggle_client() as client:
            return client.datasets.dataset_api_client.get_dataset(request)

    dataset = call(look_up, f"look up the dataset {ref}")
    if dataset.owner_ref != owner:
        raise KaggleError(
            f"compile cache {ref} belongs to {dataset.owner_ref}, not {owner}; not attached"
        )


def attach(kernel_dir, ref):
    """Name the cache dataset `ref` (None: none) in a built kernel: its `dataset_sources` (any
    other compile cache replaced) and the notebook's COMPILE_CACHE_FROM, in its injected
    parameters. A file is rewritten (atomically) only when that changes it."""
    kernel_dir = Path(kernel_dir)
    metadata_path = kernel_dir / "kernel-metadata.json"
    document = json.loads(metadata_path.read_text())
    sources = [
        source
        for source in document.get("dataset_sources", [])
        if not source.split("/")[-1].startswith(SLUG_PREFIX)
    ]
    if document.get("dataset_sources", []) != sources + ([ref] if ref else []):
        document["dataset_sources"] = sources + ([ref] if ref else [])
        _rewrite(metadata_path, json.dumps(document, indent=2) + "\n")
    notebook_path = kernel_dir / document["code_file"]
    notebook = json.loads(notebook_path.read_text())
    for cell in notebook["cells"]:
        if INJECTED_TAG in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            lines = [
                line for line in source.splitlines() if not re.match(rf"{PARAMETER}\s*=", line)
            ]
            if ref is not None or len(lines) < len(source.splitlines()):
                lines.append(f"{PARAMETER} = {ref!r}")
            changed = lines != source.splitlines()
            cell["source"] = "\n".join(lines) + "\n"
            break
    else:
        raise ValueError(f"{notebook_path} has no {INJECTED_TAG} cell; rebuild the kernels")
    if changed:
        _rewrite(notebook_path, json.dumps(notebook, indent=1))


def _rewrite(path, text):
    write_atomically(path, lambda handle: handle.write(text), overwrite=True)


def attach_expected(api, owner, runs_dir, accelerator, kernel_dirs):
    """`attach` to each kernel the cache of the image `accelerator` is expected to be (None when
    no cache was uploaded for it); returns the line to print, or None."""
    fingerprint = expected_fingerprint(runs_dir, accelerator)
    ref = dataset_ref(owner, fingerprint) if fingerprint else None
    if ref is not None:
        check_owned(api, ref, owner)
    for folder in kernel_dirs:
        attach(folder, ref)
    if ref is None:
        return None
    return f"compile cache {ref} attached to {len(kernel_dirs)} kernel(s)"


def compile_key(metrics):
    """(accelerator, backbones, image size) of a run: runs of one key compile the same."""
    parameters = metrics.get("parameters", {})
    return (
        (metrics.get("accelerator") or {}).get("kind"),
        "+".join(parameters.get("BACKBONES") or []),
        parameters.get("IMAGE_SIZE"),
    )


def loaded_from_cache(metrics):
    """Whether the run loaded compiled programs from a compile cache (JAX reported hits)."""
    return bool((metrics.get("compile_cache") or {}).get("hits"))


def compile_seconds(runs_dir):
    """{key: {"without": s, "with": s}}: the `compile` stage seconds of the newest run of each
    key (compile_key) that compiled everything, and of the newest that loaded from a cache."""
    figures = {}
    runs = sorted(
        (folder / "metrics.json" for folder, _ in results.run_folders(runs_dir)),
        key=lambda path: path.stat().st_mtime,
    )
    for path in runs:
        metrics = json.loads(path.read_text())
        seconds = (metrics.get("stage_seconds") or {}).get("compile")
        if seconds is None:
            continue
        kind = "with" if loaded_from_cache(metrics) else "without"
        figures.setdefault(compile_key(metrics), {})[kind] = seconds
    return figures


def saved_line(runs_dir, version_folders, accelerator):
    """What the cache saved the collected versions, from their own `compile` stage seconds
    against those of a run of the same backbones and size that compiled everything; None when
    no version loaded from a cache."""
    figures = compile_seconds(runs_dir)
    warm, saved, unmatched = [], 0.0, 0
    for folder in version_folders:
        path = Path(folder) / "metrics.json"
        metrics = json.loads(path.read_text()) if path.exists() else {}
        if not loaded_from_cache(metrics):
            continue
        seconds = metrics["stage_seconds"]["compile"]
        without = figures.get(compile_key(metrics), {}).get("without")
        if without is None:
            unmatched += 1
            continue
        warm.append((seconds, without))
        saved += max(0.0, without - seconds)
    if not warm and not unmatched:
        return None
    line = (
        f"compile cache: {len(warm) + unmatched} run(s) loaded compiled programs; "
        f"saved about {saved / 60:.0f} {accelerator.upper()} minute(s)"
    )
    if warm:
        line += (
            f" (compile {sum(seconds for seconds, _ in warm):.0f} s against "
            f"{sum(without for _, without in warm):.0f} s without the cache)"
        )
    if unmatched:
        line += f"; {unmatched} without a run that compiled afresh to compare with"
    return line
