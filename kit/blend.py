"""Blend the saved probabilities of several runs: Kaggle versions and local runs alike.

Every model a run finishes leaves `probabilities-<backbone>.npz` in its folder
(`petals.probabilities`). For each variant of a sweep the newest run holding such files, by
number (`runs/<slug>/v<N>/`, else `runs/<slug>/local-<N>/`: `newest_run`), joins the blend with
each of its models; of a partial run (stopped before its last model), the models it finished
join, and the missing ones are named. The
models are aligned by id: all of them must have seen the same test ids and the same validation
ids, or one line names the mismatch. The weights are searched on validation with the notebook's
honest split score (`petals.ensemble.search_weights`).

A run trained on validation (TRAIN_ON_VALIDATION) has no validation probabilities: nothing can
score it or tune its weight. It joins only when asked, with a fixed share of the blend
(`--trained-on-validation-share`), split equally among its models; the searched weights of the
others are scaled to the rest, and the honest F1 is that of the others' blend.
"""

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit import results
from petals import ensemble, metrics, probabilities, submission

RUN_FOLDER = re.compile(r"(v|local-)(\d+)")
BLEND_FOLDER = "blend-{}"


@dataclass(eq=False)  # compared by identity: its arrays have no single truth value
class Entry:
    """One model of one run, as a row of the blend's table."""

    run: str  # runs/<run>/, e.g. petals-flowers-512-densenet201/v1
    backbone: str
    size: object
    weights: str  # where its starting weights came from
    member: probabilities.Member
    f1: float | None = None  # its own validation F1
    weight: float | None = None  # its weight in the blend (None: left out)
    image: str | None = None  # the fingerprint of the image it ran on (None: not on record)


@dataclass
class Blended:
    """The blend: its entries (weights set), F1 figures, and the entries left out."""

    entries: list
    left_out: list
    f1: float | None
    f1_in_sample: float | None
    best_run: tuple | None  # (run, its own honest F1) of the best single run
    step: float
    share: float | None


def newest_run(variant_dir):
    """The variant's newest run with saved probabilities, by number: its highest Kaggle version
    `v<N>` (collected without a problem), else its highest local run `local-<N>`; None when it
    has none. File times play no part (a copy or a restore changes them)."""
    runs = []
    for folder in Path(variant_dir).glob("*"):
        match = RUN_FOLDER.fullmatch(folder.name)
        if match is None or not probabilities.paths(folder):
            continue
        collected = folder / results.COLLECTED_FILE
        if collected.exists() and json.loads(collected.read_text()).get("problem"):
            continue  # its outputs failed validation when collected
        runs.append(((match.group(1) == "v", int(match.group(2))), folder))
    return max(runs, default=(None, None))[1]


def weights_text(weights, backbone):
    """A run's WEIGHTS for one backbone, as a table shows it (a file by its name)."""
    if isinstance(weights, dict):
        weights = weights.get(backbone)
    if weights is None:
        return "none"
    return os.path.basename(weights) if os.sep in str(weights) else str(weights)


def gather(runs_dir, slugs):
    """The entries of each variant's newest run with probabilities; prints the variants that
    have none. ValueError when no variant has any."""
    entries = []
    for slug in slugs:
        folder = newest_run(Path(runs_dir) / slug)
        if folder is None:
            print(
                f"  {slug}: no saved probabilities (not collected yet, or run before models "
                "saved them); left out"
            )
            continue
        metrics_path = folder / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        parameters = metrics.get("parameters", {})
        members = [probabilities.read(path) for path in probabilities.paths(folder)]
        if results.is_partial(folder, metrics):
            saved = [member.name for member in members]
            print(
                f"  {slug}/{folder.name}: partial, "
                f"{results.models_text(saved, parameters.get('BACKBONES', saved))}; "
                "its finished models join"
            )
        for member in members:
            entries.append(
                Entry(
                    f"{slug}/{folder.name}",
                    member.name,
                    parameters.get("IMAGE_SIZE", "?"),
                    weights_text(parameters.get("WEIGHTS"), member.name),
                    member,
                    image=results.image_fingerprint(metrics),
                )
            )
    if not entries:
        raise ValueError(
            f"no run of {', '.join(slugs)} under {runs_dir} has saved "
            "probabilities; collect or run the sweep first"
        )
    return entries


