"""Check the notebook's parameters before anything slow runs, one clear error per mistake."""

import numbers
import os

from petals.accelerator import BACKENDS

# The notebook's parameters cell, in order; validate() checks each of them.
NAMES = (
    "IMAGE_SIZE", "BACKBONES", "WEIGHTS", "EPOCHS", "BATCH_SIZE_PER_REPLICA", "LR_START", "LR_MAX",
    "LR_MIN", "LR_RAMP_UP_EPOCHS", "LR_SUSTAIN_EPOCHS", "LR_DECAY", "ROTATION_DEGREES",
    "SHEAR_DEGREES", "ZOOM_STDDEV", "SHIFT_PIXELS", "FLIP", "TRAIN_ON_VALIDATION", "EXTRA_DATA",
    "EXCLUDED_IDS", "LABEL_SMOOTHING", "HEAD_DROPOUT", "MIXUP", "CUTMIX", "TTA_VIEWS", "BLEND_STEP",
    "SEED", "DATA_DIR", "OUTPUT_DIR", "MAX_STEPS_PER_EPOCH", "KERAS_BACKEND",
    "ACCELERATOR", "CLASS_NAMES", "COMPILE_CACHE_DIR",
)
COMPETITION_SIZES = (192, 224, 331, 512)
ACCELERATORS = ("tpu", "gpu", "cpu")
TTA_VIEW_NAMES = ("flip_lr", "flip_ud", "rot90", "rot270")


def _fail(name, value, expected):
    raise ValueError(f"{name} = {value!r} is not valid: expected {expected}")


def _integer(name, value, minimum):
    # bool is an int subclass in Python, but True epochs is a mistake, not a number.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        _fail(name, value, f"an integer ≥ {minimum}")


def _number(name, value, minimum=0.0, maximum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < minimum or (
            maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f"≥ {minimum}"
        _fail(name, value, f"a number {bound}")


def _flag(name, value):
    if not isinstance(value, bool):
        _fail(name, value, "True or False")


def _choice(name, value, choices):
    if value not in choices:
        _fail(name, value, "one of " + ", ".join(map(repr, choices)))


def _strings(name, value, allow_empty=True):
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value) \
            or (not allow_empty and not value):
        _fail(name, value, "a list of strings" + ("" if allow_empty else " (at least one)"))


def validate(parameters):
    """Raise ValueError naming the parameter and the allowed values; return the parameters.

    Backbone names and weights are checked against petals.backbones, which imports Keras: call
    this after the Keras backend has been chosen.
    """
    from petals import backbones

    missing = [name for name in NAMES if name not in parameters]
    if missing:
        raise ValueError("parameters missing: " + ", ".join(missing))
    p = parameters
    _integer("IMAGE_SIZE", p["IMAGE_SIZE"], 32)
    if p["DATA_DIR"] is None and p["IMAGE_SIZE"] not in COMPETITION_SIZES:
        _fail("IMAGE_SIZE", p["IMAGE_SIZE"],
              "one of " + ", ".join(map(str, COMPETITION_SIZES)) + " for the competition data")
    _strings("BACKBONES", p["BACKBONES"], allow_empty=False)
    for name in p["BACKBONES"]:
        backbones.validate_backbone(name)
    if len(set(p["BACKBONES"])) != len(p["BACKBONES"]):
        _fail("BACKBONES", p["BACKBONES"], "each backbone once (models are named after them)")
    backbones.validate_weights(p["WEIGHTS"], p["BACKBONES"])
    _integer("EPOCHS", p["EPOCHS"], 1)
    _integer("BATCH_SIZE_PER_REPLICA", p["BATCH_SIZE_PER_REPLICA"], 1)
    for name in ("LR_START", "LR_MAX", "LR_MIN"):
        _number(name, p[name])
    _integer("LR_RAMP_UP_EPOCHS", p["LR_RAMP_UP_EPOCHS"], 0)
    _integer("LR_SUSTAIN_EPOCHS", p["LR_SUSTAIN_EPOCHS"], 0)
    _number("LR_DECAY", p["LR_DECAY"], 1e-9, 1.0)
    for name in ("TRAIN_ON_VALIDATION", "FLIP"):
        _flag(name, p[name])
    _strings("EXCLUDED_IDS", p["EXCLUDED_IDS"])
    _strings("EXTRA_DATA", p["EXTRA_DATA"])
    _number("LABEL_SMOOTHING", p["LABEL_SMOOTHING"], 0.0, 0.999)
    _number("HEAD_DROPOUT", p["HEAD_DROPOUT"], 0.0, 0.95)
    _number("MIXUP", p["MIXUP"], 0.0, 1.0)
    _number("CUTMIX", p["CUTMIX"], 0.0, 1.0)
    _strings("TTA_VIEWS", p["TTA_VIEWS"])
    for view in p["TTA_VIEWS"]:
        _choice("TTA_VIEWS", view, TTA_VIEW_NAMES)
    if len(set(p["TTA_VIEWS"])) != len(p["TTA_VIEWS"]):
        _fail("TTA_VIEWS", p["TTA_VIEWS"], "each view once")
    _integer("SEED", p["SEED"], 0)
    if p["DATA_DIR"] is not None and not isinstance(p["DATA_DIR"], str):
        _fail("DATA_DIR", p["DATA_DIR"], "None (find the Kaggle data) or a folder path")
    if not isinstance(p["OUTPUT_DIR"], str) or not p["OUTPUT_DIR"]:
        _fail("OUTPUT_DIR", p["OUTPUT_DIR"], "a folder path")
    if os.path.exists(p["OUTPUT_DIR"]) and not os.path.isdir(p["OUTPUT_DIR"]):
        _fail("OUTPUT_DIR", p["OUTPUT_DIR"], "a folder, not a file")
    if p["MAX_STEPS_PER_EPOCH"] is not None:
        _integer("MAX_STEPS_PER_EPOCH", p["MAX_STEPS_PER_EPOCH"], 1)
    _choice("KERAS_BACKEND", p["KERAS_BACKEND"], (None, *BACKENDS))
    _choice("ACCELERATOR", p["ACCELERATOR"], (None, *ACCELERATORS))
    if p["COMPILE_CACHE_DIR"] is not None and not isinstance(p["COMPILE_CACHE_DIR"], str):
        _fail("COMPILE_CACHE_DIR", p["COMPILE_CACHE_DIR"], "None or a folder path")
    if p["CLASS_NAMES"] is not None:
        _strings("CLASS_NAMES", p["CLASS_NAMES"], allow_empty=False)
    _number("ROTATION_DEGREES", p["ROTATION_DEGREES"], 0, 180)
    _number("SHEAR_DEGREES", p["SHEAR_DEGREES"], 0, 90)
    _number("ZOOM_STDDEV", p["ZOOM_STDDEV"], 0, 1)
    _number("SHIFT_PIXELS", p["SHIFT_PIXELS"], 0, p["IMAGE_SIZE"])
    _number("BLEND_STEP", p["BLEND_STEP"], 0.01, 1.0)
    return parameters
