"""The run's results on disk: submission.csv and metrics.json, validated, written atomically.

Each file is written atomically (petals.files), so a run that fails leaves no partial file that
looks valid. An earlier run's results are never overwritten: `prepare_output_dir` refuses a
folder that holds them (except on a second "Run all" in the interactive session that wrote
them, which removes them first, saying so), and from then on the run owns the folder and
replaces its own provisional results (`overwrite=True`) as each model finishes.
"""

import csv
import functools
import json
import math
import os
import socket
import sys
import uuid

import numpy as np

from petals import NUM_CLASSES
from petals.files import write_atomically

RESULT_FILES = ("submission.csv", "metrics.json")
# Left in OUTPUT_DIR by an interactive session's run: which session its results belong to.
SESSION_FILE = ".petals-session"


class SubmissionError(ValueError):
    """The predictions cannot make a valid submission."""


def interactive_session():
    """True where a person runs the notebook cell by cell and may run it again: Kaggle's editor
    (KAGGLE_KERNEL_RUN_TYPE=Interactive) or a notebook opened in Jupyter (its server names the
    kernel's session in JPY_SESSION_NAME). False in Kaggle's batch runs (Batch), papermill runs
    (kit.runner, `build.py sweep`, tests) and scripts."""
    run_type = os.environ.get("KAGGLE_KERNEL_RUN_TYPE")
    if run_type is not None:
        return run_type == "Interactive"
    return bool(os.environ.get("JPY_SESSION_NAME"))


@functools.cache
def session_identity():
    """What tells this interactive session's results from any other's: the Jupyter kernel it runs
    in, on this host. The kernel's connection file names it (kernel-<id>.json), and a kernel
    restarted in the same session ("Restart & Run all") keeps it; a new session, or another
    notebook's kernel, has another. Outside a kernel: this process."""
    kernel = None
    if "ipykernel" in sys.modules:  # never imported here by a script or a batch run
        from ipykernel.kernelapp import IPKernelApp

        if IPKernelApp.initialized():
            kernel = f"kernel {IPKernelApp.instance().connection_file}"
    return f"{socket.gethostname()} {kernel or f'process {os.getpid()} {uuid.uuid4().hex}'}"


def _written_by_this_session(output_dir):
    """Whether the session file in `output_dir` names this session."""
    try:
        with open(os.path.join(output_dir, SESSION_FILE)) as handle:
            return handle.read().strip() == session_identity()
    except FileNotFoundError:
        return False


def prepare_output_dir(output_dir, replace=None):
    """Create `output_dir`; a run's results already there are refused, or, with `replace`,
    replaced when this interactive session wrote them.

    `replace=None` decides by `interactive_session()`: a second "Run all" in Kaggle's editor or in
    Jupyter replaces the results of the session's previous one (saying so), recognised by the
    session file (SESSION_FILE, naming `session_identity()`) that every run of the session leaves;
    another session's results, or a batch run's, are refused there too. A batch or papermill run,
    whose folder should be fresh, refuses any results. The runner passes `replace=False`.
    """
    from petals import hosts
    from petals.probabilities import paths

    if replace is None:
        replace = interactive_session()
    # Several processes: process 0's folder holds the results; if it refuses, all of them stop.
    hosts.on_writer(
        lambda: _clear_output_dir(output_dir, replace, paths), f"to prepare {output_dir}"
    )
    if replace:  # the session's mark on the folder, for its next "Run all" (every process)
        write_atomically(
            os.path.join(output_dir, SESSION_FILE),
            lambda handle: handle.write(session_identity() + "\n"),
            overwrite=True,
        )
    return output_dir


def _clear_output_dir(output_dir, replace, paths):
    """prepare_output_dir's work, on the one process that writes."""
    os.makedirs(output_dir, exist_ok=True)
    existing = [name for name in RESULT_FILES if os.path.exists(os.path.join(output_dir, name))]
    existing += [os.path.basename(path) for path in paths(output_dir)]
    if existing and not (replace and _written_by_this_session(output_dir)):
        raise FileExistsError(
            f"{output_dir} already holds {', '.join(existing)} from an earlier run"
            + (" that this session did not write" if replace else "")
            + "; choose another OUTPUT_DIR or move those files away"
        )
    if existing:
        for name in existing:
            os.remove(os.path.join(output_dir, name))
        print(
            f"replacing the previous run's {', '.join(existing)} in {output_dir} (run again "
            "in this session)"
        )


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


def _plain(value):
    """numpy scalars/arrays to JSON types; non-finite floats refused (they hide a broken run)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item) for item in value]
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"metric value {value} is not finite; the run diverged")
    return value


def write_metrics(path, metrics, overwrite=False):
    """Write metrics.json (parameters, history, scores, timings) for sweeps to collect."""
    document = _plain(metrics)
    return write_atomically(path, lambda handle: json.dump(document, handle, indent=2), overwrite)
