"""Push → status → collect → submit, and local sweeps, with state kept on disk.

Each variant has a folder `runs/<slug>/`: `kaggle.json` lists its pushed versions; collected
outputs go to `v<N>/` and local papermill runs to `local-<N>/`. Folders are built beside their
destination and renamed into place, and an existing one is never overwritten, so an interrupted
collect or sweep simply resumes.
"""

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from kit.kaggle_client import KaggleError, call, connect, scrub, secrets
from kit.kernels import COMPETITION
from petals.submission import write_atomically

# CANCEL_REQUESTED is not final: the kernel may still be running.
FINISHED = {"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"}
STATE_FILE = "kaggle.json"
COLLECTED_FILE = "collected.json"
LOG_TAIL_LINES = 30


def read_state(run_dir):
    path = Path(run_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {"pushes": []}


def write_json(path, document):
    """Write (or rewrite) a JSON state file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda handle: json.dump(document, handle, indent=2), overwrite=True)


def push(kernel_dir, run_dir, kernel_id, api=None):
    """Push one built kernel; record its version. A rejected push raises KaggleError."""
    api = api or connect()
    response = call(lambda: api.kernels_push(str(kernel_dir)), f"push {kernel_id}")
    # The client reports a rejected push in the response (and its CLI still exits 0).
    if getattr(response, "error", None):
        raise KaggleError(f"push {kernel_id} rejected by Kaggle: {response.error}")
    version = int(response.version_number)
    state = read_state(run_dir)
    state["kernel"] = kernel_id
    state["pushes"].append({"version": version, "url": response.url,
                            "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    write_json(Path(run_dir) / STATE_FILE, state)
    return version


def status(kernel_id, version=None, api=None):
    """(status name, failure message) of a kernel version."""
    api = api or connect()
    kernel = f"{kernel_id}/{version}" if version else kernel_id
    response = call(lambda: api.kernels_status(kernel), f"status {kernel}")
    return response.status.name, response.failure_message or ""


def wait(kernel_id, version, api, poll=10.0, maximum_poll=120.0, timeout=None,
         clock=time.monotonic, sleep=time.sleep):
    """Poll until the version finishes, printing each change; backoff up to `maximum_poll`."""
    started = clock()
    last = None
    while True:
        name, failure = status(kernel_id, version, api)
        if name != last:
            print(f"  {kernel_id} v{version}: {name} ({clock() - started:.0f} s)", flush=True)
            last = name
        if name in FINISHED:
            return name, failure
        if timeout is not None and clock() - started > timeout:
            raise KaggleError(f"{kernel_id} v{version} still {name} after {timeout:.0f} s; run "
                              "collect again later (it resumes)")
        sleep(poll)
        poll = min(poll * 1.5, maximum_poll)


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


def collect(run_dir, slug, expected_rows=None, api=None, **wait_options):
    """Wait for the latest pushed version, download its outputs to `v<N>/`, validate them.

    Returns (version, folder, problem or None). A version already collected is not fetched
    again; an earlier version's folder is never touched.
    """
    from petals.submission import SubmissionError, read_submission, validate

    state = read_state(run_dir)
    if not state["pushes"]:
        raise KaggleError(f"{slug}: never pushed; run `python build.py push` first")
    kernel_id, version = state["kernel"], state["pushes"][-1]["version"]
    destination = Path(run_dir) / f"v{version}"
    if (destination / COLLECTED_FILE).exists():
        record = json.loads((destination / COLLECTED_FILE).read_text())
        print(f"  {slug} v{version}: collected already ({record['status']})")
        return version, destination, record.get("problem")
    api = api or connect()
    name, failure = wait(kernel_id, version, api, **wait_options)
    staging = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=run_dir))
    try:
        call(lambda: api.kernels_output(f"{kernel_id}/{version}", str(staging), quiet=True),
             f"download {kernel_id} v{version}")
        log = staging / f"{slug}.log"
        if log.exists():  # A kernel may have printed a credential; keep it out of the copy here.
            log.write_text(scrub(log.read_text(errors="replace"), secrets(api)))
        problem = None
        if name != "COMPLETE":
            problem = f"{name}" + (f": {failure}" if failure else "")
        elif not (staging / "submission.csv").exists():
            problem = "COMPLETE but no submission.csv among its outputs"
        else:
            try:
                ids, labels = read_submission(staging / "submission.csv")
                validate(ids, labels)
                if expected_rows is not None and len(ids) != expected_rows:
                    raise SubmissionError(f"{len(ids)} rows, the test split has {expected_rows}")
            except (SubmissionError, ValueError, IndexError) as error:
                problem = f"invalid submission.csv: {error}"
        write_json(staging / COLLECTED_FILE, {"kernel": kernel_id, "version": version,
                                              "status": name, "problem": problem})
        os.replace(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if problem:
        print(f"  {slug} v{version}: {problem}\n  last lines of its log:\n"
              + "\n".join("    " + line
                        for line in log_tail(destination, slug, secrets(api)).splitlines()))
    return version, destination, problem


def submit(submission_path, message, api=None, competition=COMPETITION):
    """Submit a file to the competition; returns the server's message."""
    api = api or connect()
    response = call(lambda: api.competition_submit(str(submission_path), message, competition,
                                                   quiet=True),
                    f"submit {submission_path}")
    return getattr(response, "message", "") or "submitted"


def local_run_dir(run_dir, rerun=False):
    """(folder for a local run, finished already?).

    The latest `local-N` if it finished (has metrics.json) and no `rerun` is asked; otherwise a
    new `local-N+1`, so an interrupted run's notebook stays for diagnosis and nothing is
    overwritten.
    """
    numbers = sorted(int(path.name.split("-")[1]) for path in Path(run_dir).glob("local-*")
                     if path.name.split("-")[1].isdigit())
    latest = Path(run_dir) / f"local-{numbers[-1]}" if numbers else None
    if latest is not None and (latest / "metrics.json").exists() and not rerun:
        return latest, True
    return Path(run_dir) / f"local-{(numbers[-1] if numbers else 0) + 1}", False
