"""One table over every run with a metrics.json: Kaggle versions, local sweeps, `make demo`
and the runner, at any depth under the runs folder: parameters, models finished, F1, blend
weights, speed.

A run is **partial** when it stopped before its last model (Kaggle's time limit, an error, a
cancel) but after writing a valid submission of the models it finished: its metrics.json says
`"complete": false`, or `build.py` collected it from a version that did not end COMPLETE
(`collected.json` records `partial`). Its submission and models are usable; what is missing is
named.
"""

import csv
import io
import json
from pathlib import Path

from petals.files import write_atomically

COLUMNS = (
    "variant",
    "run",
    "IMAGE_SIZE",
    "BACKBONES",
    "EPOCHS",
    "models",
    "validation F1",
    "in-sample F1",
    "blend weights",
    "seconds/epoch",
    "images/s",
    "image",
    "files",
)


def validation_f1(metrics):
    """The honest blend F1: weights searched on one half of validation, scored on the other.

    Older metrics.json (no `blend_f1_in_sample`) held only the in-sample figure as `blend_f1`;
    with one model nothing was tuned, so it is honest too; for an older ensemble it is not, and
    None is returned.
    """
    if "blend_f1_in_sample" in metrics:
        return metrics.get("blend_f1")
    return metrics.get("blend_f1") if len(metrics.get("blend_weights", {})) <= 1 else None


def in_sample_f1(metrics):
    """The optimistic blend F1: weights tuned and scored on the same validation images."""
    return metrics.get("blend_f1_in_sample", metrics.get("blend_f1"))


def image_fingerprint(metrics):
    """The fingerprint of the image the run ran on (petals.image), or None before it was kept."""
    return (metrics.get("image") or {}).get("fingerprint")


# What `build.py collect` writes beside a collected version's outputs (kit.collect).
COLLECTED_FILE = "collected.json"


def models(metrics):
    """(finished, planned): the models a run's submission blends (`members`; older records:
    those it timed) and the BACKBONES it was asked to train."""
    finished = list(metrics.get("members", metrics.get("seconds_per_epoch", {})))
    return finished, list(metrics.get("parameters", {}).get("BACKBONES", []))


def models_text(finished, planned):
    """`1 of 2 models, efficientnet_b7 missing` (`2 of 2 models`)."""
    missing = [name for name in planned if name not in finished]
    return f"{len(finished)} of {len(planned)} models" + (
        f", {', '.join(missing)} missing" if missing else ""
    )


def is_partial(folder, metrics):
    """Whether the run in `folder` stopped before its last model (see the module's docstring)."""
    collected = Path(folder) / COLLECTED_FILE
    record = json.loads(collected.read_text()) if collected.exists() else {}
    return metrics.get("complete") is False or bool(record.get("partial"))


def models_cell(folder, metrics):
    """The table's `2 of 2` or `1 of 2 partial`; empty for records without `complete` (older
    runs, blends) unless collected as partial."""
    partial = is_partial(folder, metrics)
    if "complete" not in metrics and not partial:
        return ""
    finished, planned = models(metrics)
    return f"{len(finished)} of {len(planned)}" + (" partial" if partial else "")


def f1_text(value):
    return "" if value is None else f"{value:.4f}"


def run_folders(runs_dir):
    """Every folder under runs_dir holding metrics.json, skipping staging (dot) folders."""
    runs_dir = Path(runs_dir)
    for metrics_path in sorted(runs_dir.rglob("metrics.json")):
        parts = metrics_path.parent.relative_to(runs_dir).parts
        if not any(part.startswith(".") for part in parts):  # a killed run's staging folder
            yield metrics_path.parent, parts


def rows(runs_dir):
    """A row per run folder: `runs/<variant>/<run>/` (deeper: the rest joined), or `runs/<run>/`
    (make demo, the runner) with run `.`; sorted by folder."""
    table = []
    for folder, parts in run_folders(runs_dir):
        metrics = json.loads((folder / "metrics.json").read_text())
        parameters = metrics.get("parameters", {})
        seconds = list(metrics.get("seconds_per_epoch", {}).values())
        speeds = list(metrics.get("images_per_second", {}).values())
        table.append(
            {
                "variant": parts[0] if parts else ".",
                "run": "/".join(parts[1:]) or ".",
                "IMAGE_SIZE": parameters.get("IMAGE_SIZE", ""),
                "BACKBONES": "+".join(parameters.get("BACKBONES", [])),
                "EPOCHS": parameters.get("EPOCHS", ""),
                "models": models_cell(folder, metrics),
                "validation F1": f1_text(validation_f1(metrics)),
                "in-sample F1": f1_text(in_sample_f1(metrics)),
                "blend weights": " ".join(
                    f"{name}:{float(weight):.2f}"
                    for name, weight in metrics.get("blend_weights", {}).items()
                ),
                "seconds/epoch": f"{sum(seconds) / len(seconds):.1f}" if seconds else "",
                "images/s": f"{sum(speeds) / len(speeds):.0f}" if speeds else "",
                "image": image_fingerprint(metrics) or "",
                "files": str(folder),
            }
        )
    return table


def markdown(table):
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[column]) for column in COLUMNS) + " |" for row in table]
    return "\n".join(lines) + "\n"


def csv_text(table):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def write_text(path, text):
    """Write (or rewrite) a text file atomically (the results table)."""
    write_atomically(path, lambda handle: handle.write(text), overwrite=True)
