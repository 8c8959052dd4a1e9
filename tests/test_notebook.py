"""Execute the real notebook through papermill on CPU, then inspect what it wrote."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import nbformat
import numpy as np
import pytest
from papermill import PapermillExecutionError

from petals import (
    backbones,
    compile_cache,
    data,
    demo_data,
    image,
    probabilities,
    runner,
    submission,
)
from tests.conftest import TINY_SIZE, assert_names

pytestmark = pytest.mark.slow

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPOSITORY, "notebooks", "flowers.py")
FIGURES = (
    "class_histogram",
    "training_batch",
    "validation_and_test_images",
    "augmentation",
    "schedule",
    "confusion_matrix",
    "per_class_f1",
    "validation_predictions",
)
# Figures that need validation labels (none when training on validation).
VALIDATION_FIGURES = ("confusion_matrix", "per_class_f1", "validation_predictions")
STAGES = {"import", "data", "build", "compile", "train", "evaluate", "predict"}


def smoke_parameters(dataset, **overrides):
    return {
        "IMAGE_SIZE": TINY_SIZE,
        "BACKBONES": ["tiny"],
        "WEIGHTS": None,
        "EPOCHS": 2,
        "BATCH_SIZE_PER_REPLICA": 16,
        "MAX_STEPS_PER_EPOCH": 3,
        "LR_MAX": 1e-3,
        "LR_RAMP_UP_EPOCHS": 1,
        "SHIFT_PIXELS": 2.0,
        "DATA_DIR": dataset,
        **overrides,
    }


def check_outputs(output_dir, dataset, backbones, epochs=2, validation=True):
    """What every run must leave: a submission in test-id order, metrics, figures, notebook."""
    test_ids = data.record_ids(data.find_split(dataset, TINY_SIZE, "test").files)
    ids, labels = submission.read_submission(os.path.join(output_dir, "submission.csv"))
    assert ids == test_ids
    metrics = json.load(open(os.path.join(output_dir, "metrics.json")))
    assert metrics["complete"] and metrics["members"] == backbones and not metrics["dropped"]
    # Each model's probabilities, as `build.py blend` reads them: the test ids, and the
    # validation ids and labels unless it trained on validation.
    saved = probabilities.paths(output_dir)
    assert [probabilities.read(path, test_ids).name for path in saved] == sorted(backbones)
    for path in saved:
        member = probabilities.read(path)
        assert member.test.dtype == np.float32 and member.test_ids.tolist() == test_ids
        assert (member.validation is not None) == validation
        if validation:
            assert (
                member.validation_labels.tolist()
                == data.labels(
                    data.find_split(dataset, TINY_SIZE, "val").files,
                    metrics["parameters"]["EXCLUDED_IDS"],
                ).tolist()
            )
    assert list(metrics["history"]) == backbones
    assert all(len(history["loss"]) == epochs for history in metrics["history"].values())
    assert set(metrics["stage_seconds"]) == STAGES
    assert list(metrics["blend_weights"]) == backbones
    assert math.isclose(sum(metrics["blend_weights"].values()), 1.0)
    # Versions on record, as the kernel ran them.
    assert metrics["versions"]["keras"] == keras.__version__
    assert metrics["versions"]["device_kind"] == "cpu"
    figures = [name for name in FIGURES if validation or name not in VALIDATION_FIGURES]
    figures += [f"training_{backbone}" for backbone in backbones]
    for name in figures:
        path = os.path.join(output_dir, f"{name}.png")
        assert os.path.getsize(path) > 1000, name
        assert os.stat(path).st_mode & 0o777 == 0o644, name  # readable by others
    notebook = nbformat.read(os.path.join(output_dir, runner.NOTEBOOK_NAME), as_version=4)
    # Every figure shows where it is made, as the PNG on disk, in the notebook and its HTML.
    shown = [
        output["data"]["image/png"]
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    written = [name for name in os.listdir(output_dir) if name.endswith(".png")]
    assert len(shown) == len(written) >= len(figures)  # each PNG written is shown once
    html = open(os.path.join(output_dir, "notebook.html")).read()
    assert html.count("data:image/png;base64,") >= len(figures)
    printed = "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    if validation:  # the figure beside the cross-validated one says what it is
        assert "blend in-sample (optimistic): f1 " in printed
        assert "the ten worst classes on validation" in printed
    assert "id,label\n" in printed  # the head of submission.csv
    tags = [cell.metadata.get("tags", []) for cell in notebook.cells]
    parameters_index = tags.index(["parameters"])
    assert tags[parameters_index + 1] == ["injected-parameters"]
    injected = notebook.cells[parameters_index + 1].source
    assert f'DATA_DIR = "{dataset}"' in injected or f"DATA_DIR = '{dataset}'" in injected
    assert "DONE" in notebook.cells[-1].outputs[-1].text
    assert os.path.getsize(os.path.join(output_dir, "notebook.html")) > 10_000
    return metrics


def printed_epoch_seconds(output_dir):
    """Keras's own per-epoch seconds, as the notebook printed them (`3/3 - 2s - ...`)."""
    notebook = nbformat.read(os.path.join(output_dir, runner.NOTEBOOK_NAME), as_version=4)
    text = "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    return [float(seconds) for seconds in re.findall(r"^\d+/\d+ - (\d+)s - ", text, re.M)]


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_single_model_on_each_backend(tiny_dataset, tmp_path, backend):
    output_dir = str(tmp_path / "run")
    # The TensorFlow run starts its kernel in the repository root, the JAX one in notebooks/.
    cwd = REPOSITORY if backend == "tensorflow" else None
    cache = tmp_path / "compile-cache"
    runner.execute(
        NOTEBOOK,
        output_dir,
        smoke_parameters(tiny_dataset, KERAS_BACKEND=backend, COMPILE_CACHE_DIR=str(cache)),
        cwd=cwd,
    )
    metrics = check_outputs(output_dir, tiny_dataset, ["tiny"])
    # JAX keeps its compiled programs for the next run; TensorFlow has no such cache.
    assert (cache.exists() and any(cache.iterdir())) == (backend == "jax")
    # The image on record, with its fingerprint; on JAX the cache's count, as JAX reported it.
    assert metrics["image"]["jax"] and metrics["image"]["keras"] and metrics["image"]["jaxlib"]
    assert metrics["image"]["fingerprint"] == image.fingerprint(metrics["image"])
    if backend == "jax":
        assert metrics["compile_cache"]["folder"] == str(cache)
        assert metrics["compile_cache"]["misses"] > 0  # a fresh cache compiles
    else:
        assert "compile_cache" not in metrics
    assert metrics["accelerator"] == {
        "kind": "cpu",
        "backend": backend,
        "replicas": 1,
        "processes": 1,
    }
    # One epoch on record per epoch the log showed (whether the clock waits for the device is
    # tested in tests/test_train.py, on a model heavy enough to tell).
    printed = printed_epoch_seconds(output_dir)
    assert len(printed) == len(metrics["epoch_seconds"]["tiny"]) == 2
    assert all(seconds > 0 for seconds in metrics["epoch_seconds"]["tiny"])