def _differ(what, first, other, first_ids, other_ids):
    missing = sorted(set(first_ids) - set(other_ids))
    extra = sorted(set(other_ids) - set(first_ids))
    example = (missing or extra)[0]
    return ValueError(
        f"{other.run} {other.backbone} saw other {what} ids than {first.run} "
        f"{first.backbone}: {len(missing)} missing, {len(extra)} extra (e.g. "
        f"{example}); blend runs of one dataset (and the same EXCLUDED_IDS)"
    )


def align(entries):
    """Every entry's rows in the first entry's test (and validation) id order; ValueError in
    one line when two entries saw different test or validation ids, or labels."""
    first = entries[0]
    validated = [entry for entry in entries if entry.member.validation is not None]
    reference = validated[0] if validated else None
    for entry in entries:
        member = entry.member
        if set(member.test_ids.tolist()) != set(first.member.test_ids.tolist()):
            raise _differ(
                "test", first, entry, first.member.test_ids.tolist(), member.test_ids.tolist()
            )
        position = {record_id: index for index, record_id in enumerate(member.test_ids.tolist())}
        order = [position[record_id] for record_id in first.member.test_ids.tolist()]
        member = member._replace(test_ids=first.member.test_ids, test=member.test[order])
        if member.validation is not None:
            ids = reference.member.validation_ids.tolist()
            if set(member.validation_ids.tolist()) != set(ids):
                raise _differ("validation", reference, entry, ids, member.validation_ids.tolist())
            position = {
                record_id: index for index, record_id in enumerate(member.validation_ids.tolist())
            }
            order = [position[record_id] for record_id in ids]
            if not np.array_equal(
                member.validation_labels[order], reference.member.validation_labels
            ):
                raise ValueError(
                    f"{entry.run} {entry.backbone} and {reference.run} "
                    f"{reference.backbone} give the same validation ids different "
                    "labels; blend runs of one dataset"
                )
            member = member._replace(
                validation_ids=reference.member.validation_ids,
                validation_labels=reference.member.validation_labels,
                validation=member.validation[order],
            )
        entry.member = member
    return entries


def _validation(entries):
    return [np.asarray(entry.member.validation, np.float32) for entry in entries]


def search(entries, step=0.1, seed=42, share=None):
    """Blend weights for the aligned entries (see the module's docstring); returns Blended."""
    from petals.evaluate import macro_f1  # not above: see petals/ensemble.py

    if share is not None and not 0 < share < 1:
        raise ValueError(f"--trained-on-validation-share {share} must be between 0 and 1")
    validated = [entry for entry in entries if entry.member.validation is not None]
    unvalidated = [entry for entry in entries if entry.member.validation is None]
    left_out = unvalidated if share is None else []
    joined = [entry for entry in entries if entry not in left_out]
    if not joined:
        raise ValueError(
            "every run was trained on validation: give "
            "--trained-on-validation-share to blend them with fixed shares"
        )
    f1 = f1_in_sample = best_run = None
    weights = {}
    if validated:
        labels = validated[0].member.validation_labels
        for entry in validated:
            entry.f1 = macro_f1(labels, entry.member.validation)
        blend = ensemble.search_weights(_validation(validated), labels, step, seed)
        f1, f1_in_sample = blend.f1, blend.f1_in_sample
        rest = 1 - share if share is not None and unvalidated else 1
        weights = {
            id(entry): weight * rest for entry, weight in zip(validated, blend.weights, strict=True)
        }
        runs = {}
        for entry in validated:
            runs.setdefault(entry.run, []).append(entry)
        scores = {
            run: ensemble.search_weights(_validation(members), labels, step, seed).f1
            for run, members in runs.items()
        }
        best_run = max(scores.items(), key=lambda item: item[1])
    extra = share if validated else 1
    weights.update(
        {id(entry): extra / len(unvalidated) for entry in unvalidated if entry not in left_out}
    )
    for entry in entries:
        entry.weight = weights.get(id(entry))
    return Blended(joined, left_out, f1, f1_in_sample, best_run, step, share)


