"""Check the notebook's parameters before anything slow runs, one clear error per mistake.

The notebook's cell tagged `parameters` is the one list of parameter names: `notebook_parameters`
reads it (for the runner and build.py, which refuse unknown names, naming the nearest known one).
`check` checks every value with one check per name (CHECKS), refusing a name nobody checks,
without importing Keras, JAX or TensorFlow: the runner and build.py call it before they start
anything. `validate` adds what only the running notebook can check (the data TensorFlow reads,
datasets attached to a kernel, the noisy-student converter's packages); the notebook calls it
through `validate_notebook`.
"""

import ast
import difflib
import numbers
import os
import re

COMPETITION_SIZES = (192, 224, 331, 512)
ACCELERATORS = ("tpu", "gpu", "cpu")
# The Keras backends the kit trains on (petals.accelerator chooses among them).
BACKENDS = ("jax", "tensorflow")
# YAML reads `null` as None but `None` as a string, and TOML has no null: both strings mean None.
NONE_STRINGS = ("None", "null")
PARAMETER_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
PARAMETER_TYPES = (type(None), bool, int, float, str, list, tuple, dict)
# The names parameters choose from, kept here so that checking them needs no Keras:
# tests/test_parameters.py holds them equal to petals.backbones.BACKBONES and petals.predict.VIEWS.
NOISY_STUDENT_BACKBONES = tuple(f"efficientnet_b{index}" for index in range(8))
WITHOUT_IMAGENET_WEIGHTS = ("tiny", "tiny_wide")
CONVNEXT_SIZES = ("tiny", "small", "base", "large", "xlarge")
# KerasHub image-classifier presets, by their preset names, and the Kaggle Model that holds each
# one's weights (owner/model/framework/variation/version, the form of kernel-metadata.json's
# model_sources). WEIGHTS "imagenet" means the preset's own weights for them.
KERAS_HUB_PRESETS = {
    name: f"keras/hgnetv2/keras/{name}/1"
    for name in (
        "hgnetv2_b4_ssld_stage2_ft_in1k",
        "hgnetv2_b5_ssld_stage1_in22k_in1k",
        "hgnetv2_b5_ssld_stage2_ft_in1k",
        "hgnetv2_b6_ssld_stage1_in22k_in1k",
        "hgnetv2_b6_ssld_stage2_ft_in1k",
    )
}
BACKBONE_NAMES = (
    "densenet201",
    *NOISY_STUDENT_BACKBONES,
    *(f"efficientnetv2_{size}" for size in ("b0", "b1", "b2", "b3", "s", "m", "l")),
    *(f"convnext_{size}" for size in CONVNEXT_SIZES),
    *KERAS_HUB_PRESETS,
    *WITHOUT_IMAGENET_WEIGHTS,
)
TTA_VIEWS = ("flip_lr", "flip_ud", "rot90", "rot270")
# A size folder of the competition's data (petals.data reads them by this name), and a Kaggle
# dataset: owner/slug, the slug 3-50 lowercase letters, digits and hyphens (use with fullmatch).
SIZE_FOLDER = re.compile(r"^tfrecords-jpeg-(\d+)x(\d+)$")
DATASET_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*/[a-z0-9][a-z0-9-]{1,48}[a-z0-9]")


# A percent script's cell marker, with the cell's tags: `# %% tags=["parameters"]`.
CELL_MARKER = re.compile(r"^# %%(?P<rest>.*)$")


def _tagged_cells(path, tag):
    """The sources of the code cells tagged `tag`.

    A percent script is read line by line here: importing jupytext takes seconds, and the
    runner and build.py read the parameters to refuse a mistake at once. An .ipynb is JSON.
    """
    if str(path).endswith(".ipynb"):
        import nbformat

        return [
            cell.source
            for cell in nbformat.read(path, as_version=4).cells
            if tag in cell.metadata.get("tags", [])
        ]
    cells, current = [], None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            marker = CELL_MARKER.match(line.rstrip("\n"))
            if marker:
                rest = marker.group("rest")
                current = [] if "[markdown]" not in rest and f'"{tag}"' in rest else None
                if current is not None:
                    cells.append(current)
            elif current is not None:
                current.append(line)
    return ["".join(lines) for lines in cells]


