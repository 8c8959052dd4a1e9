"""A variant's pushes to Kaggle: sent so that none is sent twice, recorded in pushes.json, and
found again on Kaggle when that file knows less.

Each variant has a folder `runs/<slug>/`: `pushes.json` lists its pushed versions. What it says
can be rebuilt from Kaggle itself (each kernel's latest version), so a run resumed on another
machine does not push again, and a push whose answer was lost is adopted rather than sent again.
"""

import hashlib
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from kit.kaggle_client import AnswerLost, KaggleError, call, connect, http_status
from petals.files import write_atomically

STATE_FILE = "pushes.json"


# The state file's first name: the name of Kaggle's credentials file, hence renamed. Still read.
LEGACY_STATE_FILE = "kaggle.json"


# Kaggle's refusal when the account's batch sessions are all taken, e.g. "Maximum batch TPU
# session count of 2 reached." Kaggle publishes no number: this refusal is what counts.
SESSION_CAP = re.compile(r"Maximum batch \w+ session count of \d+ reached")


# Pushes of one kernel whose answer was lost and after which Kaggle showed no new version.
PUSH_ATTEMPTS = 4


# After a lost push answer, the seconds between looks for the version it may have made: about
# two minutes in all, so that a slow Kaggle, still saving the push, is not sent a second one.
LOST_ANSWER_WAITS = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


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
