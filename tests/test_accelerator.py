import os
import subprocess
import sys

import pytest

from petals import accelerator, install, out_of_memory, versions
from tests.conftest import assert_names


def test_choose_backend_validates_and_sets_the_environment(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    with pytest.raises(ValueError, match="jax, tensorflow"):
        accelerator.choose_backend("torch")
    assert accelerator.choose_backend(None) == "jax"  # JAX is installed here
    assert os.environ["KERAS_BACKEND"] == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert accelerator.choose_backend(None) == "tensorflow"
    assert accelerator.choose_backend("jax") == "jax"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_detect_on_this_cpu(backend):
    """In a fresh process per backend: this CPU is detected with its policy in scope, and a
    required TPU is refused in one line."""
    # A fresh process per backend: Keras reads KERAS_BACKEND once, at import.
    script = (
        "from petals import accelerator\n"
        "found = accelerator.detect()\n"
        "print(found.kind, found.backend, found.replicas, found.mixed_precision_policy)\n"
        "with found.scope():\n"
        "    import keras\n"
        "    print(keras.mixed_precision.dtype_policy().name)\n"
        "try:\n"
        "    accelerator.detect(require='tpu')\n"
        "except RuntimeError as error:\n"
        "    print('refused:', error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": backend},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"cpu {backend} 1 float32"
    assert lines[1] == "float32"
    assert lines[2].startswith("refused: this run requires a TPU but found CPU")


def test_versions_name_the_installed_packages_and_the_device():
    import importlib.metadata

    found = versions.installed()
    assert found["keras"] == importlib.metadata.version("keras")
    assert found["jax"] == importlib.metadata.version("jax")
    assert found["jaxlib"] == importlib.metadata.version("jaxlib")
    import tensorflow  # tensorflow here, tensorflow-cpu on Kaggle's image: either is found

    assert found["tensorflow"] == tensorflow.__version__
    assert "libtpu" not in found  # not installed on this CPU machine
    assert found["device_kind"] == "cpu"


def test_check_keras_version_refuses_older_keras():
    assert install.check_keras_version() == versions.installed_version(["keras"])
    assert install.check_keras_version(install.MINIMUM_KERAS)
    assert install.check_keras_version("3.16.0.dev2026112901")
    assert install.check_keras_version("4.0.0")
    with pytest.raises(
        ValueError,
        match=r"Keras 3\.12\.1 is older than 3\.13\.2, the oldest "
        r"version this kit is tested with; run: pip install",
    ):
        install.check_keras_version("3.12.1")
    with pytest.raises(ValueError, match="older than"):
        install.check_keras_version("3.13.1")


@pytest.mark.slow
def test_tested_keras_is_installed_only_on_kaggle_and_only_when_needed(monkeypatch, capsys):
    """pip runs only on Kaggle and only under the oldest tested Keras, and says what it
    installed and why."""
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    assert install.ensure_keras("3.10.0") is None  # not on Kaggle: nothing done
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert install.ensure_keras(install.MINIMUM_KERAS) is None
    assert install.ensure_keras("3.15.1") is None
    assert capsys.readouterr().out == ""
    # An older Keras on Kaggle: pip installs the requirement. Pinned here to the Keras this
    # environment has, pip finds it satisfied offline and changes nothing.
    installed = versions.installed_version(["keras"])
    monkeypatch.setattr(install, "KERAS_REQUIREMENT", f"keras=={installed}")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    assert install.ensure_keras("3.10.0") == f"keras=={installed}"
    assert capsys.readouterr().out == (
        f"installed keras=={installed}: this image has Keras "
        "3.10.0, older than the oldest Keras this kit is tested "
        "with\n"
    )


@pytest.mark.slow
def test_installing_keras_without_internet_is_one_line(monkeypatch):
    """With Internet off, the failed install is the one line saying to turn it on (the
    message owned here)."""
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # as a Kaggle notebook with Internet off
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setattr(install, "KERAS_REQUIREMENT", "keras==3.0.0.post999")
    with pytest.raises(
        ValueError,
        match=r"this image has Keras 3\.10\.0, older than 3\.13\.2, and "
        r"`pip install keras==3\.0\.0\.post999` failed .*; turn "
        r"on Internet in the notebook's settings",
    ) as error:
        install.ensure_keras("3.10.0")
    assert "\n" not in str(error.value)


def test_out_of_memory_hint_turns_only_exhaustion_into_one_line():
    import jax

    with pytest.raises(
        out_of_memory.OutOfMemoryError,
        match="ran out of memory while predicting; lower BATCH_SIZE_PER_REPLICA or IMAGE_SIZE",
    ) as error:
        with out_of_memory.hint("predicting"):
            raise jax.errors.JaxRuntimeError(
                "RESOURCE_EXHAUSTED: XLA:TPU compile permanent "
                "error. Ran out of memory in memory space hbm."
            )
    assert isinstance(error.value, ValueError) and "\n" not in str(error.value)
    other = jax.errors.JaxRuntimeError("INTERNAL: something else")
    with pytest.raises(jax.errors.JaxRuntimeError) as passed:
        with out_of_memory.hint("predicting"):
            raise other
    assert passed.value is other


def test_out_of_memory_on_tensorflow_becomes_the_same_line():
    import tensorflow as tf

    with pytest.raises(out_of_memory.OutOfMemoryError) as error:
        with out_of_memory.hint("training big"):
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
    assert "\n" not in str(error.value)
    assert_names(error.value, "training big", "BATCH_SIZE_PER_REPLICA", "IMAGE_SIZE")


def test_an_accelerator_of_several_processes_says_so():
    tpu = accelerator.Accelerator("tpu", "jax", 16, process_index=2, process_count=4)
    assert tpu.describe().startswith("TPU × 16 replica(s) on 4 hosts, Keras backend jax")
    assert tpu.summary() == {"kind": "tpu", "backend": "jax", "replicas": 16, "processes": 4}
    assert (tpu.process_index, tpu.process_count) == (2, 4)
    assert "hosts" not in accelerator.Accelerator("cpu", "jax", 1).describe()
