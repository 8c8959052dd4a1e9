"""Compile caches carried between Kaggle runs (kit/cache_dataset.py): `build.py run` uploads the
programs its kernels compiled as the owner's private dataset, one per image, and the next run's
kernels attach it; against the fake Kaggle driven by the real client."""

import json

import nbformat
import pytest

from kit import cache_dataset
from tests.test_build_run import (  # noqa: F401 (fixtures)
    OWNER,
    REPOSITORY,
    built,
    kit,
    metrics_text,
    submission_text,
)

FINGERPRINT = "3f2a9c1b0d4e"
CACHE_REF = f"{OWNER}/petals-compile-cache-{FINGERPRINT}"


def outputs(programs, fingerprint=FINGERPRINT, hits=0, compile_seconds=100.0):
    """A kernel's outputs: results, its compiled programs and its image file beside them."""
    metrics = json.loads(metrics_text())
    metrics["image"] = {"jax": "0.7.2", "fingerprint": fingerprint}
    metrics["compile_cache"] = {"folder": "compile-cache", "hits": hits, "misses": 0}
    metrics["stage_seconds"]["compile"] = compile_seconds
    return {
        "submission.csv": submission_text(),
        "metrics.json": json.dumps(metrics),
        **{f"compile-cache/{name}": f"program {name}" for name in programs},
        "compile-cache-image.json": json.dumps({"fingerprint": fingerprint}),
    }


def injected_cache(kernel_dir):
    """The COMPILE_CACHE_FROM line of a built kernel's injected parameters."""
    notebook = nbformat.read(next(kernel_dir.glob("*.ipynb")), as_version=4)
    (cell,) = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    return [line for line in cell.source.splitlines() if line.startswith("COMPILE_CACHE_FROM")]


@pytest.mark.slow
def test_a_second_run_attaches_the_cache_the_first_uploaded(kit, fake_kaggle):  # noqa: F811
    """Against the fake Kaggle: the first `run` uploads the compiled programs as a private
    dataset; the second attaches it to every kernel, uploads nothing new, and reports the
    compile time saved."""
    fake_kaggle.set_output(None, outputs(["aaa-cache", "bbb-cache"]), log=["DONE\n"])
    selection = built(kit, REPOSITORY / "sweeps" / "competition.toml")
    kernels = len(list((kit.folder / "kernels").iterdir()))  # one per variant of the sweep
    first = kit("run", *selection, "--poll", "0.2", "--max-concurrent", str(kernels))
    assert first.returncode == 0, first.stdout + first.stderr
    # No cache was known before the first run: none attached.
    assert not [
        source
        for push in fake_kaggle.accepted()
        for source in push.body.get("datasetDataSources", [])
        if cache_dataset.SLUG_PREFIX in source
    ]
    assert f"compile cache {CACHE_REF}: created (private) with 2 program(s)" in first.stdout
    dataset = fake_kaggle.datasets[CACHE_REF]
    assert dataset.private and len(dataset.versions) == 1
    assert sorted(fake_kaggle.dataset_files(CACHE_REF)) == [
        "aaa-cache",
        "bbb-cache",
        "compile-cache-image.json",
    ]
    # The second run: every kernel attaches that dataset and starts its cache from it.
    fake_kaggle.set_output(
        None, outputs(["aaa-cache", "bbb-cache"], hits=2, compile_seconds=20.0), log=["DONE\n"]
    )
    second = kit("run", *selection, "--rerun", "--poll", "0.2", "--max-concurrent", str(kernels))
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"compile cache {CACHE_REF} attached to {kernels} kernel(s)" in second.stdout
    pushed = fake_kaggle.accepted()[kernels:]
    assert len(pushed) == kernels
    for push in pushed:
        assert push.body["datasetDataSources"][-1] == CACHE_REF
        assert fake_kaggle.attached(push.ref)[CACHE_REF] == 1
    for folder in (kit.folder / "kernels").iterdir():
        assert injected_cache(folder) == [f"COMPILE_CACHE_FROM = {CACHE_REF!r}"]
    # Nothing new was compiled: no new version.
    assert "no new programs (2 here), not uploaded again" in second.stdout
    # Each kernel compiled in 20 s what took 100 s without the cache.
    assert (
        f"compile cache: {kernels} run(s) loaded compiled programs; saved about "
        f"{round(kernels * 80 / 60)} TPU minute(s) (compile {kernels * 20} s against "
        f"{kernels * 100} s without the cache)"
    ) in second.stdout
    assert len(fake_kaggle.datasets[CACHE_REF].versions) == 1


