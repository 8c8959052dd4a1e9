"""Each model's class probabilities on disk, saved as soon as it finishes, and their blend.

One file per model, `probabilities-<model>.npz`: its test probabilities with the test ids and,
when it was validated, its validation probabilities with the validation ids and labels. They are
float32, as the model predicted them (about 4 MB per model on the competition's 3,712 + 7,382
images × 104 classes): rounded to float16, close classes tie in the arg-max and a blend scores
otherwise than the model's own validation score. Files of older runs, float16, are read as
float32. Each file is written atomically, so a run stopped at any point keeps every model it
finished, and models of different runs (other sizes, other backbones) can be blended later
(`build.py blend`).
"""

import glob
import io
import os
from typing import NamedTuple

import numpy as np

from petals import ensemble
from petals.files import write_atomically

FILE_PATTERN = "probabilities-*.npz"
# Older files hold float16, 3 significant digits: a row of 104 sums to 1 within about 1e-3.
SUM_TOLERANCE = 0.02


class ProbabilitiesError(ValueError):
    """A probabilities file is missing a part, or its parts do not fit together."""


class Member(NamedTuple):
    """One model's probabilities: test always, validation unless it trained on validation."""

    name: str
    test_ids: np.ndarray  # str [test images]
    test: np.ndarray  # float [test images, classes]
    validation_ids: np.ndarray | None = None  # str [validation images]
    validation_labels: np.ndarray | None = None  # int [validation images]
    validation: np.ndarray | None = None  # float [validation images, classes]


def path_for(folder, name):
    return os.path.join(folder, FILE_PATTERN.replace("*", name))


def save(folder, member):
    """Check `member` (see check), write it to `probabilities-<name>.npz` in `folder`, replacing
    an earlier file of the same run atomically; returns the member as stored (float32)."""
    check(member)
    arrays = {
        "name": np.array(member.name),
        "test_ids": np.asarray(member.test_ids, str),
        "test": np.asarray(member.test, np.float32),
    }
    if member.validation is not None:
        arrays.update(
            validation_ids=np.asarray(member.validation_ids, str),
            validation_labels=np.asarray(member.validation_labels, np.int64),
            validation=np.asarray(member.validation, np.float32),
        )
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomically(
        path_for(folder, member.name),
        lambda handle: handle.write(buffer.getvalue()),
        overwrite=True,
        binary=True,
    )
    return Member(
        member.name,
        arrays["test_ids"],
        arrays["test"],
        arrays.get("validation_ids"),
        arrays.get("validation_labels"),
        arrays.get("validation"),
    )


def _check_table(what, ids, table):
    """Ids unique, one row of finite probabilities (summing to 1) per id."""
    ids, table = np.asarray(ids), np.asarray(table)
    if table.ndim != 2 or table.shape[0] != len(ids) or table.shape[1] < 2:
        raise ProbabilitiesError(
            f"{what} probabilities have shape {table.shape} for "
            f"{len(ids)} ids; expected ({len(ids)}, classes)"
        )
    if len(ids) == 0:
        raise ProbabilitiesError(f"no {what} ids")
    if len(set(ids.tolist())) != len(ids):
        raise ProbabilitiesError(f"{what} ids appear more than once")
    if not np.all(np.isfinite(table)):
        raise ProbabilitiesError(f"{what} probabilities hold non-finite values")
    sums = table.astype(np.float64).sum(axis=1)
    if table.min() < 0 or np.abs(sums - 1).max() > SUM_TOLERANCE:
        raise ProbabilitiesError(
            f"{what} rows are not probabilities (sums from {sums.min():.3f} to {sums.max():.3f})"
        )


def check(member, test_ids=None):
    """Raise ProbabilitiesError unless the member's parts fit (and its test ids are `test_ids`)."""
    _check_table("test", member.test_ids, member.test)
    if test_ids is not None and set(np.asarray(member.test_ids).tolist()) != set(test_ids):
        raise ProbabilitiesError(
            f"its {len(member.test_ids)} test ids are not the "
            f"{len(test_ids)} test ids of the submission"
        )
    parts = (member.validation_ids, member.validation_labels, member.validation)
    if all(part is None for part in parts):
        return
    if any(part is None for part in parts):
        raise ProbabilitiesError("validation ids, labels and probabilities come together")
    _check_table("validation", member.validation_ids, member.validation)
    labels = np.asarray(member.validation_labels)
    classes = np.asarray(member.validation).shape[1]
    if np.asarray(member.test).shape[1] != classes:
        raise ProbabilitiesError(
            f"{np.asarray(member.test).shape[1]} test classes but {classes} validation classes"
        )
    if labels.shape != (len(member.validation_ids),) or labels.min() < 0 or labels.max() >= classes:
        raise ProbabilitiesError(
            f"validation labels must be one class in 0..{classes - 1} per validation id"
        )


def read(path, test_ids=None):
    """The Member in a probabilities file, checked, its probabilities float32 (older files hold
    float16); ProbabilitiesError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            present = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError) as error:
        raise ProbabilitiesError(f"{path} is not a probabilities file: {error}") from None
    missing = {"name", "test_ids", "test"} - set(present)
    if missing:
        raise ProbabilitiesError(f"{path} lacks {', '.join(sorted(missing))}")
    member = Member(
        str(present["name"]),
        present["test_ids"],
        present["test"],
        present.get("validation_ids"),
        present.get("validation_labels"),
        present.get("validation"),
    )
    try:
        check(member, test_ids)
    except ProbabilitiesError as error:
        raise ProbabilitiesError(f"{path}: {error}") from None
    if member.validation is not None:
        member = member._replace(validation=member.validation.astype(np.float32))
    return member._replace(test=member.test.astype(np.float32))


def paths(folder):
    """The probabilities files in `folder`, sorted by name."""
    return sorted(glob.glob(os.path.join(glob.escape(str(folder)), FILE_PATTERN)))


def search_weights(members, step=0.05, seed=0):
    """An ensemble.Blend of the members (in order): weights searched on validation with an
    honest score, or equal weights when they have no validation probabilities."""
    if members[0].validation is None:
        return ensemble.Blend(tuple(ensemble.equal_weights(len(members))), None, None)
    return ensemble.search_weights(
        [np.asarray(member.validation, np.float32) for member in members],
        members[0].validation_labels,
        step,
        seed=seed,
    )


def weighted_sum(members, weights, split="test"):
    """The weighted sum of the members' `split` ("test" or "validation") probabilities."""
    return ensemble.weighted_sum(
        [np.asarray(getattr(member, split), np.float32) for member in members], weights
    )
