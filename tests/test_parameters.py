import pytest

from petals import parameters

VALID = {
    "IMAGE_SIZE": 32, "BACKBONES": ["tiny"], "WEIGHTS": None, "EPOCHS": 1,
    "BATCH_SIZE_PER_REPLICA": 8, "LR_START": 1e-5, "LR_MAX": 1e-3, "LR_MIN": 1e-5,
    "LR_RAMP_UP_EPOCHS": 1, "LR_SUSTAIN_EPOCHS": 0, "LR_DECAY": 0.8, "ROTATION_DEGREES": 15.0,
    "SHEAR_DEGREES": 5.0, "ZOOM_STDDEV": 0.1, "SHIFT_PIXELS": 2.0, "FLIP": True,
    "TRAIN_ON_VALIDATION": False, "EXCLUDED_IDS": [], "TTA_VIEWS": ["flip_lr"], "EXTRA_DATA": [],
    "LABEL_SMOOTHING": 0.0, "HEAD_DROPOUT": 0.0, "MIXUP": 0.0, "CUTMIX": 0.0, "BLEND_STEP": 0.05,
    "SEED": 1,
    "DATA_DIR": "/data", "OUTPUT_DIR": "out", "MAX_STEPS_PER_EPOCH": None,
    "KERAS_BACKEND": None, "ACCELERATOR": None, "CLASS_NAMES": None, "COMPILE_CACHE_DIR": None,
}


def test_valid_parameters_pass():
    assert parameters.validate(dict(VALID)) == VALID
    assert set(VALID) == set(parameters.NAMES)


@pytest.mark.parametrize("name, value, message", [
    ("IMAGE_SIZE", "512", "IMAGE_SIZE = '512' is not valid: expected an integer"),
    ("EPOCHS", True, "EPOCHS = True"),
    ("EPOCHS", 0, "an integer ≥ 1"),
    ("BACKBONES", "tiny", "a list of strings"),
    ("BACKBONES", [], "at least one"),
    ("BACKBONES", ["resnet9000"], "unknown backbone 'resnet9000'"),
    ("WEIGHTS", "/no/such/file.h5", "does not exist"),
    ("LR_DECAY", 1.5, "LR_DECAY"),
    ("TTA_VIEWS", ["spin"], "one of"),
    ("LABEL_SMOOTHING", 1.0, "a number in"),
    ("EXCLUDED_IDS", "a762df180", "a list of strings"),
    ("KERAS_BACKEND", "torch", "one of None, 'jax', 'tensorflow'"),
    ("ACCELERATOR", "TPU", "one of None, 'tpu', 'gpu', 'cpu'"),
    ("MAX_STEPS_PER_EPOCH", 0, "MAX_STEPS_PER_EPOCH"),
    ("SHIFT_PIXELS", 64.0, "SHIFT_PIXELS"),
])
def test_each_mistake_names_the_parameter(name, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parameters.validate({**VALID, name: value})


def test_competition_data_needs_a_competition_size():
    with pytest.raises(ValueError, match="192, 224, 331, 512"):
        parameters.validate({**VALID, "DATA_DIR": None, "IMAGE_SIZE": 300})
    parameters.validate({**VALID, "DATA_DIR": None, "IMAGE_SIZE": 331})


def test_missing_parameter():
    incomplete = dict(VALID)
    del incomplete["TTA_VIEWS"]
    with pytest.raises(ValueError, match="parameters missing: TTA_VIEWS"):
        parameters.validate(incomplete)
