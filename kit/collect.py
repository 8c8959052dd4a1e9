"""A pushed version watched until it finishes, then its outputs downloaded into
`runs/<slug>/v<N>/` and checked.

The folder is built beside its destination and renamed into place, and an existing one is never
overwritten, so an interrupted collect simply resumes (local papermill runs go to `local-<N>/`:
kit.sweeps).
"""

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from kit import poll as polling
from kit import results
from kit.kaggle_client import KaggleError, call, connect, error_body, scrub, secrets
from kit.pushes import current_version, latest_version, now_text, write_json
from kit.results import COLLECTED_FILE

# CANCEL_REQUESTED is not final: the kernel may still be running.
FINISHED = {"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"}


LOG_TAIL_LINES = 30


# The status Kaggle has not shown yet (see `status`): not final, watched on.
NOT_SHOWN = "PUSHED"


def status(kernel_id, version=None, api=None):
    """(status name, failure message) of a kernel version.

    A final status is matched to the version: right after a push Kaggle may answer with the
    previous version's, so it counts only once Kaggle shows this version (GetKernel's current
    version is it or a later one); until then the status is NOT_SHOWN.
    """
    api = api or connect()
    kernel = f"{kernel_id}/{version}" if version else kernel_id
    response = call(lambda: api.kernels_status(kernel), f"status {kernel}")
    name = response.status.name
    if version and name in FINISHED and (latest_version(kernel_id, api) or 0) < version:
        return NOT_SHOWN, ""
    return name, response.failure_message or ""


def wait(kernel_id, version, api, poll=10.0, timeout=None, clock=time.monotonic, sleep=time.sleep):
    """Poll until the version finishes, printing each change (kit.poll: backoff, timeout); its
    (status name, failure message). KaggleError when `timeout` seconds pass first."""
    started = clock()
    seen = []  # the last (status name, failure message)

    def check():
        name, failure = status(kernel_id, version, api)
        changed = not seen or seen[-1][0] != name
        if changed:
            print(f"  {kernel_id} v{version}: {name} ({clock() - started:.0f} s)", flush=True)
        seen[:] = [(name, failure)]
        return name in FINISHED, changed

    if not polling.poll(check, poll, timeout, clock, sleep):
        raise KaggleError(
            f"{kernel_id} v{version} still {seen[-1][0]} after {timeout:.0f} s; "
            "run collect again later (it resumes)"
        )
    return seen[-1]


def log_tail(folder, slug, hidden=(), lines=LOG_TAIL_LINES):
    """The last lines of a kernel's log (`<slug>.log`: Kaggle's JSON list of stream entries)."""
    path = Path(folder) / f"{slug}.log"
    if not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace")
    try:
        entries = json.loads(text)
        text = "".join(entry.get("data", "") for entry in entries)
    except (json.JSONDecodeError, AttributeError, TypeError):
        pass  # Not Kaggle's JSON log format: show it as it is.
    return scrub("\n".join(text.rstrip().splitlines()[-lines:]), hidden)


def collected(run_dir, version):
    """The collected.json record of that version, or None when it was not collected."""
    path = Path(run_dir) / f"v{version}" / COLLECTED_FILE
    return json.loads(path.read_text()) if path.exists() else None


def collect(run_dir, slug, kernel_id, expected_rows=None, api=None, stamp=None, **wait_options):
    """Wait for the variant's current version (`current_version`, with the built kernel's
    `stamp`), download its outputs to `v<N>/`, validate them.

    Returns (version, folder, problem or None). A version already collected is not fetched
    again; an earlier version's folder is never touched.
    """
    api = api or connect()
    _, current = current_version(run_dir, kernel_id, api, stamp)
    if current is None:
        raise KaggleError("never pushed; push it first (`build.py push` or `build.py run`)")
    version = current["version"]
    destination = Path(run_dir) / f"v{version}"
    record = collected(run_dir, version)
    if record is not None:
        print(f"  {slug} v{version}: collected already ({record['status']})")
        return version, destination, record.get("problem")
    name, failure = wait(kernel_id, version, api, **wait_options)
    return (
        version,
        destination,
        fetch(run_dir, slug, kernel_id, version, name, failure, expected_rows, api),
    )


