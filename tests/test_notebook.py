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

from kit import demo_data, runner
from petals import backbones, compile_cache, data, image, probabilities, submission
from tests.conftest import TINY_SIZE, assert_names, xla_flags

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


def check_outputs(output_dir, dataset, backbones, epochs=2, validation=True, dropped=()):
    """What every run must leave: a submission in test-id order, metrics, figures, notebook.
    `backbones` are the members blended, `dropped` the ones trained and left out."""
    test_ids = data.record_ids(data.find_split(dataset, TINY_SIZE, "test").files)
    ids, labels = submission.read_submission(os.path.join(output_dir, "submission.csv"))
    assert ids == test_ids
    metrics = json.load(open(os.path.join(output_dir, "metrics.json")))
    assert metrics["complete"] and metrics["members"] == backbones
    assert list(metrics["dropped"]) == list(dropped)
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
    trained = metrics["parameters"]["BACKBONES"]  # in training order
    assert set(trained) == {*backbones, *dropped}
    assert list(metrics["history"]) == trained
    assert all(len(metrics["history"][name]["loss"]) == epochs for name in backbones)
    assert set(metrics["stage_seconds"]) == STAGES
    assert list(metrics["blend_weights"]) == backbones
    assert math.isclose(sum(metrics["blend_weights"].values()), 1.0)
    # Versions on record, as the kernel ran them.
    assert metrics["versions"]["keras"] == keras.__version__
    assert metrics["versions"]["device_kind"] == "cpu"
    # A compile cache is on record only where the run was given one.
    assert ("compile_cache" in metrics) == (metrics["parameters"]["COMPILE_CACHE_DIR"] is not None)
    figures = [name for name in FIGURES if validation or name not in VALIDATION_FIGURES]
    figures += [f"training_{backbone}" for backbone in trained]
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


def broken_tiny_wide(folder, breaking):
    """A real weights file of tiny_wide, broken by `breaking(layers)`; returns its path."""
    layers = backbones.BACKBONES["tiny_wide"].builder(input_shape=(TINY_SIZE, TINY_SIZE, 3))
    breaking(layers)
    path = str(folder / "broken.weights.h5")
    layers.save_weights(path)
    return path


# Each notebook execution below costs a kernel, its imports and a training run (tens of seconds
# on two cores), so the tests that can read the same run share it: a module-scoped fixture
# executes it once, and the tests that inspect it share an xdist group, so that `make test`
# (`--dist loadgroup`) executes it on one worker only.


@pytest.fixture(scope="module")
def jax_run(tiny_dataset, tmp_path_factory):
    """The JAX run, as a TPU v5e-8 runs the recipe: eight JAX devices, batches split across
    them, a validation and a test split that full batches do not divide, one excluded
    validation record; label smoothing, head dropout, MixUp and CutMix, four TTA views, and two
    EXTRA_DATA folders (a copy of the training shards, trained on again, and a copy of the
    validation shards, which the leakage guard must drop entirely); a fresh compile cache, and
    the kernel started in notebooks/ (the runner's default)."""
    folder = tmp_path_factory.mktemp("jax-run")
    splits = {name: data.find_split(tiny_dataset, TINY_SIZE, name) for name in data.SPLITS}
    for name, split in (("again", splits["train"]), ("leaky", splits["val"])):
        (folder / name).mkdir()
        for path in split.files:
            shutil.copy(path, folder / name)
    excluded = data.record_ids(splits["val"].files, labeled=True)[:1]
    output_dir = folder / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XLA_FLAGS", xla_flags(8))
        runner.execute(
            NOTEBOOK,
            str(output_dir),
            smoke_parameters(
                tiny_dataset,
                KERAS_BACKEND="jax",
                BATCH_SIZE_PER_REPLICA=4,
                EXCLUDED_IDS=excluded,
                COMPILE_CACHE_DIR=str(folder / "compile-cache"),
                LABEL_SMOOTHING=0.1,
                HEAD_DROPOUT=0.2,
                MIXUP=0.3,
                CUTMIX=0.3,
                TTA_VIEWS=["flip_lr", "flip_ud", "rot90", "rot270"],
                EXTRA_DATA=[str(folder / "again"), str(folder / "leaky")],
            ),
        )
    return output_dir