@pytest.mark.slow
def test_new_programs_make_a_new_version(kit, fake_kaggle):  # noqa: F811
    """A run that compiled a program the cache lacks uploads a new dataset version, which the
    next `push` attaches."""
    fake_kaggle.set_output(None, outputs(["aaa-cache"]), log=["DONE\n"])
    selection = built(kit, REPOSITORY / "sweeps" / "competition.toml")
    only = ["--only", "petals-flowers-512-densenet201"]
    assert kit("run", *selection, *only, "--poll", "0.2").returncode == 0
    fake_kaggle.set_output(None, outputs(["aaa-cache", "ccc-cache"]), log=["DONE\n"])
    second = kit("run", *selection, *only, "--rerun", "--poll", "0.2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"compile cache {CACHE_REF}: new version with 2 program(s), 1 new" in second.stdout
    assert len(fake_kaggle.datasets[CACHE_REF].versions) == 2
    assert "ccc-cache" in fake_kaggle.dataset_files(CACHE_REF)
    # `push` attaches it too, at its newest version.
    pushed = kit("push", *selection, *only)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert fake_kaggle.attached(f"{OWNER}/petals-flowers-512-densenet201")[CACHE_REF] == 2


def test_another_owners_dataset_is_never_attached():
    """Named as a cache, a dataset outside the kernel owner's account is refused before Kaggle
    is even asked."""
    with pytest.raises(cache_dataset.KaggleError, match="not someone's own"):
        cache_dataset.check_owned(None, "mallory/petals-compile-cache-abc", "someone")


def test_attach_names_the_dataset_in_the_metadata_and_the_notebook(tmp_path):
    from kit import kernels, sweeps

    (variant,) = sweeps.load(REPOSITORY / "sweeps" / "cpu-smoke.toml").variants[:1]
    folder = kernels.write_kernel(
        variant, tmp_path / variant.slug, OWNER, "tpu", dataset_sources=["someone/extra-data"]
    )
    cache_dataset.attach(folder, CACHE_REF)
    document = json.loads((folder / kernels.METADATA_FILE).read_text())
    assert document["dataset_sources"] == ["someone/extra-data", CACHE_REF]
    kernels.validate_metadata(document, folder)
    assert injected_cache(folder) == [f"COMPILE_CACHE_FROM = {CACHE_REF!r}"]
    # Another image's cache replaces it; None removes it.
    cache_dataset.attach(folder, f"{OWNER}/petals-compile-cache-000000000000")
    document = json.loads((folder / kernels.METADATA_FILE).read_text())
    assert document["dataset_sources"] == [
        "someone/extra-data",
        f"{OWNER}/petals-compile-cache-000000000000",
    ]
    cache_dataset.attach(folder, None)
    assert json.loads((folder / kernels.METADATA_FILE).read_text())["dataset_sources"] == [
        "someone/extra-data"
    ]
    assert injected_cache(folder) == ["COMPILE_CACHE_FROM = None"]


def write_run(folder, compile_seconds, hits=None):
    folder.mkdir(parents=True)
    metrics = {
        "parameters": {"BACKBONES": ["densenet201"], "IMAGE_SIZE": 512},
        "accelerator": {"kind": "tpu"},
        "stage_seconds": {"compile": compile_seconds},
    }
    if hits is not None:
        metrics["compile_cache"] = {"hits": hits, "misses": 0}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_the_minutes_saved_come_from_the_runs_own_compile_seconds(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "petals-a" / "v1", 600.0, hits=0)  # compiled everything
    warm = write_run(runs / "petals-a" / "v2", 60.0, hits=12)
    other = write_run(runs / "petals-b" / "v1", 30.0, hits=3)
    other_metrics = json.loads((other / "metrics.json").read_text())
    other_metrics["parameters"]["IMAGE_SIZE"] = 192  # nothing at 192 px compiled afresh
    (other / "metrics.json").write_text(json.dumps(other_metrics))
    assert cache_dataset.saved_line(runs, [warm, other], "tpu") == (
        "compile cache: 2 run(s) loaded compiled programs; saved about 9 TPU minute(s) "
        "(compile 60 s against 600 s without the cache); 1 without a run that compiled "
        "afresh to compare with"
    )
    cold = runs / "petals-a" / "v1"
    assert cache_dataset.saved_line(runs, [cold], "tpu") is None


def test_a_kernel_without_a_cache_to_attach_is_left_as_built(tmp_path):
    from kit import kernels, sweeps

    (variant,) = sweeps.load(REPOSITORY / "sweeps" / "cpu-smoke.toml").variants[:1]
    folder = kernels.write_kernel(variant, tmp_path / variant.slug, OWNER, "tpu")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    cache_dataset.attach(folder, None)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
