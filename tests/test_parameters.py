import json
import os
import subprocess
import sys

import pytest

# backbones and data register the checks only the running notebook can make.
from petals import backbones, data, parameters  # noqa: F401
from tests.conftest import TINY_SIZE, assert_names

NOTEBOOK = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks", "flowers.py"
)


@pytest.fixture
def valid(tiny_dataset, tmp_path):
    return {
        "IMAGE_SIZE": TINY_SIZE,
        "BACKBONES": ["tiny"],
        "WEIGHTS": None,
        "EPOCHS": 1,
        "BATCH_SIZE_PER_REPLICA": 8,
        "LR_START": 1e-5,
        "LR_MAX": 1e-3,
        "LR_MIN": 1e-5,
        "LR_RAMP_UP_EPOCHS": 1,
        "LR_SUSTAIN_EPOCHS": 0,
        "LR_DECAY": 0.8,
        "ROTATION_DEGREES": 15.0,
        "SHEAR_DEGREES": 5.0,
        "ZOOM_STDDEV": 0.1,
        "SHIFT_PIXELS": 2.0,
        "FLIP": True,
        "TRAIN_ON_VALIDATION": False,
        "EXCLUDED_IDS": [],
        "TTA_VIEWS": ["flip_lr"],
        "EXTRA_DATA": [],
        "LABEL_SMOOTHING": 0.0,
        "HEAD_DROPOUT": 0.0,
        "MIXUP": 0.0,
        "CUTMIX": 0.0,
        "BLEND_STEP": 0.05,
        "SEED": 1,
        "DATA_DIR": tiny_dataset,
        "OUTPUT_DIR": str(tmp_path / "out"),
        "MAX_STEPS_PER_EPOCH": None,
        "KERAS_BACKEND": None,
        "ACCELERATOR": None,
        "CLASS_NAMES": None,
        "COMPILE_CACHE_DIR": None,
        "COMPILE_CACHE_FROM": None,
    }


def test_valid_parameters_pass(valid):
    assert parameters.validate(dict(valid)) == valid