@pytest.fixture(scope="module")
def tensorflow_run(tiny_dataset, tmp_path_factory):
    """The TensorFlow run, its kernel started in the repository root, validated: tiny_wide
    starts from weights that hold NaN (a real weights file), so its loss is NaN from the first
    step; tiny is trained beside it."""
    folder = tmp_path_factory.mktemp("tensorflow-run")

    def with_nan(layers):
        layers.set_weights([np.full_like(weights, np.nan) for weights in layers.get_weights()])

    output_dir = folder / "run"
    runner.execute(
        NOTEBOOK,
        str(output_dir),
        smoke_parameters(
            tiny_dataset,
            KERAS_BACKEND="tensorflow",
            BACKBONES=["tiny_wide", "tiny"],
            WEIGHTS={"tiny_wide": broken_tiny_wide(folder, with_nan), "tiny": None},
        ),
        cwd=REPOSITORY,
    )
    return output_dir


@pytest.fixture(scope="module")
def trained_on_validation_run(tiny_dataset, tmp_path_factory):
    """The TensorFlow run that trains on validation: tiny_wide starts from weights whose last
    batch normalisation's moving mean is -inf (training normalises with each batch's own
    statistics, so its loss stays finite, but its predictions are NaN); tiny beside it."""
    folder = tmp_path_factory.mktemp("trained-on-validation-run")

    def with_infinite_mean(layers):
        normalization = [
            layer for layer in layers.layers if isinstance(layer, keras.layers.BatchNormalization)
        ][-1]
        normalization.moving_mean.assign(np.full(normalization.moving_mean.shape, -np.inf))

    output_dir = folder / "run"
    runner.execute(
        NOTEBOOK,
        str(output_dir),
        smoke_parameters(
            tiny_dataset,
            KERAS_BACKEND="tensorflow",
            TRAIN_ON_VALIDATION=True,
            BACKBONES=["tiny_wide", "tiny"],
            WEIGHTS={"tiny_wide": broken_tiny_wide(folder, with_infinite_mean), "tiny": None},
        ),
    )
    return output_dir


