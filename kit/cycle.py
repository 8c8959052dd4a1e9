"""Push → status → collect → submit and the unattended `run` on Kaggle; state on disk.

Each variant has a folder `runs/<slug>/`: `pushes.json` lists its pushed versions; collected
outputs go to `v<N>/` (local papermill runs go to `local-<N>/`: kit.sweeps). Folders are built
beside their destination and renamed into place, and an existing one is never overwritten, so an
interrupted collect or run simply resumes. What `pushes.json` says can be rebuilt from Kaggle itself
(each kernel's latest version), so a run resumed on another machine does not push again, and a
push whose answer was lost is adopted rather than sent again. The week's quota is read from
Kaggle too (`weekly_quota`).
"""

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kit import poll as polling
from kit import results
from kit.kaggle_client import (
    AnswerLost,
    KaggleError,
    call,
    connect,
    error_body,
    http_status,
    scrub,
    secrets,
)
from kit.results import COLLECTED_FILE
from petals import COMPETITION
from petals.files import write_atomically

# CANCEL_REQUESTED is not final: the kernel may still be running.
FINISHED = {"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"}
STATE_FILE = "pushes.json"
# The state file's first name: the name of Kaggle's credentials file, hence renamed. Still read.
LEGACY_STATE_FILE = "kaggle.json"
LOG_TAIL_LINES = 30
# Kaggle's refusal when the account's batch sessions are all taken, e.g. "Maximum batch TPU
# session count of 2 reached." Kaggle publishes no number: this refusal is what counts.
SESSION_CAP = re.compile(r"Maximum batch \w+ session count of \d+ reached")
# Pushes of one kernel whose answer was lost and after which Kaggle showed no new version.
PUSH_ATTEMPTS = 4
# After a lost push answer, the seconds between looks for the version it may have made: about
# two minutes in all, so that a slow Kaggle, still saving the push, is not sent a second one.
LOST_ANSWER_WAITS = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
# The status Kaggle has not shown yet (see `status`): not final, watched on.
NOT_SHOWN = "PUSHED"
# The push answer's lists of sources Kaggle did not attach: (field, what it is, what to check).
INVALID_SOURCES = (
    (
        "invalid_dataset_sources",
        "dataset",
        "check the slug (owner/dataset-name), that the dataset is public or shared with your "
        "account, and that your account can see it at https://www.kaggle.com/datasets/{source}",
    ),
    (
        "invalid_competition_sources",
        "competition",
        "check the slug, and that your account has joined the competition and accepted its rules "
        "at https://www.kaggle.com/competitions/{source}",
    ),
    (
        "invalid_kernel_sources",
        "notebook",
        "check the slug (owner/notebook-slug), that the notebook is public or shared with your "
        "account, and that your account can see it at https://www.kaggle.com/code/{source}",
    ),
    (
        "invalid_model_sources",
        "model",
        "check the slug (owner/model/framework/variation/version), that the model is public or "
        "shared with your account, and that your account can see it",
    ),
)


class SessionCapReached(KaggleError):
    """Kaggle refused a push because the account's batch sessions are all in use."""


class InvalidSources(KaggleError):
    """Kaggle accepted a push but could not attach some of its sources (one line each); the
    version runs without that data."""


def read_state(run_dir):
    """The variant's pushes ({"kernel": id, "pushes": [{"version", "url", "pushed_at"}]})."""
    for name in (STATE_FILE, LEGACY_STATE_FILE):
        path = Path(run_dir) / name
        if path.exists():
            state = json.loads(path.read_text())
            if "pushes" in state:  # not someone's credentials under the legacy name
                return state
    return {"pushes": []}


def write_state(run_dir, state):
    """Write pushes.json; a legacy kaggle.json state file it replaces is removed."""
    write_json(Path(run_dir) / STATE_FILE, state)
    legacy = Path(run_dir) / LEGACY_STATE_FILE
    if legacy.exists() and "pushes" in json.loads(legacy.read_text()):
        legacy.unlink()


def now_text():
    """The current time as ISO 8601 UTC (how pushes.json records a push)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def seconds_since(text):
    """Seconds since an ISO time from pushes.json (without a zone: local time), or None."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return time.time() - moment.timestamp()