def test_predictions_line_up_with_test_ids(tiny_dataset, tmp_path):
    """The demo's test labels are held out of the records: a submission whose rows were shuffled
    against the ids scores at chance; the notebook's must score far above it, and it must have
    learned on validation too."""
    output_dir = tmp_path / "run"
    runner.execute(
        NOTEBOOK,
        str(output_dir),
        smoke_parameters(
            tiny_dataset,
            EPOCHS=8,
            MAX_STEPS_PER_EPOCH=None,
            LR_MAX=3e-3,
            LR_RAMP_UP_EPOCHS=1,
            BATCH_SIZE_PER_REPLICA=8,
            ROTATION_DEGREES=5.0,
            SHEAR_DEGREES=2.0,
            ZOOM_STDDEV=0.05,
            SHIFT_PIXELS=1.0,
            FLIP=False,
            TTA_VIEWS=[],
        ),
    )
    metrics = check_outputs(output_dir, tiny_dataset, ["tiny"], epochs=8)
    held_out = demo_data.held_out_labels(tiny_dataset, TINY_SIZE)
    scores = demo_data.submission_scores(output_dir / "submission.csv", held_out)
    assert scores["accuracy"] >= 0.6 > 2 * scores["chance"], scores
    assert metrics["blend_f1"] >= 0.6
    # The same predictions, shuffled against the ids, fail the check above.
    ids, labels = submission.read_submission(output_dir / "submission.csv")
    shuffled = tmp_path / "shuffled.csv"
    submission.write_submission(str(shuffled), ids, np.random.default_rng(0).permutation(labels))
    assert demo_data.submission_scores(shuffled, held_out)["accuracy"] < 0.6


