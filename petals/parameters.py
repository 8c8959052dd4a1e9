"""Check the notebook's parameters before anything slow runs, one clear error per mistake.

The notebook's cell tagged `parameters` is the one list of parameter names: `notebook_parameters`
reads it (for the runner and build.py, which refuse unknown names), and `validate` checks what
that cell defined with one check per name, refusing a name nobody checks.
"""

import ast
import numbers
import os
import re

from petals.accelerator import BACKENDS

COMPETITION_SIZES = (192, 224, 331, 512)
ACCELERATORS = ("tpu", "gpu", "cpu")
# YAML reads `null` as None but `None` as a string, and TOML has no null: both strings mean None.
NONE_STRINGS = ("None", "null")
PARAMETER_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
PARAMETER_TYPES = (type(None), bool, int, float, str, list, tuple, dict)


def notebook_parameters(path):
    """{name: default} of the cell tagged `parameters` of a notebook (.py percent script or .ipynb).

    Raises ValueError when the notebook is missing, has no such cell or several, or a default is
    not a literal.
    """
    import jupytext

    if not os.path.isfile(path):
        raise ValueError(f"notebook {path} does not exist")
    cells = [cell for cell in jupytext.read(path).cells
             if "parameters" in cell.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"notebook {path} has {len(cells)} cells tagged 'parameters'; "
                         "it needs exactly one")
    defaults = {}
    for statement in ast.parse(cells[0].source).body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 \
                and isinstance(statement.targets[0], ast.Name):
            name = statement.targets[0].id
            try:
                defaults[name] = ast.literal_eval(statement.value)
            except ValueError:
                raise ValueError(f"notebook {path}: the default of {name} is not a literal "
                                 "value") from None
    return defaults


def _parameter_cell_names(source):
    """The names a cell assigns if it is a parameters cell, else an empty list.

    A parameters cell holds only assignments of literals to upper-case names (comments aside):
    the notebook's `parameters` cell and papermill's `injected-parameters` cell are such cells,
    no other cell of the notebook is.
    """
    try:
        statements = ast.parse(source).body
    except SyntaxError:
        return []
    names = []
    for statement in statements:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)
                and PARAMETER_NAME.match(statement.targets[0].id)):
            return []
        try:
            ast.literal_eval(statement.value)
        except ValueError:
            return []
        names.append(statement.targets[0].id)
    return names


def namespace_parameters(namespace):
    """The parameters, with their current values, of a running notebook (`globals()`).

    Works where no notebook file exists (a built Kaggle kernel): the names come from the cells
    IPython has run (its input history `In`) that are parameters cells, so an import or a later
    cell's constant is never taken for a parameter, and rerunning cells in Jupyter changes
    nothing. Without IPython, every upper-case global holding plain data counts.
    """
    history = namespace.get("In")
    if isinstance(history, list):
        names = dict.fromkeys(name for source in history
                              for name in _parameter_cell_names(source))
    else:
        names = [name for name, value in namespace.items()
                 if PARAMETER_NAME.match(name) and isinstance(value, PARAMETER_TYPES)]
    return {name: namespace[name] for name in names if name in namespace}


def plain_none(parameters):
    """A copy of `parameters` with the strings 'None' and 'null' turned into None."""
    return {name: None if isinstance(value, str) and value in NONE_STRINGS else value
            for name, value in parameters.items()}


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


def _optional_path(name, value, meaning_of_none):
    if value is not None and (not isinstance(value, str) or not value):
        _fail(name, value, f"None ({meaning_of_none}) or a folder path")


def _check_data_dir(name, value, parameters):
    from petals import data

    _optional_path(name, value, "find the Kaggle data")
    if value is not None:
        data.dataset_sizes(value)  # an empty or wrong folder is a DATA_DIR mistake


def _check_image_size(name, value, parameters):
    _integer(name, value, 32)
    if parameters["DATA_DIR"] is None:
        sizes, where = COMPETITION_SIZES, "the competition data"
    else:
        from petals import data

        sizes, where = data.dataset_sizes(parameters["DATA_DIR"]), parameters["DATA_DIR"]
    if value not in sizes:
        _fail(name, value, f"one of {', '.join(map(str, sizes))} (the sizes in {where})")


def _check_backbones(name, value, parameters):
    from petals import backbones

    _strings(name, value, allow_empty=False)
    for backbone in value:
        backbones.validate_backbone(backbone)
    if len(set(value)) != len(value):
        _fail(name, value, "each backbone once (models are named after them)")


def _check_weights(name, value, parameters):
    from petals import backbones

    if not isinstance(value, dict):
        backbones.validate_weights(value, parameters["BACKBONES"])
        return
    if set(value) != set(parameters["BACKBONES"]):
        _fail(name, value, "one weights choice for all backbones, or a mapping with exactly "
              "the backbones " + ", ".join(parameters["BACKBONES"]) + " as keys")
    for backbone, weights in value.items():
        backbones.validate_weights(plain_none({"weights": weights})["weights"], backbone)


