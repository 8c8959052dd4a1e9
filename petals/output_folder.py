"""The run's output folder: created, and an earlier run's results in it refused, or replaced on
a second "Run all" in the interactive session that wrote them (saying so).

From then on the run owns the folder and replaces its own provisional results (`overwrite=True`
in petals.files) as each model finishes.
"""

import functools
import os
import socket
import sys
import uuid

from petals.files import write_atomically

RESULT_FILES = ("submission.csv", "metrics.json")
# Left in OUTPUT_DIR by an interactive session's run: which session its results belong to.
SESSION_FILE = ".petals-session"


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


def prepare(output_dir, replace=None):
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
    """`prepare`'s work, on the one process that writes."""
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