def test_data_parallel_on_eight_devices(tiny_dataset, tmp_path, monkeypatch):
    """As on a TPU v5e-8: eight JAX devices, batches split across them, a validation and a test
    split that full batches do not divide, and one excluded validation record."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    validation_files = data.find_split(tiny_dataset, TINY_SIZE, "val").files
    excluded = data.record_ids(validation_files, labeled=True)[:1]
    output_dir = str(tmp_path / "run")
    runner.execute(
        NOTEBOOK,
        output_dir,
        smoke_parameters(
            tiny_dataset,
            KERAS_BACKEND="jax",
            BATCH_SIZE_PER_REPLICA=4,
            EXCLUDED_IDS=excluded,
            TTA_VIEWS=["flip_lr", "rot90"],
        ),
    )
    metrics = check_outputs(output_dir, tiny_dataset, ["tiny"])
    assert metrics["accelerator"] == {
        "kind": "cpu",
        "backend": "jax",
        "replicas": 8,
        "processes": 1,
    }
    assert metrics["validation_images"] == len(data.labels(validation_files)) - 1


def test_two_processes_of_four_devices(tiny_dataset, tmp_path):
    """As on a TPU slice of two hosts: `--processes 2`, four JAX devices each. Process 0 alone
    prints and writes the results; both hold the same weights. (tests/test_hosts.py checks that
    two processes predict what one process of eight devices predicts.)"""
    validation_files = data.find_split(tiny_dataset, TINY_SIZE, "val").files
    excluded = data.record_ids(validation_files, labeled=True)[:1]
    parameters = tmp_path / "parameters.yaml"
    parameters.write_text(
        json.dumps(
            smoke_parameters(
                tiny_dataset,
                KERAS_BACKEND="jax",
                BATCH_SIZE_PER_REPLICA=4,
                EXCLUDED_IDS=excluded,
                COMPILE_CACHE_DIR=str(tmp_path / "compile-cache"),
            )
        )
    )
    output_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "petals.runner",
            NOTEBOOK,
            str(output_dir),
            "-f",
            str(parameters),
            "--processes",
            "2",
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("DONE tiny") == 1 and "on 2 hosts" in result.stdout
    metrics = check_outputs(str(output_dir), tiny_dataset, ["tiny"])
    assert metrics["accelerator"] == {
        "kind": "cpu",
        "backend": "jax",
        "replicas": 8,
        "processes": 2,
    }
    assert metrics["validation_images"] == len(data.labels(validation_files)) - 1
    first, second = metrics["weights_sha256"]["tiny"]
    assert first == second
    # One copy of the results; process 1 keeps only its own executed notebook and output.
    written = sorted(path.relative_to(output_dir).as_posix() for path in output_dir.rglob("*"))
    assert [path for path in written if path.startswith("process-1")] == [
        "process-1",
        "process-1/notebook.html",
        "process-1/notebook.ipynb",
        "process-1/output.log",
    ]
    assert "DONE tiny" in (output_dir / "process-1" / "output.log").read_text()
    # The compile cache, enabled once the processes had joined: process 0 wrote its programs.
    assert metrics["compile_cache"]["misses"] > 0 and metrics["compile_cache"]["written"] > 0
    assert compile_cache.programs(tmp_path / "compile-cache")
    assert metrics["image"]["process_count"] == 2 and metrics["image"]["device_count"] == 8


def test_the_winning_recipe_with_extra_data(tiny_dataset, tmp_path):
    """Label smoothing, head dropout, MixUp and CutMix, four TTA views, and two EXTRA_DATA
    folders: a copy of the training shards (trained on again) and a copy of the validation
    shards, which the leakage guard must drop entirely."""
    splits = {name: data.find_split(tiny_dataset, TINY_SIZE, name) for name in data.SPLITS}
    for name, split in (("again", splits["train"]), ("leaky", splits["val"])):
        (tmp_path / name).mkdir()
        for path in split.files:
            shutil.copy(path, tmp_path / name)
    output_dir = str(tmp_path / "run")
    runner.execute(
        NOTEBOOK,
        output_dir,
        smoke_parameters(
            tiny_dataset,
            LABEL_SMOOTHING=0.1,
            HEAD_DROPOUT=0.2,
            MIXUP=0.3,
            CUTMIX=0.3,
            TTA_VIEWS=["flip_lr", "flip_ud", "rot90", "rot270"],
            EXTRA_DATA=[str(tmp_path / "again"), str(tmp_path / "leaky")],
        ),
    )
    metrics = check_outputs(output_dir, tiny_dataset, ["tiny"])
    assert metrics["training_images"] == 2 * splits["train"].count
    sources = {Path(source["name"]).name: source for source in metrics["training_sources"]}
    assert sources["again"]["images"] == splits["train"].count
    assert sources["leaky"]["duplicates"] == splits["val"].count
    assert sources["leaky"]["images"] == 0
    assert os.path.getsize(os.path.join(output_dir, "mixed_batch.png")) > 1000


def test_a_convnext_and_a_keras_hub_preset_train_together_offline(tiny_dataset, tmp_path):
    """The backbones of 2026 on the demo data, without a download: keras.applications' ConvNeXt
    and KerasHub's HGNetV2-B6 built from the configuration the kit keeps, blended."""
    members = ["convnext_tiny", "hgnetv2_b6_ssld_stage2_ft_in1k"]
    output_dir = str(tmp_path / "run")
    runner.execute(
        NOTEBOOK,
        output_dir,
        smoke_parameters(tiny_dataset, BACKBONES=members, EPOCHS=1, MAX_STEPS_PER_EPOCH=2),
    )
    metrics = check_outputs(output_dir, tiny_dataset, members, epochs=1)
    assert metrics["parameters"]["WEIGHTS"] is None