def write_json(path, document):
    """Write (or rewrite) a JSON state file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda handle: json.dump(document, handle, indent=2), overwrite=True)


def write_text(path, text):
    """Write (or rewrite) a text file atomically (the results table)."""
    write_atomically(path, lambda handle: handle.write(text), overwrite=True)


def push(kernel_dir, run_dir, kernel_id, api=None, sleep=time.sleep):
    """Push one built kernel; record its version.

    A push is never sent again blindly: when its answer is lost (a timeout, a reset, a gateway
    error), Kaggle is asked, with backoff for about two minutes (LOST_ANSWER_WAITS), for a
    version that appeared since the push began and carries this build's stamp (`kernel_stamp`);
    that one is adopted as this push's. A new version without the stamp (saved in Kaggle's
    editor, say) is named and not adopted; only when no version of ours appeared is the push sent
    again. A push refused for the session cap raises SessionCapReached, any other refusal
    KaggleError; sources Kaggle did not attach raise InvalidSources once the version is
    recorded.
    """
    api = api or connect()
    description = f"push {kernel_id}"
    stamp = kernel_stamp(kernel_dir)
    began, before = now_text(), latest_version(kernel_id, api) or 0
    foreign = set()  # versions seen since the push began that are not this build's
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        try:
            response = call(
                lambda: api.kernels_push(str(kernel_dir)), description, repeatable=False
            )
        except AnswerLost as lost:
            print(f"  {description}: the answer was lost ({lost}); looking for it", flush=True)
            version = wait_for_own_version(kernel_id, api, before, stamp, foreign, sleep)
            if version is not None:
                print(
                    f"  {description}: Kaggle has v{version}, made by this build since the push "
                    "began: adopted, not pushed again",
                    flush=True,
                )
                return record_push(run_dir, kernel_id, version, None, began, adopted=True)
            if attempt == PUSH_ATTEMPTS:
                raise KaggleError(
                    f"{description}: no answer from Kaggle {attempt} times and no "
                    f"version of this build after v{before} ({lost}); try again later"
                ) from None
            print(
                f"  {description}: Kaggle shows no version of this build after "
                f"{sum(LOST_ANSWER_WAITS):.0f} s: pushing again (attempt {attempt + 1} of "
                f"{PUSH_ATTEMPTS})",
                flush=True,
            )
            continue
        break
    # The client reports a rejected push in the response (and its CLI still exits 0).
    error = getattr(response, "error", None)
    if error:
        kind = SessionCapReached if SESSION_CAP.search(error) else KaggleError
        raise kind(f"{description} rejected by Kaggle: {error}")
    version = response.version_number
    if not version:  # accepted, yet the answer names no version (None, or the SDK's 0): ask
        version = own_version(kernel_id, api, before, stamp, foreign, description) or 0
        if version <= before:
            raise KaggleError(
                f"{description}: Kaggle's answer names no version and Kaggle shows "
                f"none of this build after v{before}; check https://www.kaggle.com/code/"
                f"{kernel_id}, then run again (a new version is found there)"
            )
    invalid = invalid_sources(response, kernel_id, int(version))
    record_push(
        run_dir, kernel_id, int(version), response.url or None, began, invalid_sources=invalid
    )
    if invalid:
        raise InvalidSources("\n".join(invalid))
    return int(version)


def invalid_sources(response, kernel_id, version):
    """One line per source the push answer lists as invalid (not attached), naming what to
    check."""
    lines = []
    for field_name, kind, advice in INVALID_SOURCES:
        for source in getattr(response, field_name, None) or []:
            lines.append(
                f"{kernel_id} v{version}: the {kind} {source} was not attached (Kaggle "
                f"lists it as invalid) and the version runs without it; "
                + advice.format(source=source)
                + "; then rebuild and push again with `--rerun`"
            )
    return lines


def record_push(run_dir, kernel_id, version, url, pushed_at, **details):
    """Add a pushed version to pushes.json; returns its number. `details` with a value (e.g.
    adopted=True, invalid_sources=[...]) are kept in its entry."""
    state = read_state(run_dir)
    state["kernel"] = kernel_id
    state["pushes"].append(
        {
            "version": version,
            "url": url,
            "pushed_at": pushed_at,
            **{key: value for key, value in details.items() if value},
        }
    )
    write_state(run_dir, state)
    return version


def weekly_quota(api, accelerator):
    """The week's quota of `accelerator` ("tpu" or "gpu") from Kaggle, as an estimate.Quota;
    KaggleError when Kaggle does not answer (clients before 2.2.1 lack the call)."""
    from kit.estimate import Quota

    if not hasattr(api, "quota_view"):
        raise KaggleError("this kaggle client has no quota call (quota_view, 2.2.1+)")
    response = call(api.quota_view, "read the accelerator quota", attempts=2)
    quota = getattr(response, f"{accelerator}_quota", None)
    if quota is None or quota.total_time_allowed is None:
        raise KaggleError(f"Kaggle's quota answer has no {accelerator.upper()} quota")
    refresh = response.quota_refresh_time
    if refresh is not None and refresh.utcoffset() is None:  # the SDK drops the zone: UTC
        refresh = refresh.replace(tzinfo=UTC)
    used = quota.time_used.total_seconds() if quota.time_used is not None else 0.0
    return Quota(accelerator, used, quota.total_time_allowed.total_seconds(), refresh)


def latest_version(kernel_id, api):
    """The kernel's latest version number on Kaggle (GetKernel's currentVersionNumber), or None
    when Kaggle has no such kernel."""
    import requests
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

    owner, slug = kernel_id.split("/")

    def look_up():
        request = ApiGetKernelRequest()
        request.user_name, request.kernel_slug = owner, slug
        try:
            with api.build_kaggle_client() as client:
                response = client.kernels.kernels_api_client.get_kernel(request)
        except requests.exceptions.HTTPError as error:
            if http_status(error) == 404:
                return None
            raise
        return response.metadata.current_version_number or None

    return call(look_up, f"look up {kernel_id}")


def notebook_stamp(text):
    """The stamp of a kernel notebook (JSON text): a digest of its cells' kinds and sources,
    each line's trailing blanks aside. The Setup cell names the commit and the variant and the
    parameters cell holds the variant's values, so two builds share a stamp only when they
    would run the same code; a version saved in Kaggle's editor has another. None for text that
    is no notebook."""
    try:
        cells = json.loads(text)["cells"]
    except (ValueError, KeyError, TypeError):
        return None
    digest = hashlib.sha256()
    for cell in cells:
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        lines = "\n".join(line.rstrip() for line in source.strip().splitlines())
        digest.update(f"{cell.get('cell_type')}\0{lines}\0".encode())
    return digest.hexdigest()


def kernel_stamp(kernel_dir):
    """The stamp (`notebook_stamp`) of the kernel built in `kernel_dir`, or None when it is not
    built there."""
    metadata = Path(kernel_dir) / "kernel-metadata.json"
    if not metadata.exists():
        return None
    code = Path(kernel_dir) / json.loads(metadata.read_text()).get("code_file", "")
    return notebook_stamp(code.read_text()) if code.is_file() else None


def version_stamp(kernel_id, version, api):
    """The stamp of a version's source on Kaggle (GetKernel of that version, what `kaggle
    kernels pull owner/slug/N` reads), or None."""
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

    owner, slug = kernel_id.split("/")

    def look_up():
        request = ApiGetKernelRequest()
        request.user_name, request.kernel_slug = owner, slug
        request.version_label = f"v{version}"
        with api.build_kaggle_client() as client:
            return client.kernels.kernels_api_client.get_kernel(request)

    response = call(look_up, f"read {kernel_id} v{version}")
    return notebook_stamp(getattr(response.blob, "source", None) or "")


def own_version(kernel_id, api, after, stamp, foreign, description):
    """The newest version of the kernel after `after` that carries `stamp` (this build's), or
    None. Each newer one without it is named once (and added to `foreign`), never adopted."""
    latest = latest_version(kernel_id, api) or 0
    for version in range(latest, after, -1):
        if version in foreign:
            continue
        if stamp is not None and version_stamp(kernel_id, version, api) == stamp:
            return version
        foreign.add(version)
        why = (
            "no kernel is built here to compare it with (run `build.py kernels`)"
            if stamp is None
            else "it is not this build's (another source: saved in Kaggle's editor, or "
            "pushed from another build)"
        )
        print(f"  {description}: Kaggle has v{version}, but {why}: not adopted", flush=True)
    return None


def wait_for_own_version(kernel_id, api, after, stamp, foreign, sleep):
    """After a lost push answer: look for this build's version (`own_version`) after each wait
    of LOST_ANSWER_WAITS; the version, or None when none appeared."""
    for wait in LOST_ANSWER_WAITS:
        sleep(wait)  # give Kaggle time to show what it did with the push
        version = own_version(kernel_id, api, after, stamp, foreign, f"push {kernel_id}")
        if version is not None:
            return version
    return None


def current_version(run_dir, kernel_id, api, stamp=None):
    """(state, current push) of a variant: its pushes.json reconciled with Kaggle.

    The one way `run`, `status`, `collect` and `submit` find a variant's current version: a
    version Kaggle has that this folder does not know (pushed from another machine, or by a push
    whose answer was lost) is added to pushes.json and saved, when it carries `stamp`, the
    stamp of the kernel built here (`kernel_stamp`); a version that does not (saved in Kaggle's
    editor, say), or any when nothing is built here, is named and left alone. The current push
    is the state's last entry ({"version", "url", "pushed_at", ...}), or None when Kaggle and
    this folder know of no version of this build.
    """
    state = read_state(run_dir)
    if state.get("kernel", kernel_id) != kernel_id:
        raise ValueError(
            f"{run_dir} holds versions of {state['kernel']}, but the built kernel "
            f"is {kernel_id}; use another --runs-dir for this owner"
        )
    known = max((entry["version"] for entry in state["pushes"]), default=0)
    found = own_version(kernel_id, api, known, stamp, set(), f"{kernel_id}")
    if found is not None:
        state["kernel"] = kernel_id
        state["pushes"].append(
            {"version": found, "url": None, "pushed_at": None, "found_on_kaggle": now_text()}
        )
        write_state(run_dir, state)
    return state, (state["pushes"][-1] if state["pushes"] else None)


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


def submit(submission_path, message, api=None, competition=COMPETITION):
    """Submit a file to the competition; returns the server's message."""
    api = api or connect()
    response = call(
        lambda: api.competition_submit(str(submission_path), message, competition, quiet=True),
        f"submit {submission_path}",
    )
    return getattr(response, "message", "") or "submitted"


@dataclass
class Job:
    """One variant of `build.py run`: its built kernel folder, run folder and Kaggle id."""

    slug: str
    kernel_dir: Path
    run_dir: Path
    kernel_id: str


@dataclass
class Session:
    """A pushed version being watched until it finishes."""

    job: Job
    version: int
    pushed_at: str | None  # ISO time from pushes.json; None when pushed from elsewhere
    status: str | None = None


@dataclass
class SweepRun:
    """Push → wait → collect for a whole sweep, never more than `max_concurrent` sessions.

    `start()` reads each variant's state (rebuilt from Kaggle where this folder knows less);
    `run()` pushes while fewer than `max_concurrent` of the sweep's versions are queued or
    running, polls them (kit.poll: the interval starts at `poll` seconds and backs off to ten
    times that while nothing changes), collects each one as it finishes and pushes the next. A
    push that Kaggle refuses for its session cap waits for a free session: it is tried again
    when one of the sweep's sessions ends (or at each poll when none of them runs: other kernels
    hold the sessions). A version that is running or collected is never pushed again, unless `rerun`
    (one new version of each variant).
    """

    jobs: list
    api: object
    max_concurrent: int
    poll: float = 60.0
    expected_rows: int | None = None
    rerun: bool = False
    clock: object = time.monotonic
    sleep: object = time.sleep
    pending: list = field(default_factory=list)  # jobs to push, in order
    active: list = field(default_factory=list)  # Sessions not finished
    outcomes: dict = field(default_factory=dict)  # slug → (version or None, problem or None)
    capped: bool = False  # Kaggle refused a push for its cap; no session of ours ended since

    def start(self):
        """Sort the variants into finished, running and to push, from disk and from Kaggle."""
        for job in self.jobs:
            _, latest = current_version(
                job.run_dir, job.kernel_id, self.api, kernel_stamp(job.kernel_dir)
            )
            if latest is None or self.rerun:
                # --rerun: one new version each; the earlier ones are neither counted nor watched.
                self.pending.append(job)
                continue
            record = collected(job.run_dir, latest["version"])
            if latest.get("invalid_sources") and record is None:
                # Runs without its data on Kaggle: reported again until rebuilt and --rerun.
                self.outcomes[job.slug] = (latest["version"], "\n".join(latest["invalid_sources"]))
            elif record is None:
                self.active.append(Session(job, latest["version"], latest.get("pushed_at")))
            else:
                self.outcomes[job.slug] = (latest["version"], record.get("problem"))
        return self

    def describe(self):
        """`3 collected, 1 running on Kaggle, 5 not pushed`."""
        return (
            f"{len(self.outcomes)} finished, {len(self.active)} running on Kaggle, "
            f"{len(self.pending)} not pushed"
        )

    def run(self, timeout=None):
        """Work until every variant is collected or reported; True when done, False when
        `timeout` seconds passed first (what is running on Kaggle goes on; run again)."""
        waiting = set()  # slugs already told they wait for a free session

        def check():
            changed = self._watch()
            changed |= self._push(waiting)
            return not (self.active or self.pending), changed

        return polling.poll(check, self.poll, timeout, self.clock, self.sleep)

    def _elapsed(self, session):
        since_push = seconds_since(session.pushed_at)
        return (
            f"{since_push:.0f} s since its push" if since_push is not None else "pushed elsewhere"
        )

    def _watch(self):
        """Poll every active session; collect those that finished. True if anything changed."""
        changed = False
        for session in list(self.active):
            job = session.job
            name, failure = status(job.kernel_id, session.version, self.api)
            if name != session.status:
                print(
                    f"  {job.slug} v{session.version}: {name} ({self._elapsed(session)})",
                    flush=True,
                )
                session.status, changed = name, True
            if name in FINISHED:
                problem = fetch(
                    job.run_dir,
                    job.slug,
                    job.kernel_id,
                    session.version,
                    name,
                    failure,
                    self.expected_rows,
                    self.api,
                )
                said = problem or partial_text(collected(job.run_dir, session.version))
                print(
                    f"  {job.slug} v{session.version}: collected → "
                    f"{Path(job.run_dir) / f'v{session.version}'}" + (f" ({said})" if said else ""),
                    flush=True,
                )
                self.active.remove(session)
                self.outcomes[job.slug] = (session.version, problem)
                self.capped = False
        return changed

    def _push(self, waiting):
        """Push pending variants while sessions are free. True if anything was pushed."""
        changed = False
        if self.capped and self.active:
            return changed
        while self.pending and len(self.active) < self.max_concurrent:
            job = self.pending[0]
            try:
                version = push(
                    job.kernel_dir, job.run_dir, job.kernel_id, self.api, sleep=self.sleep
                )
            except SessionCapReached as refusal:
                if job.slug not in waiting:
                    print(f"  {job.slug}: waiting for a free session ({refusal})", flush=True)
                    waiting.add(job.slug)
                self.capped = True
                break
            except KaggleError as error:  # refused for another reason: reported, others go on
                self.pending.pop(0)
                pushed = read_state(job.run_dir)["pushes"]
                version = pushed[-1]["version"] if isinstance(error, InvalidSources) else None
                self.outcomes[job.slug] = (version, str(error))
                print(
                    "\n".join(f"  {job.slug}: {line}" for line in str(error).splitlines()),
                    flush=True,
                )
                changed = True
                continue
            self.pending.pop(0)
            waiting.discard(job.slug)
            self.active.append(
                Session(job, version, read_state(job.run_dir)["pushes"][-1]["pushed_at"])
            )
            print(
                f"  {job.slug}: v{version} pushed ({len(self.active)} of "
                f"{self.max_concurrent} session(s) in use)",
                flush=True,
            )
            changed = True
        return changed
