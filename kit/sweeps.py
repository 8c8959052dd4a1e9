"""Sweeps as data: a TOML file naming a notebook, fixed parameters, a grid of variants, and
named variants (`[variants.NAME]` tables: a configuration the grid does not express, such as the
competition's recipe), which come after the grid's; and each variant's local run folders
(`local_run_dir`)."""

import itertools
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from slugify import slugify

from petals.parameters import (
    ACCELERATORS,
    none_or_value,
    notebook_parameters,
    unknown_names,
)

REPOSITORY = Path(__file__).resolve().parent.parent
# Kaggle refuses slugs under 5 characters; long titles are cut by Kaggle, so keep them short.
MAXIMUM_SLUG = 50


@dataclass(frozen=True)
class Variant:
    """One run of a sweep: its name (also its Kaggle slug) and the parameters it injects."""

    slug: str
    title: str
    notebook: str
    parameters: dict = field(hash=False)


@dataclass(frozen=True)
class Sweep:
    name: str
    notebook: str
    accelerator: str
    fixed: dict
    grid: dict
    variants: tuple


def _value_name(name, value):
    """How a grid value reads in a run name: sizes bare, lists joined with +, others name-value."""
    if isinstance(value, (list, tuple)):
        text = "+".join(map(str, value))
    else:
        text = str(value)
    return text if name in ("IMAGE_SIZE", "BACKBONES") else f"{name.lower()}-{text}"


def variant_title(prefix, parameters, grid_names):
    """`Petals <prefix> 512 densenet201+efficientnet_b7 …`: the grid values in grid order."""
    return " ".join(
        ["Petals", prefix, *(_value_name(name, parameters[name]) for name in grid_names)]
    ).strip()


def _variant(path, sweep_name, title, notebook, parameters, titled=False):
    """A Variant whose slug Kaggle accepts; `title` is a named variant's name unless `titled`."""
    title = title if titled else f"Petals {sweep_name} {title}"
    slug = slugify(title)
    if not 5 <= len(slug) <= MAXIMUM_SLUG:
        raise ValueError(
            f"sweep file {path}: run name {slug!r} must have 5 to {MAXIMUM_SLUG} "
            "characters; shorten the sweep's or the variant's name"
        )
    return Variant(slug, title, notebook, parameters)


def load(path):
    """Read a sweep file; every mistake is a ValueError naming the file and the key."""
    path = Path(path)
    document = _read(path)
    name = document.get("name", path.stem)
    notebook = document.get("notebook", "notebooks/flowers.py")
    accelerator = document.get("accelerator", "tpu")
    if accelerator not in ACCELERATORS:
        raise ValueError(
            f"sweep file {path}: accelerator {accelerator!r} is not one of "
            + ", ".join(ACCELERATORS)
        )
    if not (REPOSITORY / notebook).is_file():
        raise ValueError(f"sweep file {path}: notebook {notebook} does not exist")
    fixed, grid, named = _parameter_tables(path, document, notebook)
    variants = []
    # Without a grid, the product has one empty combination: the fixed parameters alone, a
    # variant of its own unless named variants say what to run.
    combinations = itertools.product(*grid.values()) if grid or not named else ()
    for values in combinations:
        parameters = {**fixed, **dict(zip(grid, values, strict=True))}
        variants.append(
            _variant(
                path,
                name,
                variant_title(name, parameters, list(grid)),
                notebook,
                parameters,
                titled=True,
            )
        )
    for variant_name, table in named.items():
        # A named variant starts from the fixed parameters; the grid does not apply to it.
        variants.append(_variant(path, name, variant_name, notebook, {**fixed, **table}))
    slugs = [variant.slug for variant in variants]
    if len(set(slugs)) != len(slugs):
        raise ValueError(
            f"sweep file {path}: two variants share a name; grid values must differ in their text"
        )
    return Sweep(name, notebook, accelerator, fixed, grid, tuple(variants))


def _read(path):
    """The sweep file's TOML document, its top-level keys checked."""
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"sweep file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"sweep file {path} is not valid TOML: {error}") from None
    keys = ("name", "notebook", "accelerator", "parameters", "grid", "variants")
    unknown = set(document) - set(keys)
    if unknown:
        raise ValueError(
            f"sweep file {path}: unknown keys {', '.join(sorted(unknown))}; "
            "allowed: " + ", ".join(keys)
        )
    return document


def _parameter_tables(path, document, notebook):
    """(fixed, grid, named variants) of a sweep file, "None"/"null" made None, every name one of
    the notebook's parameters."""
    fixed = {key: none_or_value(value) for key, value in document.get("parameters", {}).items()}
    grid = {
        key: [none_or_value(value) for value in values] if isinstance(values, list) else values
        for key, values in document.get("grid", {}).items()
    }
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"sweep file {path}: grid.{key} must be a non-empty list of values")
    named = document.get("variants", {})
    for variant_name, table in named.items():
        if not isinstance(table, dict):
            raise ValueError(
                f"sweep file {path}: variants.{variant_name} must be a table of parameters"
            )
    named = {
        variant_name: {key: none_or_value(value) for key, value in table.items()}
        for variant_name, table in named.items()
    }
    names = notebook_parameters(str(REPOSITORY / notebook))  # the notebook's parameters cell
    given = set(fixed) | set(grid) | {key for table in named.values() for key in table}
    unknown = unknown_names(given, names)
    if unknown:
        raise ValueError(f"sweep file {path}: {unknown}")
    overlap = set(fixed) & set(grid)
    if overlap:
        raise ValueError(
            f"sweep file {path}: {', '.join(sorted(overlap))} both fixed and in the grid"
        )
    return fixed, grid, named


def local_run_dir(run_dir, rerun=False):
    """(folder for a local run of a variant, finished already?).

    The latest `local-N` if it finished and no `rerun` is asked; otherwise a new `local-N+1`, so
    an interrupted run's notebook stays for diagnosis and nothing is overwritten. A run finished
    when its metrics.json says `"complete": true`: the notebook rewrites it after each model with
    `false` until the last one, so a run killed midway is not taken for finished (a metrics.json
    without the key, from before it existed, is a finished run's).
    """
    numbers = sorted(
        int(path.name.split("-")[1])
        for path in Path(run_dir).glob("local-*")
        if path.name.split("-")[1].isdigit()
    )
    latest = Path(run_dir) / f"local-{numbers[-1]}" if numbers else None
    if latest is not None and not rerun and finished(latest / "metrics.json"):
        return latest, True
    return Path(run_dir) / f"local-{(numbers[-1] if numbers else 0) + 1}", False


def finished(metrics_path):
    """Whether a run's metrics.json records a finished run (see local_run_dir)."""
    path = Path(metrics_path)
    return path.exists() and json.loads(path.read_text()).get("complete", True) is True