def test_training_on_validation_skips_evaluation(tiny_dataset, tmp_path):
    output_dir = str(tmp_path / "run")
    runner.execute(
        NOTEBOOK,
        output_dir,
        smoke_parameters(tiny_dataset, TRAIN_ON_VALIDATION=True, KERAS_BACKEND="tensorflow"),
    )
    metrics = check_outputs(output_dir, tiny_dataset, ["tiny"], validation=False)
    assert metrics["blend_f1"] is None and metrics["validation"] == {}
    splits = {name: data.find_split(tiny_dataset, TINY_SIZE, name) for name in data.SPLITS}
    assert metrics["training_images"] == splits["train"].count + splits["val"].count


def test_a_diverging_member_is_dropped_and_the_others_kept(tiny_dataset, tmp_path):
    """tiny_wide starts from weights that hold NaN (a real weights file), so its loss is NaN from
    the first step: it stops after that epoch and is dropped; tiny makes the submission."""
    layers = backbones.BACKBONES["tiny_wide"].builder(input_shape=(TINY_SIZE, TINY_SIZE, 3))
    layers.set_weights([np.full_like(weights, np.nan) for weights in layers.get_weights()])
    broken = str(tmp_path / "nan.weights.h5")
    layers.save_weights(broken)
    output_dir = tmp_path / "run"
    runner.execute(
        NOTEBOOK,
        str(output_dir),
        smoke_parameters(
            tiny_dataset,
            BACKBONES=["tiny_wide", "tiny"],
            EPOCHS=3,
            TTA_VIEWS=[],
            WEIGHTS={"tiny_wide": broken, "tiny": None},
            KERAS_BACKEND="tensorflow",
        ),
    )
    test_ids = data.record_ids(data.find_split(tiny_dataset, TINY_SIZE, "test").files)
    assert submission.read_submission(output_dir / "submission.csv")[0] == test_ids
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["complete"] and metrics["members"] == ["tiny"]
    assert metrics["blend_weights"] == {"tiny": 1.0}
    assert (
        list(metrics["dropped"]) == ["tiny_wide"]
        and "loss nan in epoch 1" in metrics["dropped"]["tiny_wide"]
    )
    assert metrics["history"]["tiny_wide"]["loss"] == [None]  # stopped after one epoch
    assert len(metrics["history"]["tiny"]["loss"]) == 3
    assert [Path(path).name for path in probabilities.paths(output_dir)] == [
        "probabilities-tiny.npz"
    ]


