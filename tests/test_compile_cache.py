"""The compile cache: counted from JAX's own events, copied in only from the same image,
enabled only after the processes have joined."""

import json
import os

import pytest

from petals import compile_cache, hosts, image

IMAGE = image.fingerprinted(image.record("cpu", 1, 1, image_files={}))


@pytest.fixture
def jax_cache():
    """JAX's compile cache configuration restored after the test (it is process-wide)."""
    import jax
    from jax._src import compilation_cache

    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    before = {name: getattr(jax.config, name) for name in names}
    compilation_cache.reset_cache()
    yield compilation_cache
    for name, value in before.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()
    jax.clear_caches()


def test_hits_and_misses_are_what_jax_reports(tmp_path, jax_cache):
    import jax
    import jax.numpy as jnp

    folder = tmp_path / "compile-cache"
    counter = compile_cache.start(folder, IMAGE)

    def step(values):
        return jnp.tanh(values * 3.0 + 1.0).sum()

    jax.jit(step)(jnp.arange(7.0)).block_until_ready()
    first = counter.summary()
    assert first["hits"] == 0 and first["misses"] >= 1 and first["written"] >= 1
    assert compile_cache.programs(folder)
    # A new process in effect: JAX's in-memory caches dropped, the folder kept.
    jax.clear_caches()
    jax.jit(step)(jnp.arange(7.0)).block_until_ready()
    second = counter.summary()
    assert second["hits"] >= 1 and second["misses"] == first["misses"]
    assert second["folder"] == str(folder)
    # The image's record lies beside the folder.
    written = json.loads(open(compile_cache.image_file(folder)).read())
    assert written["fingerprint"] == IMAGE["fingerprint"]


def test_no_folder_no_cache():
    assert compile_cache.start(None, IMAGE) is None
    with pytest.raises(
        ValueError, match="COMPILE_CACHE_FROM 'someone/cache' needs COMPILE_CACHE_DIR"
    ):
        compile_cache.start(None, IMAGE, "someone/cache")


def cache_dataset(folder, fingerprint, names=("aaa-cache", "bbb-cache")):
    """A cache as a dataset holds it: programs and the image file among them."""
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"program " + name.encode())
    (folder / compile_cache.DATASET_IMAGE_FILE).write_text(json.dumps({"fingerprint": fingerprint}))
    return folder


def test_a_cache_of_this_image_is_copied_in(tmp_path, capsys):
    source = cache_dataset(tmp_path / "dataset", IMAGE["fingerprint"])
    folder = tmp_path / "compile-cache"
    assert compile_cache.copy_in(str(source), str(folder), IMAGE) == 2
    assert compile_cache.programs(folder) == ["aaa-cache", "bbb-cache"]
    assert "2 program(s)" in capsys.readouterr().out


def test_a_cache_of_another_image_is_refused_in_one_line(tmp_path, capsys):
    source = cache_dataset(tmp_path / "dataset", "0123456789ab")
    folder = tmp_path / "compile-cache"
    assert compile_cache.copy_in(str(source), str(folder), IMAGE) == 0
    assert compile_cache.programs(folder) == []
    printed = capsys.readouterr().out.strip()
    assert printed.count("\n") == 0
    assert "not used" in printed and "0123456789ab" in printed and IMAGE["fingerprint"] in printed


def test_an_attached_dataset_is_found_under_kaggle_input(tmp_path):
    mounted = cache_dataset(tmp_path / "datasets" / "alice" / "petals-compile-cache-x", "f")
    found = compile_cache.find_source("alice/petals-compile-cache-x", input_root=str(tmp_path))
    assert found == str(mounted)
    assert compile_cache.find_source("alice/absent", input_root=str(tmp_path)) is None


def test_the_cache_waits_for_the_processes_to_join(monkeypatch, tmp_path):
    monkeypatch.setenv(hosts.ADDRESS_VARIABLE, "127.0.0.1:1")
    monkeypatch.setenv(hosts.COUNT_VARIABLE, "2")
    monkeypatch.setenv(hosts.INDEX_VARIABLE, "0")
    with pytest.raises(RuntimeError, match="after the processes have joined"):
        compile_cache.start(tmp_path / "compile-cache", IMAGE)
    assert not os.path.exists(tmp_path / "compile-cache")


def test_another_runs_cache_folder_is_a_source_too(tmp_path):
    """A cache folder as a run leaves it: its image file beside it, not among its programs."""
    earlier = tmp_path / "earlier" / "compile-cache"
    earlier.mkdir(parents=True)
    (earlier / "aaa-cache").write_bytes(b"program")
    with open(compile_cache.image_file(earlier), "w") as handle:
        json.dump(IMAGE, handle)
    folder = tmp_path / "compile-cache"
    assert compile_cache.copy_in(str(earlier), str(folder), IMAGE) == 1
