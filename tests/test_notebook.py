"""Execute the real notebook through papermill on CPU, then inspect what it wrote."""

import json
import math
import os
import subprocess
import sys

import nbformat
import pytest
from papermill import PapermillExecutionError

from petals import data, runner, submission
from tests.conftest import TINY_SIZE

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPOSITORY, "notebooks", "flowers.py")
FIGURES = ("training_batch", "augmented_batch", "schedule", "confusion_matrix",
           "validation_predictions")


def smoke_parameters(dataset, **overrides):
    return {"IMAGE_SIZE": TINY_SIZE, "BACKBONES": ["tiny"], "WEIGHTS": None, "EPOCHS": 2,
            "BATCH_SIZE_PER_REPLICA": 16, "MAX_STEPS_PER_EPOCH": 3, "LR_MAX": 1e-3,
            "LR_RAMP_UP_EPOCHS": 1, "SHIFT_PIXELS": 2.0, "DATA_DIR": dataset, **overrides}


def finite_numbers(value):
    if isinstance(value, dict):
        return all(finite_numbers(item) for item in value.values())
    if isinstance(value, list):
        return all(finite_numbers(item) for item in value)
    return not isinstance(value, float) or math.isfinite(value)


def check_outputs(output_dir, dataset, backbones, validation=True):
    test_ids = data.record_ids(data.find_split(dataset, TINY_SIZE, "test").files)
    ids, labels = submission.read_submission(os.path.join(output_dir, "submission.csv"))
    assert ids == test_ids
    assert ((labels >= 0) & (labels < 104)).all()
    metrics = json.load(open(os.path.join(output_dir, "metrics.json")))
    assert finite_numbers(metrics)
    assert list(metrics["history"]) == backbones
    assert all(len(history["loss"]) == 2 for history in metrics["history"].values())
    assert set(metrics["stage_seconds"]) == {"import", "data", "build", "compile", "train",
                                             "evaluate", "predict"}
    assert all(seconds >= 0 for seconds in metrics["stage_seconds"].values())
    assert math.isclose(sum(metrics["blend_weights"].values()), 1.0)
    figures = FIGURES if validation else FIGURES[:3]
    for name in (*figures, *(f"training_{backbone}" for backbone in backbones)):
        assert os.path.getsize(os.path.join(output_dir, f"{name}.png")) > 1000, name
    notebook = nbformat.read(os.path.join(output_dir, runner.NOTEBOOK_NAME), as_version=4)
    tags = [cell.metadata.get("tags", []) for cell in notebook.cells]
    parameters_index = tags.index(["parameters"])
    assert tags[parameters_index + 1] == ["injected-parameters"]
    injected = notebook.cells[parameters_index + 1].source
    assert f"DATA_DIR = \"{dataset}\"" in injected or f"DATA_DIR = '{dataset}'" in injected
    assert "DONE" in notebook.cells[-1].outputs[-1].text
    return metrics


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_single_model_on_each_backend(tiny_dataset, tmp_path, backend):
    output_dir = str(tmp_path / "run")
    # The TensorFlow run starts its kernel in the repository root, the JAX one in notebooks/.
    cwd = REPOSITORY if backend == "tensorflow" else None
    cache = tmp_path / "compile-cache"
    runner.execute(NOTEBOOK, output_dir, smoke_parameters(
        tiny_dataset, KERAS_BACKEND=backend, COMPILE_CACHE_DIR=str(cache)), cwd=cwd)
    metrics = check_outputs(output_dir, tiny_dataset, ["tiny"])
    # JAX keeps its compiled programs for the next run; TensorFlow has no such cache.
    assert (cache.exists() and any(cache.iterdir())) == (backend == "jax")
    assert metrics["accelerator"] == {"kind": "cpu", "backend": backend, "replicas": 1}
    assert 0 <= metrics["blend_f1"] <= 1