@pytest.fixture(scope="module")
def two_process_run(tiny_dataset, tmp_path_factory):
    """The notebook through the launcher, as on a TPU slice of two hosts: `--processes 2`, four
    JAX devices each, TRAIN_ON_VALIDATION with one excluded validation record, EXTRA_DATA (a
    copy of the training shards): three sources for each process to read its share of; a fresh
    compile cache."""
    folder = tmp_path_factory.mktemp("two-process-run")
    splits = {name: data.find_split(tiny_dataset, TINY_SIZE, name) for name in data.SPLITS}
    (folder / "again").mkdir()
    for path in splits["train"].files:
        shutil.copy(path, folder / "again")
    parameters = folder / "parameters.yaml"
    parameters.write_text(
        json.dumps(
            smoke_parameters(
                tiny_dataset,
                KERAS_BACKEND="jax",
                BATCH_SIZE_PER_REPLICA=4,
                EXCLUDED_IDS=data.record_ids(splits["val"].files, labeled=True)[:1],
                TRAIN_ON_VALIDATION=True,
                EXTRA_DATA=[str(folder / "again")],
                COMPILE_CACHE_DIR=str(folder / "compile-cache"),
            )
        )
    )
    output_dir = folder / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kit.runner",
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
        env={**os.environ, "XLA_FLAGS": xla_flags(4)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir, result.stdout


@pytest.mark.xdist_group("jax_run")
def test_a_jax_run_writes_every_result_and_fills_its_compile_cache(tiny_dataset, jax_run):
    """Every output of a run (check_outputs); JAX keeps its compiled programs for the next
    run, and the image is on record with its fingerprint."""
    metrics = check_outputs(jax_run, tiny_dataset, ["tiny"])
    cache = jax_run.parent / "compile-cache"
    assert cache.exists() and any(cache.iterdir())
    assert metrics["image"]["jax"] and metrics["image"]["keras"] and metrics["image"]["jaxlib"]
    assert metrics["image"]["fingerprint"] == image.fingerprint(metrics["image"])
    assert metrics["compile_cache"]["folder"] == str(cache)
    assert metrics["compile_cache"]["misses"] > 0  # a fresh cache compiles
    # One epoch on record per epoch the log showed (whether the clock waits for the device is
    # tested in tests/test_train.py, on a model heavy enough to tell).
    printed = printed_epoch_seconds(jax_run)
    assert len(printed) == len(metrics["epoch_seconds"]["tiny"]) == 2
    assert all(seconds > 0 for seconds in metrics["epoch_seconds"]["tiny"])


@pytest.mark.xdist_group("jax_run")
def test_data_parallel_on_eight_devices(tiny_dataset, jax_run):
    """Eight replicas, and every validation image but the excluded one evaluated, although
    full batches divide neither split."""
    metrics = json.loads((jax_run / "metrics.json").read_text())
    assert metrics["accelerator"] == {
        "kind": "cpu",
        "backend": "jax",
        "replicas": 8,
        "processes": 1,
    }
    validation_files = data.find_split(tiny_dataset, TINY_SIZE, "val").files
    assert metrics["validation_images"] == len(data.labels(validation_files)) - 1


@pytest.mark.xdist_group("jax_run")
def test_the_winning_recipe_with_extra_data(tiny_dataset, jax_run):
    """The copy of train is trained on again; the copy of val is dropped whole (by the
    exclusion and the leakage guard); MixUp and CutMix show a mixed batch."""
    metrics = json.loads((jax_run / "metrics.json").read_text())
    train = data.find_split(tiny_dataset, TINY_SIZE, "train")
    val = data.find_split(tiny_dataset, TINY_SIZE, "val")
    assert metrics["training_images"] == 2 * train.count
    sources = {Path(source["name"]).name: source for source in metrics["training_sources"]}
    assert sources["again"]["images"] == train.count
    # The excluded validation id is dropped from the copy too, before the guard sees it.
    assert sources["leaky"]["excluded"] == 1
    assert sources["leaky"]["duplicates"] == val.count - 1
    assert sources["leaky"]["images"] == 0
    assert os.path.getsize(jax_run / "mixed_batch.png") > 1000


@pytest.mark.xdist_group("tensorflow_run")
def test_a_tensorflow_run_writes_every_result(tiny_dataset, tensorflow_run):
    """Every output of a run on TensorFlow, which has no compile cache; the epochs on record
    are the epochs the log showed."""
    metrics = check_outputs(tensorflow_run, tiny_dataset, ["tiny"], dropped=["tiny_wide"])
    assert "compile_cache" not in metrics
    assert metrics["image"]["fingerprint"] == image.fingerprint(metrics["image"])
    assert metrics["accelerator"] == {
        "kind": "cpu",
        "backend": "tensorflow",
        "replicas": 1,
        "processes": 1,
    }
    printed = printed_epoch_seconds(tensorflow_run)
    assert len(printed) == sum(len(seconds) for seconds in metrics["epoch_seconds"].values())
    assert len(metrics["epoch_seconds"]["tiny"]) == 2
    assert all(seconds > 0 for seconds in metrics["epoch_seconds"]["tiny"])


@pytest.mark.xdist_group("tensorflow_run")
def test_a_diverging_member_is_dropped_and_the_others_kept(tiny_dataset, tensorflow_run):
    """tiny_wide's loss is NaN from the first step: it stops after that epoch and is dropped;
    tiny makes the submission."""
    test_ids = data.record_ids(data.find_split(tiny_dataset, TINY_SIZE, "test").files)
    assert submission.read_submission(tensorflow_run / "submission.csv")[0] == test_ids
    metrics = json.loads((tensorflow_run / "metrics.json").read_text())
    assert metrics["complete"] and metrics["members"] == ["tiny"]
    assert metrics["blend_weights"] == {"tiny": 1.0}
    assert list(metrics["dropped"]) == ["tiny_wide"]
    assert_names(metrics["dropped"]["tiny_wide"], "nan", "epoch 1")
    assert metrics["history"]["tiny_wide"]["loss"] == [None]  # stopped after one epoch
    assert len(metrics["history"]["tiny"]["loss"]) == 2
    assert [Path(path).name for path in probabilities.paths(tensorflow_run)] == [
        "probabilities-tiny.npz"
    ]


@pytest.mark.xdist_group("trained_on_validation_run")
def test_training_on_validation_skips_evaluation(tiny_dataset, trained_on_validation_run):
    """Trained on train and val: every output but the validation figures, no validation score
    nor F1, and the training images of both splits."""
    metrics = check_outputs(
        trained_on_validation_run, tiny_dataset, ["tiny"], validation=False, dropped=["tiny_wide"]
    )
    assert metrics["blend_f1"] is None and metrics["validation"] == {}
    splits = {name: data.find_split(tiny_dataset, TINY_SIZE, name) for name in data.SPLITS}
    assert metrics["training_images"] == splits["train"].count + splits["val"].count


@pytest.mark.xdist_group("trained_on_validation_run")
def test_a_member_predicting_nan_is_dropped_and_the_others_kept(
    tiny_dataset, trained_on_validation_run
):
    """tiny_wide's loss stays finite (trained on validation, no validation loss either), but
    its predictions are NaN. It is dropped, as a diverged member is; tiny makes the
    submission."""
    output_dir = trained_on_validation_run
    test_ids = data.record_ids(data.find_split(tiny_dataset, TINY_SIZE, "test").files)
    assert submission.read_submission(output_dir / "submission.csv")[0] == test_ids
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["complete"] and metrics["members"] == ["tiny"]
    assert metrics["blend_weights"] == {"tiny": 1.0}
    assert list(metrics["dropped"]) == ["tiny_wide"]
    assert_names(
        metrics["dropped"]["tiny_wide"], "non-finite", f"{len(test_ids)} of {len(test_ids)}"
    )
    assert all(math.isfinite(loss) for loss in metrics["history"]["tiny_wide"]["loss"])
    assert [Path(path).name for path in probabilities.paths(output_dir)] == [
        "probabilities-tiny.npz"
    ]


@pytest.mark.xdist_group("two_process_run")
def test_two_processes_of_four_devices(tiny_dataset, two_process_run):
    """As on a TPU slice of two hosts: process 0 alone prints and writes the results; both hold
    the same weights. (tests/test_hosts.py checks that two processes predict what one process
    of eight devices predicts.)"""
    output_dir, printed = two_process_run
    assert printed.count("DONE tiny") == 1 and "on 2 hosts" in printed
    metrics = check_outputs(str(output_dir), tiny_dataset, ["tiny"], validation=False)
    assert metrics["accelerator"] == {
        "kind": "cpu",
        "backend": "jax",
        "replicas": 8,
        "processes": 2,
    }
    validation_files = data.find_split(tiny_dataset, TINY_SIZE, "val").files
    trained_on = {source["name"]: source["images"] for source in metrics["training_sources"]}
    assert trained_on["val"] == len(data.labels(validation_files)) - 1  # one record excluded
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
    assert compile_cache.programs(output_dir.parent / "compile-cache")
    assert metrics["image"]["process_count"] == 2 and metrics["image"]["device_count"] == 8


@pytest.mark.xdist_group("two_process_run")
def test_two_processes_read_equal_shares_of_every_source(two_process_run):
    """metrics.json's records_per_process gives each process half of every training source
    (train, val with TRAIN_ON_VALIDATION, and the EXTRA_DATA copy), within 10 %."""
    output_dir, _ = two_process_run
    metrics = json.loads((output_dir / "metrics.json").read_text())
    shares = metrics["records_per_process"]
    names = [source["name"] for source in metrics["training_sources"]]
    assert len(names) == 3 and names[:2] == ["train", "val"] and len(shares) == 2
    assert all(set(share) == set(names) for share in shares)
    for source in metrics["training_sources"]:
        counts = [share[source["name"]] for share in shares]
        assert sum(counts) == source["images"]
        assert max(counts) <= 1.1 * min(counts), (source["name"], counts)


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


def test_a_convnext_and_a_keras_hub_preset_train_together_offline(tiny_dataset, tmp_path):
    """The backbones of 2026 on the demo data, without a download: keras.applications' ConvNeXt
    and KerasHub's HGNetV2-B6 built from the configuration the kit keeps, blended."""
    members = ["convnext_tiny", "hgnetv2_b6_ssld_stage2_ft_in1k"]
    output_dir = str(tmp_path / "run")
    runner.execute(
        NOTEBOOK,
        output_dir,
        # No TTA: one predict program per model to compile (TTA is tested in jax_run).
        smoke_parameters(
            tiny_dataset, BACKBONES=members, EPOCHS=1, MAX_STEPS_PER_EPOCH=2, TTA_VIEWS=[]
        ),
    )
    metrics = check_outputs(output_dir, tiny_dataset, members, epochs=1)
    assert metrics["parameters"]["WEIGHTS"] is None


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
            [sys.executable, "-m", "kit.runner", NOTEBOOK, str(output_dir), *arguments],
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
    """A folder holding an earlier submission is refused before anything runs."""
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
    """`python -m kit.runner` ends a failed run with the one line that says why."""

    def run(*parameters):
        arguments = [item for pair in parameters for item in ("-p", *pair)]
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "kit.runner",
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