def test_the_notebook_names_the_parameters_and_each_has_a_check():
    defaults = parameters.notebook_parameters(NOTEBOOK)
    assert set(defaults) == set(parameters.CHECKS)
    assert defaults["IMAGE_SIZE"] in parameters.COMPETITION_SIZES


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("IMAGE_SIZE", "512", "IMAGE_SIZE = '512' is not valid: expected an integer"),
        (
            "IMAGE_SIZE",
            999,
            f"IMAGE_SIZE = 999 is not valid: expected one of {TINY_SIZE} .the sizes in /",
        ),
        ("EPOCHS", True, "EPOCHS = True"),
        ("EPOCHS", 0, "an integer ≥ 1"),
        ("EPOCHS", "None", "EPOCHS = None is not valid"),
        ("BACKBONES", 3, "a list of strings"),
        ("BACKBONES", [], "at least one"),
        ("BACKBONES", ["resnet9000"], "'resnet9000' is not a backbone"),
        ("BACKBONES", ["tiny", "tinny"], "'tinny' is not a backbone (did you mean 'tiny'"),
        ("BACKBONES", ["convnext_tny"], "(did you mean 'convnext_tiny'"),
        (
            "BACKBONES",
            ["hgnetv2_b6"],
            "(did you mean 'hgnetv2_b6_ssld_stage1_in22k_in1k' or 'hgnetv2_b6_ssld_stage2_ft_in1k'",
        ),
        ("WEIGHTS", "/no/such/file.h5", "does not exist"),
        ("LR_DECAY", 1.5, "LR_DECAY"),
        ("TTA_VIEWS", ["spin"], "expected each of flip_lr, flip_ud, rot90, rot270 at most once"),
        ("TTA_VIEWS", ["flip_lr", "flipud"], "'flipud' is not a view (did you mean 'flip_ud'"),
        ("LABEL_SMOOTHING", 1.0, "a number in"),
        ("EXCLUDED_IDS", "a762df180", "a list of strings"),
        ("EXTRA_DATA", ["/no/such/folder"], "EXTRA_DATA entry '/no/such/folder' is not a folder"),
        ("EXTRA_DATA", ["someone/flowers"], "attach the dataset someone/flowers"),
        ("KERAS_BACKEND", "torch", "one of None, 'jax', 'tensorflow'"),
        ("ACCELERATOR", "TPU", "one of None, 'tpu', 'gpu', 'cpu'"),
        ("MAX_STEPS_PER_EPOCH", 0, "MAX_STEPS_PER_EPOCH"),
        ("SHIFT_PIXELS", 64.0, "SHIFT_PIXELS"),
        ("DATA_DIR", "/no/such/folder", "DATA_DIR '/no/such/folder' is not a folder"),
    ],
)
def test_each_mistake_names_the_parameter(valid, name, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parameters.validate({**valid, name: value})


def test_an_empty_data_dir_is_a_data_dir_mistake(valid, tmp_path):
    with pytest.raises(ValueError) as error:  # the sentence is data's (tests/test_data.py)
        parameters.validate({**valid, "DATA_DIR": str(tmp_path)})
    assert_names(error.value, "DATA_DIR", tmp_path, "tfrecords-jpeg-SxS")


def test_competition_data_needs_a_competition_size(valid):
    with pytest.raises(ValueError, match="192, 224, 331, 512 .the sizes in the competition"):
        parameters.validate({**valid, "DATA_DIR": None, "IMAGE_SIZE": 300})
    parameters.validate({**valid, "DATA_DIR": None, "IMAGE_SIZE": 331})


def test_none_and_null_strings_mean_none(valid):
    checked = parameters.validate(
        {**valid, "WEIGHTS": "None", "COMPILE_CACHE_DIR": "null", "MAX_STEPS_PER_EPOCH": "None"}
    )
    assert (
        checked["WEIGHTS"] is checked["COMPILE_CACHE_DIR"] is checked["MAX_STEPS_PER_EPOCH"] is None
    )
    assert parameters.plain_none({"A": "None", "B": "none", "C": ["None"]}) == {
        "A": None,
        "B": "none",
        "C": ["None"],
    }


def test_missing_and_unchecked_parameters(valid):
    incomplete = dict(valid)
    del incomplete["TTA_VIEWS"]
    with pytest.raises(ValueError, match="parameters missing: TTA_VIEWS"):
        parameters.validate(incomplete)
    with pytest.raises(ValueError, match="parameters without a check: NEW_KNOB; add one"):
        parameters.validate({**valid, "NEW_KNOB": 3})


def test_namespace_parameters_come_from_parameters_cells():
    history = [
        "",
        "IMAGE_SIZE = 512  # a comment\nEPOCHS = 12\n",
        "# Parameters\nEPOCHS = 2\nDATA_DIR = None\n",
        "import os\nfrom petals import CLASSES\n",
        "GLOBAL_BATCH = 16 * replicas\n",
        "OPTIONS = {'a': 1}\nprint(OPTIONS)\n",
    ]
    namespace = {
        "In": history,
        "IMAGE_SIZE": 512,
        "EPOCHS": 2,
        "DATA_DIR": None,
        "CLASSES": ("rose",),
        "GLOBAL_BATCH": 16,
        "OPTIONS": {"a": 1},
        "os": os,
    }
    assert parameters.namespace_parameters(namespace) == {
        "IMAGE_SIZE": 512,
        "EPOCHS": 2,
        "DATA_DIR": None,
    }
    # Without IPython's history: every upper-case global holding data.
    del namespace["In"]
    assert set(parameters.namespace_parameters(namespace)) == {
        "IMAGE_SIZE",
        "EPOCHS",
        "DATA_DIR",
        "CLASSES",
        "GLOBAL_BATCH",
        "OPTIONS",
    }


def test_notebook_parameters_refuses_what_it_cannot_read(tmp_path):
    header = '# %% tags=["parameters"]\n'
    with pytest.raises(ValueError, match="does not exist"):
        parameters.notebook_parameters(str(tmp_path / "missing.py"))
    (tmp_path / "none.py").write_text("# %%\nA = 1\n")
    with pytest.raises(ValueError, match="has 0 cells tagged 'parameters'"):
        parameters.notebook_parameters(str(tmp_path / "none.py"))
    (tmp_path / "computed.py").write_text(header + "A = 1\nB = A + 1\n")
    with pytest.raises(ValueError, match="the default of B is not a literal"):
        parameters.notebook_parameters(str(tmp_path / "computed.py"))
    (tmp_path / "good.py").write_text(header + "A = 1  # one\nB = [None, 'x']\n\n# %%\nC = 3\n")
    assert parameters.notebook_parameters(str(tmp_path / "good.py")) == {"A": 1, "B": [None, "x"]}


def test_mixup_and_cutmix_together_are_at_most_certain(valid):
    with pytest.raises(ValueError, match="MIXUP \\+ CUTMIX = 1.2 is more than 1"):
        parameters.validate({**valid, "MIXUP": 0.5, "CUTMIX": 0.7})
    assert parameters.validate({**valid, "MIXUP": 0.5, "CUTMIX": 0.5})["CUTMIX"] == 0.5


def test_weights_per_backbone(valid):
    both = {**valid, "BACKBONES": ["tiny", "tiny_wide"]}
    checked = parameters.validate({**both, "WEIGHTS": {"tiny": None, "tiny_wide": "null"}})
    assert parameters.weights_for(checked["WEIGHTS"], "tiny_wide") is None
    assert parameters.weights_for("imagenet", "tiny") == "imagenet"
    with pytest.raises(ValueError, match="a mapping with exactly the backbones tiny, tiny_wide"):
        parameters.validate({**both, "WEIGHTS": {"tiny": None}})
    with pytest.raises(ValueError, match="'tiny' has no ImageNet weights"):
        parameters.validate({**both, "WEIGHTS": {"tiny": "imagenet", "tiny_wide": None}})


def test_one_backbone_may_be_named_by_a_string(valid):
    assert parameters.validate({**valid, "BACKBONES": "tiny"})["BACKBONES"] == ["tiny"]


def test_a_typo_in_a_name_gets_the_nearest_name():
    names = ["EPOCHS", "IMAGE_SIZE", "SEED"]
    assert parameters.unknown_names({"EPOCH": 3, "SEED": 1}, names) == (
        "unknown parameters EPOCH (did you mean 'EPOCHS'?); the notebook's parameters are "
        "EPOCHS, IMAGE_SIZE, SEED"
    )
    assert parameters.unknown_names({"SEED": 1}, names) is None


def test_a_local_path_is_never_searched_as_a_dataset(valid, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(ValueError, match="'data/extra-typo' is not a folder .a local path"):
        parameters.check({**valid, "EXTRA_DATA": ["data/extra-typo"]})


def test_names_checked_without_keras_are_the_ones_the_package_builds():
    from petals import predict

    assert set(parameters.BACKBONE_NAMES) == set(backbones.BACKBONES)
    assert set(parameters.NOISY_STUDENT_BACKBONES) == {
        name for name, spec in backbones.BACKBONES.items() if spec.efficientnet_variant
    }
    assert set(parameters.WITHOUT_IMAGENET_WEIGHTS) == {
        name for name, spec in backbones.BACKBONES.items() if not spec.has_imagenet_weights
    }
    assert parameters.TTA_VIEWS == tuple(predict.VIEWS)


def test_check_imports_neither_keras_nor_jax_nor_tensorflow(valid):
    """What the runner and build.py run before anything starts must not import the heavy
    libraries (seconds to tens of seconds on a busy machine)."""
    script = (
        "import json, sys\nfrom petals import parameters\n"
        f"parameters.check(json.loads({json.dumps(json.dumps(valid))}))\n"
        "print(sorted({'keras', 'jax', 'tensorflow'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_validate_notebook_sets_the_checked_values_back(valid):
    namespace = {**valid, "BACKBONES": "tiny", "WEIGHTS": "None"}
    checked = parameters.validate_notebook(namespace)
    assert namespace["BACKBONES"] == checked["BACKBONES"] == ["tiny"]
    assert namespace["WEIGHTS"] is None


def test_one_rule_for_a_folder_versus_a_dataset_slug(valid, tmp_path, monkeypatch):
    """The checks, papermill runs and kernels' dataset sources tell EXTRA_DATA's folders from
    Kaggle dataset slugs alike: `data/extra` is a folder when data/ exists here."""
    from kit import kernels, runner

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "extra").mkdir(parents=True)
    entries = ["data/extra", "./data", "gs://bucket/flowers", "someone/more-flowers"]
    parameters.check({**valid, "EXTRA_DATA": entries})
    assert [parameters.is_local_path(entry) for entry in entries] == [True, True, False, False]
    assert kernels.dataset_slugs(entries) == ["someone/more-flowers"]
    assert runner.absolute_paths({"EXTRA_DATA": entries})["EXTRA_DATA"] == [
        str(tmp_path / "data" / "extra"),
        str(tmp_path / "data"),
        *entries[2:],
    ]
    with pytest.raises(ValueError, match="neither a folder nor a Kaggle dataset slug"):
        parameters.check({**valid, "EXTRA_DATA": ["someone/Flowers_Extra"]})


def test_one_rule_for_none():
    assert [parameters.none_or_value(value) for value in ("None", "null", "none", None, 0)] == [
        None,
        None,
        "none",
        None,
        0,
    ]


def test_validate_refuses_to_run_without_the_stages_notebook_checks(valid):
    """The stages register what only the notebook can check (parameters imports none of them):
    validate before they are imported is refused, naming the parameters left unchecked."""
    script = (
        "import json\nfrom petals import parameters\n"
        f"parameters.validate(json.loads({json.dumps(json.dumps(valid))}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        check=False,
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("RuntimeError")
    assert all(name in last_line for name in ("DATA_DIR", "WEIGHTS", "EXTRA_DATA"))