def weights_for(weights, backbone):
    """The WEIGHTS of one backbone: WEIGHTS itself, or its entry when WEIGHTS maps backbones
    to weights (e.g. noisy-student for EfficientNetB7, imagenet for DenseNet201)."""
    if isinstance(weights, dict):
        return plain_none({"weights": weights[backbone]})["weights"]
    return weights


def _check_extra_data(name, value, parameters):
    from petals import data

    _strings(name, value)
    if len(set(value)) != len(value):
        _fail(name, value, "each folder or dataset once")
    for entry in value:  # finds the folders now; their records are read in the data step
        data.extra_sources(entry, parameters["IMAGE_SIZE"])


def _check_tta_views(name, value, parameters):
    from petals import predict  # the views are defined where they are computed

    _strings(name, value)
    predict.validate_views(value)


def _check_cutmix(name, value, parameters):
    from petals import mixing

    _number(name, value, 0.0, 1.0)
    mixing.validate_probabilities(parameters["MIXUP"], value)


def _check_output_dir(name, value, parameters):
    if not isinstance(value, str) or not value:
        _fail(name, value, "a folder path")
    if os.path.exists(value) and not os.path.isdir(value):
        _fail(name, value, "a folder, not a file")


def _check_class_names(name, value, parameters):
    if value is not None:
        _strings(name, value, allow_empty=False)


def _check_step_cap(name, value, parameters):
    if value is not None:
        _integer(name, value, 1)


def _simple(check, *arguments, **bounds):
    """A check of one value alone, in the (name, value, parameters) form of CHECKS."""
    return lambda name, value, parameters: check(name, value, *arguments, **bounds)


# One check per parameter, run in this order: a check may read the parameters checked before it.
CHECKS = {
    "DATA_DIR": _check_data_dir,
    "IMAGE_SIZE": _check_image_size,
    "BACKBONES": _check_backbones,
    "WEIGHTS": _check_weights,
    "EPOCHS": _simple(_integer, 1),
    "BATCH_SIZE_PER_REPLICA": _simple(_integer, 1),
    "LR_START": _simple(_number),
    "LR_MAX": _simple(_number),
    "LR_MIN": _simple(_number),
    "LR_RAMP_UP_EPOCHS": _simple(_integer, 0),
    "LR_SUSTAIN_EPOCHS": _simple(_integer, 0),
    "LR_DECAY": _simple(_number, 1e-9, 1.0),
    "ROTATION_DEGREES": _simple(_number, 0, 180),
    "SHEAR_DEGREES": _simple(_number, 0, 90),
    "ZOOM_STDDEV": _simple(_number, 0, 1),
    "SHIFT_PIXELS": lambda name, value, parameters: _number(name, value, 0,
                                                            parameters["IMAGE_SIZE"]),
    "FLIP": _simple(_flag),
    "TRAIN_ON_VALIDATION": _simple(_flag),
    "EXTRA_DATA": _check_extra_data,
    "EXCLUDED_IDS": _simple(_strings),
    "LABEL_SMOOTHING": _simple(_number, 0.0, 0.999),
    "HEAD_DROPOUT": _simple(_number, 0.0, 0.95),
    "MIXUP": _simple(_number, 0.0, 1.0),
    "CUTMIX": _check_cutmix,
    "TTA_VIEWS": _check_tta_views,
    "BLEND_STEP": _simple(_number, 0.01, 1.0),
    "SEED": _simple(_integer, 0),
    "OUTPUT_DIR": _check_output_dir,
    "MAX_STEPS_PER_EPOCH": _check_step_cap,
    "KERAS_BACKEND": _simple(_choice, (None, *BACKENDS)),
    "ACCELERATOR": _simple(_choice, (None, *ACCELERATORS)),
    "COMPILE_CACHE_DIR": _simple(_optional_path, "no cache"),
    "CLASS_NAMES": _check_class_names,
}


def validate(parameters):
    """Check every parameter; return them with 'None'/'null' strings made None.

    Raises ValueError naming the parameter and the allowed values, for a parameter no check
    knows (add its check to CHECKS), and for a checked parameter that is missing. Backbone names
    and weights are checked against petals.backbones, which imports Keras: call this after the
    Keras backend has been chosen. In the notebook:
    `PARAMETERS = parameters.validate(parameters.namespace_parameters(globals()))`, then
    `globals().update(PARAMETERS)`.
    """
    parameters = plain_none(parameters)
    unchecked = sorted(set(parameters) - set(CHECKS))
    if unchecked:
        raise ValueError(f"parameters without a check: {', '.join(unchecked)}; add one to "
                         "CHECKS in petals/parameters.py")
    missing = [name for name in CHECKS if name not in parameters]
    if missing:
        raise ValueError("parameters missing: " + ", ".join(missing) + " (the parameters cell "
                         "must hold only NAME = literal lines)")
    for name, check in CHECKS.items():
        check(name, parameters[name], parameters)
    return parameters