def table(blended):
    """The members' table and, below it, the blend's honest F1 next to the best single run's."""
    rows = [("run", "backbone", "size", "weights", "validation F1", "weight")]
    for entry in blended.entries + blended.left_out:
        rows.append(
            (
                entry.run,
                entry.backbone,
                str(entry.size),
                entry.weights,
                "trained on val" if entry.member.validation is None else f"{entry.f1:.4f}",
                "left out" if entry.weight is None else f"{entry.weight:.2f}",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    if blended.f1 is not None:
        lines.append(
            f"blend: honest validation F1 {blended.f1:.4f} (in-sample "
            f"{blended.f1_in_sample:.4f}); best single run {blended.best_run[0]}: "
            f"{blended.best_run[1]:.4f}"
        )
    else:
        lines.append("blend: no validation F1 (every member trained on validation)")
    if any(entry.member.validation is None for entry in blended.entries) and blended.f1:
        lines.append(
            f"(the runs trained on validation hold a fixed {blended.share:.2f} of the "
            "blend, outside that score)"
        )
    images = images_line(blended.entries + blended.left_out)
    if images:
        lines.append(images)
    if blended.left_out:
        lines.append(
            "runs trained on validation are left out; "
            "--trained-on-validation-share SHARE blends them with that fixed share"
        )
    return "\n".join(lines)


def images_line(entries):
    """One line naming each image when the members ran on more than one (None otherwise): their
    versions differ, and so may their numerics."""
    runs = {}
    for entry in entries:
        runs.setdefault(entry.image or "not on record", []).append(entry.run)
    if len(runs) < 2:
        return None
    return "the members come from different images: " + "; ".join(
        f"{image}: {', '.join(sorted(set(names)))}" for image, names in sorted(runs.items())
    )


def test_predictions(blended):
    """(test ids, predicted labels) of the blend."""
    entries = blended.entries
    labels = probabilities.weighted_sum(
        [entry.member for entry in entries], [entry.weight for entry in entries]
    ).argmax(axis=-1)
    return entries[0].member.test_ids.tolist(), labels


def blend_record(blended, sweep_name):
    """The blend's metrics.json (what `build.py results` and `submit` read)."""
    entries = blended.entries
    return {
        "parameters": {
            "IMAGE_SIZE": "+".join(sorted({str(entry.size) for entry in entries})),
            "BACKBONES": sorted({entry.backbone for entry in entries}),
            "BLEND_STEP": blended.step,
            "TRAINED_ON_VALIDATION_SHARE": blended.share,
            "SWEEP": sweep_name,
        },
        "members": [
            {
                "run": entry.run,
                "backbone": entry.backbone,
                "size": entry.size,
                "weights": entry.weights,
                "validation_f1": entry.f1,
                "weight": entry.weight,
            }
            for entry in entries
        ],
        "left_out": [f"{entry.run}:{entry.backbone}" for entry in blended.left_out],
        "blend_weights": {f"{entry.run}:{entry.backbone}": entry.weight for entry in entries},
        "blend_f1": blended.f1,
        "blend_f1_in_sample": blended.f1_in_sample,
        "best_single_run": None
        if blended.best_run is None
        else {"run": blended.best_run[0], "validation_f1": blended.best_run[1]},
        "test_images": len(entries[0].member.test_ids),
    }


def write(blended, runs_dir, sweep_name):
    """submission.csv and metrics.json in a new `runs/<sweep>-blend/blend-<N>/`, built beside it
    and renamed into place (an earlier blend is never overwritten); returns the folder."""
    parent = Path(runs_dir) / f"{sweep_name}-blend"
    parent.mkdir(parents=True, exist_ok=True)
    numbers = [
        int(folder.name.split("-")[1])
        for folder in parent.glob("blend-*")
        if folder.name.split("-")[1].isdigit()
    ]
    destination = parent / BLEND_FOLDER.format(max(numbers, default=0) + 1)
    staging = Path(tempfile.mkdtemp(prefix=".blend-", dir=parent))
    try:
        ids, labels = test_predictions(blended)
        submission.write_submission(str(staging / "submission.csv"), ids, labels)
        metrics.write(str(staging / "metrics.json"), blend_record(blended, sweep_name))
        os.rename(staging, destination)
    finally:
        if staging.exists():
            for path in staging.iterdir():
                path.unlink()
            staging.rmdir()
    return destination


def message(blended, sweep_name):
    """The submission message: the members and their weights, and the honest F1."""
    members = ", ".join(
        f"{entry.run}:{entry.backbone} {entry.weight:.2f}" for entry in blended.entries
    )
    score = f" validation F1 {blended.f1:.4f}" if blended.f1 is not None else ""
    return f"petals blend {sweep_name}: {members}{score}"