def fetch(run_dir, slug, kernel_id, version, name, failure, expected_rows, api):
    """Download a finished version's outputs into `v<N>/` (atomically) and validate them.

    A version that ended in ERROR or CANCEL_ACKNOWLEDGED with a valid submission.csv (the
    notebook rewrites it after each model) is kept as partial: collected.json records the
    models it finished and those it was asked for. An output that is an HTTP error body is
    refused (KaggleError) and nothing is kept, so that collecting again fetches it anew.

    Returns the problem (None: a valid submission, complete or partial); a problem or a partial
    result is printed with the log's tail.
    """
    destination = Path(run_dir) / f"v{version}"
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=run_dir))
    try:
        # force: a retried download replaces what a broken one left in the fresh staging folder.
        call(
            lambda: api.kernels_output(
                f"{kernel_id}/{version}", str(staging), force=True, quiet=True
            ),
            f"download {kernel_id} v{version}",
        )
        refuse_error_bodies(staging, f"download {kernel_id} v{version}")
        log = staging / f"{slug}.log"
        if log.exists():  # A kernel may have printed a credential; keep it out of the copy here.
            log.write_text(scrub(log.read_text(errors="replace"), secrets(api)))
        problem, partial = check_outputs(staging, name, failure, expected_rows)
        write_json(
            staging / COLLECTED_FILE,
            {
                "kernel": kernel_id,
                "version": version,
                "status": name,
                "problem": problem,
                "partial": partial,
                "collected_at": now_text(),
            },
        )
        os.replace(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if problem or partial:
        said = problem or partial_text({"partial": partial})
        print(
            f"  {slug} v{version}: {said}\n  last lines of its log:\n"
            + "\n".join(
                "    " + line for line in log_tail(destination, slug, secrets(api)).splitlines()
            )
        )
    return problem


def refuse_error_bodies(folder, description):
    """KaggleError (one line) when a downloaded file is an HTTP error body (`error_body`)."""
    for path in sorted(Path(folder).rglob("*")):
        found = error_body(path)
        if found:
            raise KaggleError(
                f"{description}: {path.relative_to(folder)} {found}; nothing was kept: "
                "collect again later (`build.py collect` or `run` resumes)"
            )


def check_outputs(folder, name, failure, expected_rows):
    """(problem or None, partial or None) of a finished version's downloaded outputs: a valid
    submission.csv (`expected_rows` rows) and valid saved probabilities; `partial` (the
    collected.json entry) when the version ended other than COMPLETE or its record says it is
    incomplete."""
    from petals import probabilities
    from petals.submission import SubmissionError, read_submission, validate

    folder = Path(folder)
    ended = f"{name}" + (f": {failure}" if failure else "")
    if not (folder / "submission.csv").exists():
        return (
            "COMPLETE but no submission.csv among its outputs" if name == "COMPLETE" else ended
        ), None
    problem = None
    try:
        ids, labels = read_submission(folder / "submission.csv")
        validate(ids, labels)
        if expected_rows is not None and len(ids) != expected_rows:
            raise SubmissionError(f"{len(ids)} rows, the test split has {expected_rows}")
    except (SubmissionError, ValueError, IndexError) as error:
        problem = f"invalid submission.csv: {error}"
    else:  # each model's saved probabilities: the submission's ids, finite values
        for path in probabilities.paths(folder):
            try:
                probabilities.read(path, ids)
            except probabilities.ProbabilitiesError as error:
                problem = f"invalid {str(error).removeprefix(str(folder) + os.sep)}"
                break
    if problem:
        return (problem if name == "COMPLETE" else f"{ended}; {problem}"), None
    metrics = read_metrics(folder)
    if name == "COMPLETE" and not results.is_partial(folder, metrics):
        return None, None
    finished, planned = results.models(metrics)
    return None, {"ended": ended, "finished": finished, "planned": planned}


def read_metrics(folder):
    """A run folder's metrics.json ({} when it has none, or an unreadable one)."""
    path = Path(folder) / "metrics.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


def partial_text(record):
    """`partial: 1 of 2 models, efficientnet_b7 missing (the session ended ERROR: …)` for a
    collected.json record of a partial version; "" for any other."""
    partial = (record or {}).get("partial")
    if not partial:
        return ""
    return (
        f"partial: {results.models_text(partial['finished'], partial['planned'])} "
        f"(the session ended {partial['ended']})"
    )