def notebook_parameters(path):
    """{name: default} of the cell tagged `parameters` of a notebook (.py percent script or .ipynb).

    Raises ValueError when the notebook is missing, has no such cell or several, or a default is
    not a literal.
    """
    if not os.path.isfile(path):
        raise ValueError(f"notebook {path} does not exist")
    cells = _tagged_cells(path, "parameters")
    if len(cells) != 1:
        raise ValueError(
            f"notebook {path} has {len(cells)} cells tagged 'parameters'; it needs exactly one"
        )
    defaults = {}
    for statement in ast.parse(cells[0]).body:
        if (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
        ):
            name = statement.targets[0].id
            try:
                defaults[name] = ast.literal_eval(statement.value)
            except ValueError:
                raise ValueError(
                    f"notebook {path}: the default of {name} is not a literal value"
                ) from None
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
        if not (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
            and PARAMETER_NAME.match(statement.targets[0].id)
        ):
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
        names = dict.fromkeys(name for source in history for name in _parameter_cell_names(source))
    else:
        names = [
            name
            for name, value in namespace.items()
            if PARAMETER_NAME.match(name) and isinstance(value, PARAMETER_TYPES)
        ]
    return {name: namespace[name] for name in names if name in namespace}


def none_or_value(value):
    """None for the strings 'None' and 'null' (YAML's and TOML's ways to write None), else the
    value: the one rule for them, in notebooks' parameters, papermill runs and sweep files."""
    return None if isinstance(value, str) and value in NONE_STRINGS else value


def plain_none(parameters):
    """A copy of `parameters` with the strings 'None' and 'null' turned into None."""
    return {name: none_or_value(value) for name, value in parameters.items()}


def _fail(name, value, expected):
    raise ValueError(f"{name} = {value!r} is not valid: expected {expected}")


def did_you_mean(word, choices):
    """` (did you mean 'rot90'?)` for the choice nearest to a misspelt `word`, else ''.

    A word that begins longer choices gets them (two at most): 'hgnetv2_b6' is the start of two
    KerasHub preset names, too short a part of either for a close match.
    """
    names = [str(choice) for choice in choices]
    close = (
        difflib.get_close_matches(str(word), names, n=1)
        or [name for name in names if str(word) and name.startswith(str(word))][:2]
    )
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def unknown_names(given, names):
    """The one-line error for parameter names the notebook does not have, or None if none.

    Each unknown name comes with the nearest known one: `EPOCH (did you mean 'EPOCHS'?)`.
    """
    unknown = sorted(set(given) - set(names))
    if not unknown:
        return None
    return (
        "unknown parameters "
        + ", ".join(name + did_you_mean(name, names) for name in unknown)
        + "; the notebook's parameters are "
        + ", ".join(names)
    )


def _integer(name, value, minimum):
    # bool is an int subclass in Python, but True epochs is a mistake, not a number.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        _fail(name, value, f"an integer ≥ {minimum}")


def _number(name, value, minimum=0.0, maximum=None):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f"≥ {minimum}"
        _fail(name, value, f"a number {bound}")


def _flag(name, value):
    if not isinstance(value, bool):
        _fail(name, value, "True or False")


def _choice(name, value, choices):
    if value not in choices:
        _fail(name, value, "one of " + ", ".join(map(repr, choices)))


def _strings(name, value, allow_empty=True):
    if (
        not isinstance(value, (list, tuple))
        or not all(isinstance(item, str) for item in value)
        or (not allow_empty and not value)
    ):
        _fail(name, value, "a list of strings" + ("" if allow_empty else " (at least one)"))


def _names(name, value, choices, what):
    """Each of `value` one of `choices`, once: the first that is not is named, with a guess."""
    for item in value:
        if item not in choices:
            raise ValueError(
                f"{name} = {list(value)!r} is not valid: {item!r} is not a {what}"
                f"{did_you_mean(item, choices)}; expected each of "
                f"{', '.join(choices)} at most once"
            )
    if len(set(value)) != len(value):
        _fail(name, value, f"each {what} once")


def _optional_path(name, value, meaning_of_none):
    if value is not None and (not isinstance(value, str) or not value):
        _fail(name, value, f"None ({meaning_of_none}) or a folder path")


def is_url(path):
    """gs://… and other URLs: read through TensorFlow's file system, not checked beforehand."""
    return "://" in path


def local_sizes(folder):
    """The image sizes of the `tfrecords-jpeg-SxS` folders in a local `folder`, ascending."""
    sizes = []
    for entry in os.listdir(folder):
        match = SIZE_FOLDER.match(entry)
        if (
            match
            and match.group(1) == match.group(2)
            and os.path.isdir(os.path.join(folder, entry))
        ):
            sizes.append(int(match.group(1)))
    return sorted(sizes)