def test_data_parallel_on_eight_devices(tiny_dataset, tmp_path, monkeypatch):
    """As on a TPU v5e-8: eight JAX devices, batches split across them, a validation and a test
    split that full batches do not divide, and one excluded validation record."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    validation_files = data.find_split(tiny_dataset, TINY_SIZE, "val").files
    excluded = data.record_ids(validation_files, labeled=True)[:1]
    output_dir = str(tmp_path / "run")
    runner.execute(NOTEBOOK, output_dir, smoke_parameters(
        tiny_dataset, KERAS_BACKEND="jax", BATCH_SIZE_PER_REPLICA=4, EXCLUDED_IDS=excluded))
    metrics = check_outputs(output_dir, tiny_dataset, ["tiny"])
    assert metrics["accelerator"] == {"kind": "cpu", "backend": "jax", "replicas": 8}
    assert metrics["validation_images"] == len(data.labels(validation_files)) - 1
    assert metrics["test_images"] % 32 != 0  # the last test batch was padded


def test_ensemble_of_two_backbones(tiny_dataset, tmp_path):
    output_dir = str(tmp_path / "run")
    runner.execute(NOTEBOOK, output_dir, smoke_parameters(
        tiny_dataset, BACKBONES=["tiny", "tiny_wide"], BLEND_STEP=0.25, TTA_VIEWS=[]))
    metrics = check_outputs(output_dir, tiny_dataset, ["tiny", "tiny_wide"])
    assert set(metrics["validation"]) == {"tiny", "tiny_wide"}
    best_single = max(scores["f1"] for scores in metrics["validation"].values())
    assert metrics["blend_f1"] >= best_single  # the grid contains each single model


def test_training_on_validation_skips_evaluation(tiny_dataset, tmp_path):
    output_dir = str(tmp_path / "run")
    runner.execute(NOTEBOOK, output_dir, smoke_parameters(
        tiny_dataset, TRAIN_ON_VALIDATION=True))
    metrics = check_outputs(output_dir, tiny_dataset, ["tiny"], validation=False)
    assert metrics["blend_f1"] is None and metrics["validation"] == {}


@pytest.mark.parametrize("overrides, message", [
    ({"DATA_DIR": "/no/such/folder"}, "DATA_DIR '/no/such/folder' is not a folder"),
    ({"IMAGE_SIZE": 64}, "no 64x64 images under .*sizes found: 32"),
    ({"BACKBONES": ["resnet9000"]}, "unknown backbone 'resnet9000'"),
    ({"EPOCHS": "2"}, "EPOCHS = '2' is not valid"),
    ({"WEIGHTS": "/no/such/weights.h5"}, "does not exist"),
])
def test_bad_input_fails_with_one_clear_line_and_no_results(tiny_dataset, tmp_path, overrides,
                                                            message):
    output_dir = tmp_path / "run"
    with pytest.raises(PapermillExecutionError, match=message):
        runner.execute(NOTEBOOK, str(output_dir), smoke_parameters(tiny_dataset, **overrides))
    assert not (output_dir / "submission.csv").exists()
    assert not (output_dir / "metrics.json").exists()


def test_earlier_results_are_not_overwritten(tmp_path):
    (tmp_path / "submission.csv").write_text("id,label\n")
    with pytest.raises(FileExistsError, match="already holds submission.csv"):
        runner.execute(NOTEBOOK, str(tmp_path), {})


def test_pairing_keeps_tags_and_kernelspec(tmp_path):
    """The paired .ipynb must carry the kernelspec and the parameters tag papermill needs."""
    copy = tmp_path / "flowers.py"
    copy.write_text(open(NOTEBOOK).read())
    subprocess.run([sys.executable, "-m", "jupytext", "--to", "ipynb", str(copy)], check=True,
                   capture_output=True)
    notebook = nbformat.read(tmp_path / "flowers.ipynb", as_version=4)
    assert notebook.metadata.kernelspec.name == "python3"
    assert [cell.metadata.get("tags") for cell in notebook.cells].count(["parameters"]) == 1
    # Round trip: the .py rebuilt from the .ipynb is the source, byte for byte.
    subprocess.run([sys.executable, "-m", "jupytext", "--to", "py:percent", "--output",
                    str(tmp_path / "back.py"), str(tmp_path / "flowers.ipynb")], check=True,
                   capture_output=True)
    assert (tmp_path / "back.py").read_text() == copy.read_text()


def test_runner_command_reports_one_line(tiny_dataset, tmp_path):
    """`python -m petals.runner` ends a failed run with the one line that says why."""
    def run(*parameters):
        arguments = [item for pair in parameters for item in ("-p", *pair)]
        return subprocess.run([sys.executable, "-m", "petals.runner", NOTEBOOK,
                               str(tmp_path / f"run-{len(list(tmp_path.iterdir()))}"),
                               "-p", "DATA_DIR", tiny_dataset, *arguments],
                              cwd=REPOSITORY, capture_output=True, text=True, timeout=120)

    result = run(("EPOCHS", "0"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: ValueError: EPOCHS = 0 is not valid: expected an integer ≥ 1 (see ")
    result = run(("EPOCH", "3"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown parameters EPOCH;")