def test_a_member_predicting_nan_is_dropped_and_the_others_kept(tiny_dataset, tmp_path):
    """tiny_wide starts from weights whose last batch normalisation's moving mean is -inf:
    training normalises with each batch's own statistics, so its loss stays finite (trained
    on validation, no validation loss either), but its predictions are NaN. It is dropped,
    as a diverged member is; tiny makes the submission."""
    layers = backbones.BACKBONES["tiny_wide"].builder(input_shape=(TINY_SIZE, TINY_SIZE, 3))
    normalization = [
        layer for layer in layers.layers if isinstance(layer, keras.layers.BatchNormalization)
    ][-1]
    normalization.moving_mean.assign(np.full(normalization.moving_mean.shape, -np.inf))
    broken = str(tmp_path / "broken-statistics.weights.h5")
    layers.save_weights(broken)
    output_dir = tmp_path / "run"
    runner.execute(
        NOTEBOOK,
        str(output_dir),
        smoke_parameters(
            tiny_dataset,
            BACKBONES=["tiny_wide", "tiny"],
            TRAIN_ON_VALIDATION=True,
            WEIGHTS={"tiny_wide": broken, "tiny": None},
            KERAS_BACKEND="tensorflow",
        ),
    )
    test_ids = data.record_ids(data.find_split(tiny_dataset, TINY_SIZE, "test").files)
    assert submission.read_submission(output_dir / "submission.csv")[0] == test_ids
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["complete"] and metrics["members"] == ["tiny"]
    assert metrics["blend_weights"] == {"tiny": 1.0}
    assert list(metrics["dropped"]) == ["tiny_wide"]
    reason = metrics["dropped"]["tiny_wide"]
    assert f"non-finite predictions for {len(test_ids)} of {len(test_ids)} images" in reason
    assert all(math.isfinite(loss) for loss in metrics["history"]["tiny_wide"]["loss"])
    assert [Path(path).name for path in probabilities.paths(output_dir)] == [
        "probabilities-tiny.npz"
    ]


def test_a_killed_run_leaves_the_finished_models_submission(tiny_dataset, tmp_path):
    """The runner and its kernel are killed with SIGKILL during the second model's second
    epoch: the first model's submission, probabilities and metrics remain, valid."""
    import psutil

    output_dir, log_path = tmp_path / "run", tmp_path / "log.txt"
    parameters = smoke_parameters(
        tiny_dataset,
        BACKBONES=["tiny", "tiny_wide"],
        EPOCHS=6,
        MAX_STEPS_PER_EPOCH=None,
        BATCH_SIZE_PER_REPLICA=8,
        TTA_VIEWS=[],
        KERAS_BACKEND="tensorflow",
    )
    arguments = [
        item for name, value in parameters.items() for item in ("-p", name, json.dumps(value))
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "petals.runner", NOTEBOOK, str(output_dir), *arguments],
            cwd=REPOSITORY,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        # The markers, not a clock: the first model saved, then the second one's second epoch.
        while process.poll() is None:
            text = log_path.read_text()
            second = text.partition("--- tiny_wide")[2]
            if (output_dir / "probabilities-tiny.npz").exists() and "Epoch 2/6" in second:
                break
            time.sleep(0.1)
        assert process.poll() is None, log_path.read_text()[-3000:]
        kernel = psutil.Process(process.pid).children(recursive=True)
        assert kernel, "the runner has no kernel process"
        for child in [psutil.Process(process.pid), *kernel]:
            child.send_signal(signal.SIGKILL)
        psutil.wait_procs(kernel, timeout=60)
    finally:
        process.kill()
        process.wait(timeout=60)
    assert "DONE" not in log_path.read_text()
    test_ids = data.record_ids(data.find_split(tiny_dataset, TINY_SIZE, "test").files)
    ids, labels = submission.read_submission(output_dir / "submission.csv")
    assert ids == test_ids
    submission.validate(ids, labels, test_ids)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert not metrics["complete"] and metrics["members"] == ["tiny"]
    assert [
        probabilities.read(path, test_ids).name for path in probabilities.paths(output_dir)
    ] == ["tiny"]