# --- Checks of one value each: no Keras, JAX or TensorFlow, so a run is refused at once ---------


def _check_data_dir(name, value, parameters):
    _optional_path(name, value, "find the Kaggle data")
    if value is None or is_url(value):
        return
    if not os.path.isdir(value):
        raise ValueError(
            f"DATA_DIR {value!r} is not a folder; point it at the folder holding "
            "tfrecords-jpeg-SxS/"
        )
    if not local_sizes(value):
        folder_name = os.path.basename(os.path.normpath(value))
        hint = (
            "set DATA_DIR to its parent folder"
            if SIZE_FOLDER.match(folder_name) or folder_name in ("train", "val", "test")
            else "point DATA_DIR at the folder that holds them (e.g. data/demo)"
        )
        raise ValueError(f"DATA_DIR {value!r} holds no tfrecords-jpeg-SxS folder; {hint}")


def _check_image_size(name, value, parameters):
    _integer(name, value, 32)
    data_dir = parameters["DATA_DIR"]
    if data_dir is None:
        sizes, where = COMPETITION_SIZES, "the competition data"
    elif is_url(data_dir):
        return  # listed when the notebook reads it (petals.data.dataset_sizes)
    else:
        sizes, where = local_sizes(data_dir), data_dir
    if value not in sizes:
        _fail(name, value, f"one of {', '.join(map(str, sizes))} (the sizes in {where})")


def _check_backbones(name, value, parameters):
    _strings(name, value, allow_empty=False)
    _names(name, value, BACKBONE_NAMES, "backbone")


def _check_one_weights(name, weights, backbones):
    """WEIGHTS for `backbones`: None, a named choice they all have, or an existing file."""
    if weights is None:
        return
    if not isinstance(weights, str) or not weights:
        _fail(name, weights, "None, 'imagenet', 'noisy-student' or a weights file")
    if weights == "imagenet":
        without = [backbone for backbone in backbones if backbone in WITHOUT_IMAGENET_WEIGHTS]
        if without:
            raise ValueError(
                f"backbone {without[0]!r} has no ImageNet weights; set WEIGHTS = "
                "None (null or None on a command line) or a weights file"
            )
    elif weights == "noisy-student":
        without = [backbone for backbone in backbones if backbone not in NOISY_STUDENT_BACKBONES]
        if without:
            raise ValueError(
                f"noisy-student weights exist only for efficientnet_b0 ... "
                f"efficientnet_b7, not {without[0]!r}; use 'imagenet' for it"
            )
    elif not os.path.isfile(weights):
        raise ValueError(
            f"weights file {weights!r} does not exist; give the path of a backbone "
            "weights file, or one of: imagenet, noisy-student, None"
        )


def _check_weights(name, value, parameters):
    if not isinstance(value, dict):
        _check_one_weights(name, value, parameters["BACKBONES"])
        return
    if set(value) != set(parameters["BACKBONES"]):
        _fail(
            name,
            value,
            "one weights choice for all backbones, or a mapping with exactly "
            "the backbones " + ", ".join(parameters["BACKBONES"]) + " as keys",
        )
    for backbone, weights in value.items():
        _check_one_weights(name, none_or_value(weights), [backbone])


def weights_for(weights, backbone):
    """The WEIGHTS of one backbone: WEIGHTS itself, or its entry when WEIGHTS maps backbones
    to weights (e.g. noisy-student for EfficientNetB7, imagenet for DenseNet201)."""
    if isinstance(weights, dict):
        return none_or_value(weights[backbone])
    return weights


def is_local_path(entry):
    """An EXTRA_DATA entry meant as a folder of this machine rather than a dataset slug: it starts
    with /, ./, ../ or ~, or its first part is a folder here (`data/extra` when data/ exists).

    The one rule for a folder versus a Kaggle dataset: an entry that is neither a local path nor
    a URL (`is_url`) is a dataset slug (DATASET_SLUG), in the checks, papermill runs
    (kit.runner), the data (petals.data) and the kernels' dataset sources (kit.kernels).
    """
    first = entry.split("/")[0]
    return (
        entry.startswith(("/", "./", "../", "~"))
        or os.path.isdir(entry)
        or ("/" in entry and os.path.isdir(first))
    )


