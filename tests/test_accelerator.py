import os
import subprocess
import sys

import pytest

from petals import accelerator


def test_choose_backend_validates_and_sets_the_environment(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    with pytest.raises(ValueError, match="jax, tensorflow"):
        accelerator.choose_backend("torch")
    assert accelerator.choose_backend(None) == "jax"  # JAX is installed here
    assert os.environ["KERAS_BACKEND"] == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert accelerator.choose_backend(None) == "tensorflow"
    assert accelerator.choose_backend("jax") == "jax"


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_detect_on_this_cpu(backend):
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
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "KERAS_BACKEND": backend}, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"cpu {backend} 1 float32"
    assert lines[1] == "float32"
    assert lines[2].startswith("refused: this run requires a TPU but found CPU")