def test_bad_input_is_refused_before_the_notebook_starts(tiny_dataset, tmp_path):
    """The runner checks the values before it executes anything (each message is tested in
    tests/test_parameters.py): no output folder, no notebook."""
    output_dir = tmp_path / "run"
    with pytest.raises(ValueError) as error:
        runner.execute(NOTEBOOK, str(output_dir), smoke_parameters(tiny_dataset, IMAGE_SIZE=999))
    assert_names(error.value, "IMAGE_SIZE", "999", TINY_SIZE)
    assert not output_dir.exists()


def test_the_notebook_checks_its_parameters_itself(tiny_dataset, tmp_path):
    """Kaggle runs the notebook with its own papermill, past the runner's check: the notebook's
    configuration cell refuses the value with the same line, before any result is written."""
    import jupytext
    import papermill

    notebook = jupytext.read(NOTEBOOK)
    output_dir = tmp_path / "run"
    with pytest.raises(PapermillExecutionError) as error:
        papermill.execute_notebook(
            notebook,
            str(tmp_path / "executed.ipynb"),
            parameters={**smoke_parameters(tiny_dataset, EPOCHS=0), "OUTPUT_DIR": str(output_dir)},
            cwd=REPOSITORY,
            progress_bar=False,
        )
    assert error.value.ename == "ValueError"
    assert_names(error.value.evalue, "EPOCHS", "0")
    assert not (output_dir / "submission.csv").exists()


def test_earlier_results_are_not_overwritten(tmp_path):
    (tmp_path / "submission.csv").write_text("id,label\n")
    with pytest.raises(FileExistsError) as error:
        runner.execute(NOTEBOOK, str(tmp_path), {})
    assert_names(error.value, tmp_path, "submission.csv")


def test_pairing_keeps_tags_and_kernelspec(tmp_path):
    """The paired .ipynb must carry the kernelspec and the parameters tag papermill needs."""
    copy = tmp_path / "flowers.py"
    copy.write_text(open(NOTEBOOK).read())
    subprocess.run(
        [sys.executable, "-m", "jupytext", "--to", "ipynb", str(copy)],
        check=True,
        capture_output=True,
    )
    notebook = nbformat.read(tmp_path / "flowers.ipynb", as_version=4)
    assert notebook.metadata.kernelspec.name == "python3"
    assert [cell.metadata.get("tags") for cell in notebook.cells].count(["parameters"]) == 1
    # Round trip: the .py rebuilt from the .ipynb is the source, byte for byte.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jupytext",
            "--to",
            "py:percent",
            "--output",
            str(tmp_path / "back.py"),
            str(tmp_path / "flowers.ipynb"),
        ],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "back.py").read_text() == copy.read_text()


def test_runner_command_reports_one_line(tiny_dataset, tmp_path):
    """`python -m petals.runner` ends a failed run with the one line that says why."""

    def run(*parameters):
        arguments = [item for pair in parameters for item in ("-p", *pair)]
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "petals.runner",
                NOTEBOOK,
                str(tmp_path / f"run-{len(list(tmp_path.iterdir()))}"),
                "-p",
                "DATA_DIR",
                tiny_dataset,
                "-p",
                "IMAGE_SIZE",
                str(TINY_SIZE),
                *arguments,
            ],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=120,
        )

    result = run(("EPOCHS", "0"))
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ")
    assert_names(line, "EPOCHS", "0", "1")
    result = run(("EPOCH", "3"))
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ")
    assert_names(line, "EPOCH ", "'EPOCHS'")  # the unknown name, and the one it may mean


def test_narrative_keeps_pace_with_the_code():
    """At least 0.6 lines of markdown per line of code (blank lines not counted), and no maths
    that needs MathJax from the network to render (notebook.html is read offline)."""
    import jupytext

    notebook = jupytext.read(NOTEBOOK)

    def lines(kind):
        return sum(
            1
            for cell in notebook.cells
            if cell.cell_type == kind
            for line in cell.source.splitlines()
            if line.strip()
        )

    assert lines("markdown") >= 0.6 * lines("code"), (lines("markdown"), lines("code"))
    markdown = "".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert "$$" not in markdown and "\\begin{" not in markdown
