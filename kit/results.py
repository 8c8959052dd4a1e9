"""One table over every collected or local run: parameters, F1, blend weights, speed, files."""

import csv
import io
import json
from pathlib import Path

COLUMNS = ("variant", "run", "IMAGE_SIZE", "BACKBONES", "EPOCHS", "validation F1",
           "blend weights", "seconds/epoch", "images/s", "files")


def rows(runs_dir):
    """A row per run folder holding metrics.json, sorted by variant then run."""
    table = []
    for metrics_path in sorted(Path(runs_dir).glob("*/*/metrics.json")):
        if metrics_path.parent.name.startswith("."):  # a staging folder a killed run left
            continue
        metrics = json.loads(metrics_path.read_text())
        parameters = metrics.get("parameters", {})
        seconds = list(metrics.get("seconds_per_epoch", {}).values())
        speeds = list(metrics.get("images_per_second", {}).values())
        f1 = metrics.get("blend_f1")
        table.append({
            "variant": metrics_path.parent.parent.name,
            "run": metrics_path.parent.name,
            "IMAGE_SIZE": parameters.get("IMAGE_SIZE"),
            "BACKBONES": "+".join(parameters.get("BACKBONES", [])),
            "EPOCHS": parameters.get("EPOCHS"),
            "validation F1": "" if f1 is None else f"{f1:.4f}",
            "blend weights": " ".join(f"{name}:{weight:.2f}" for name, weight
                                      in metrics.get("blend_weights", {}).items()),
            "seconds/epoch": f"{sum(seconds) / len(seconds):.1f}" if seconds else "",
            "images/s": f"{sum(speeds) / len(speeds):.0f}" if speeds else "",
            "files": str(metrics_path.parent),
        })
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