def _check_extra_data(name, value, parameters):
    _strings(name, value)
    if len(set(value)) != len(value):
        _fail(name, value, "each folder or dataset once")
    for entry in value:
        if is_local_path(entry) and not os.path.isdir(os.path.expanduser(entry)):
            raise ValueError(
                f"EXTRA_DATA entry {entry!r} is not a folder (a local path; no such folder here)"
            )
        if not is_local_path(entry) and not is_url(entry) and not DATASET_SLUG.fullmatch(entry):
            raise ValueError(
                f"EXTRA_DATA entry {entry!r} is neither a folder nor a Kaggle "
                "dataset slug 'owner/dataset-name' (3-50 lowercase letters, digits, "
                "hyphens); write folders as /path or ./path"
            )


def _check_tta_views(name, value, parameters):
    _strings(name, value)
    _names(name, value, TTA_VIEWS, "view")


def _check_cutmix(name, value, parameters):
    _number(name, value, 0.0, 1.0)
    if parameters["MIXUP"] + value > 1.0:
        raise ValueError(
            f"MIXUP + CUTMIX = {parameters['MIXUP'] + value:g} is more than 1: each "
            "image gets at most one of the two, so their probabilities must add up "
            "to at most 1"
        )


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


def check_value(name, value):
    """One parameter's value checked alone, by the bounds `check` applies: the package's
    functions check their arguments with it (LABEL_SMOOTHING in train.compile_model,
    HEAD_DROPOUT in backbones.build_model), so a bound has one source."""
    CHECKS[name](name, value, {})


# --- What only the running notebook can check (it imports Keras and TensorFlow) -----------------
# The stages that read the data or build the models register these checks when they are imported
# (petals.data: DATA_DIR, EXTRA_DATA; petals.backbones: WEIGHTS), so this module imports none
# of them. `validate` runs them after CHECKS, in CHECKS's order, and refuses to run without one.
NOTEBOOK_CHECKED = ("DATA_DIR", "WEIGHTS", "EXTRA_DATA")
NOTEBOOK_CHECKS = {}


def register_notebook_check(name, check_in_notebook):
    """Register the check of parameter `name` that only the running notebook can make; it is
    called with the checked parameters and raises ValueError as CHECKS do."""
    if name not in NOTEBOOK_CHECKED:
        _fail("notebook check", name, "one of " + ", ".join(NOTEBOOK_CHECKED))
    NOTEBOOK_CHECKS[name] = check_in_notebook


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
    "SHIFT_PIXELS": lambda name, value, parameters: _number(
        name, value, 0, parameters["IMAGE_SIZE"]
    ),
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
    "COMPILE_CACHE_FROM": _simple(_optional_path, "no cache to start from"),
    "CLASS_NAMES": _check_class_names,
}


def check(parameters):
    """Check every parameter's value without importing Keras, JAX or TensorFlow (a second at
    most); return them with 'None'/'null' strings made None and one BACKBONES name made a list.

    Raises ValueError naming the parameter and the allowed values, for a parameter no check
    knows (add its check to CHECKS), and for a checked parameter that is missing. The runner and
    build.py call this before they start anything; the notebook calls `validate`.
    """
    parameters = plain_none(parameters)
    if isinstance(parameters.get("BACKBONES"), str):  # "one name trains one model"
        parameters["BACKBONES"] = [parameters["BACKBONES"]]
    unchecked = sorted(set(parameters) - set(CHECKS))
    if unchecked:
        raise ValueError(
            f"parameters without a check: {', '.join(unchecked)}; add one to "
            "CHECKS in petals/parameters.py"
        )
    missing = [name for name in CHECKS if name not in parameters]
    if missing:
        raise ValueError(
            "parameters missing: " + ", ".join(missing) + " (the parameters cell "
            "must hold only NAME = literal lines)"
        )
    for name, check_value in CHECKS.items():
        check_value(name, parameters[name], parameters)
    return parameters


def validate(parameters):
    """`check`, then what only the notebook can check: the data TensorFlow reads (gs:// too),
    the EXTRA_DATA datasets attached to a kernel, and weights that need the converter."""
    unregistered = [name for name in NOTEBOOK_CHECKED if name not in NOTEBOOK_CHECKS]
    if unregistered:
        raise RuntimeError(
            f"no notebook check registered for {', '.join(unregistered)}: import petals.data and "
            "petals.backbones before petals.parameters.validate"
        )
    parameters = check(parameters)
    for name in CHECKS:
        if name in NOTEBOOK_CHECKS:
            NOTEBOOK_CHECKS[name](parameters)
    return parameters


def validate_notebook(namespace):
    """Validate the parameters of a running notebook (`globals()`) and set the checked values
    back in it ('None' → None, one backbone → a list); returns them for metrics.json."""
    checked = validate(namespace_parameters(namespace))
    namespace.update(checked)
    return checked
