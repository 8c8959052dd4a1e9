"""submission.csv: one label per test id, validated, written atomically and read back.

Written atomically (petals.files), so a run that fails leaves no partial file that looks valid;
petals.output_folder decides whether a folder's earlier results may be replaced.
"""

import csv

import numpy as np

from petals import NUM_CLASSES
from petals.files import write_atomically


class SubmissionError(ValueError):
    """The predictions cannot make a valid submission."""


def check_ids(test_ids):
    """Each test id once, at least one; returns them as a set."""
    if len(test_ids) == 0:
        raise SubmissionError("no test ids: the test split is empty")
    seen = set()
    duplicates = sorted(
        {record_id for record_id in test_ids if record_id in seen or seen.add(record_id)}
    )
    if duplicates:
        raise SubmissionError(f"test ids appear more than once: {', '.join(duplicates[:5])}")
    return seen


def validate(test_ids, labels, expected_ids=None, num_classes=NUM_CLASSES):
    """Check one integer label in 0..num_classes-1 per test id, each id exactly once."""
    test_ids = list(test_ids)
    labels = np.asarray(labels)
    if len(test_ids) != len(labels):
        raise SubmissionError(f"{len(labels)} labels for {len(test_ids)} test ids")
    seen = check_ids(test_ids)
    if expected_ids is not None:
        missing = sorted(set(expected_ids) - seen)
        unexpected = sorted(seen - set(expected_ids))
        if missing or unexpected:
            raise SubmissionError(
                f"ids differ from the test split: {len(missing)} missing "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected "
                f"(e.g. {unexpected[:3]})"
            )
    if not np.issubdtype(labels.dtype, np.integer):
        raise SubmissionError(f"labels must be integers, got {labels.dtype}")
    out_of_range = labels[(labels < 0) | (labels >= num_classes)]
    if out_of_range.size:
        raise SubmissionError(f"labels must be in 0..{num_classes - 1}, got {out_of_range[:5]}")


def write_submission(path, test_ids, labels, expected_ids=None, overwrite=False):
    """Validate, then write `id,label` rows in test order (`overwrite`: see petals.files)."""
    validate(test_ids, labels, expected_ids)

    def write(handle):
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "label"])
        writer.writerows(zip(test_ids, (int(label) for label in labels), strict=True))

    return write_atomically(path, write, overwrite)


def read_submission(path):
    """(ids, labels) of a submission file, checking its header."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0] != ["id", "label"]:
        raise SubmissionError(f"{path} does not start with the header id,label")
    return [row[0] for row in rows[1:]], np.array([int(row[1]) for row in rows[1:]])
