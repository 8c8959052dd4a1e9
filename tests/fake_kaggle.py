"""A loopback fake of the parts of Kaggle's API that the kit uses, for driving the real client.

The official ``kaggle`` client (2.2.5) cannot be given an arbitrary base URL, but with
``KAGGLE_API_ENVIRONMENT=LOCALHOST`` it talks to ``http://localhost/api/v1/...``, and with
``HTTP_PROXY`` aimed at this server every request (RPCs, output downloads, submission uploads)
arrives here as an absolute-URI proxy request. ``FakeKaggle.environment()`` builds that
environment for a subprocess; nothing in it can reach a host other than 127.0.0.1.

Endpoints imitated (paths with or without the ``/api`` prefix):

* ``POST /api/v1/kernels.KernelsApiService/SaveKernel``
* ``POST /api/v1/kernels.KernelsApiService/GetKernelSessionStatus``
* ``POST /api/v1/kernels.KernelsApiService/ListKernelSessionOutput``, then ``GET /files/<token>``
* ``POST /api/v1/kernels.KernelsApiService/GetKernel`` (metadata with ``currentVersionNumber``)
* ``POST /api/v1/kernels.KernelsApiService/GetAcceleratorQuotaStatistics`` (the week's quota)
* ``POST /api/v1/competitions.CompetitionApiService/StartSubmissionUpload``, then
  ``PUT /upload/<token>``, then ``CreateSubmission``; also ``GetSubmissionLimits`` and
  ``GetSubmission``.

Everything else answers 404 with a JSON error and is kept in ``unknown_requests``.

What Kaggle does and the fake imitates:

* Every accepted push starts a batch session. ``configure(session_cap=N)`` refuses a push while
  N sessions of the same kind (TPU, GPU, CPU) are queued or running, with Kaggle's text
  ``Maximum batch TPU session count of N reached.``; ``peak_sessions`` records the most at once.
* ``configure(run_seconds=2, queue_seconds=0.5)`` makes sessions time-based: QUEUED, then
  RUNNING, then their outcome (``set_run(ref, outcome=("ERROR", "why"))``, else COMPLETE);
  ``configure(session_time_limit=S)`` stops a run longer than S seconds with ERROR. Without
  ``run_seconds`` a session follows its status script (below) and ends when a final status
  has been served.
* A push is checked the way Kaggle would (``KAGGLE_RULES``): a notebook must be notebook JSON
  with a kernelspec and no ``metadata.kaggle``; the machine shape must be one Kaggle knows; the
  owner must be the caller and the title must slugify to the slug; competition sources must
  exist; model sources must name a model's version (from 1). A refused push answers HTTP 200
  ``{"error": ...}`` like Kaggle's.
* A source Kaggle cannot attach (``invalid_sources(...)``) is listed in the push answer's
  ``invalidDatasetSources`` / ``invalidCompetitionSources`` / ``invalidKernelSources``; the push
  is accepted all the same and its session runs without that data.
* An answer can be lost after Kaggle did the work (``lose_answers``): the push is accepted and
  its session starts, but the connection closes before any answer, as a reset or a timeout
  would leave it.
* The week's accelerator quota (``set_quota``): hours used and allowed per TPU and GPU, and when
  they refresh, as ``GetAcceleratorQuotaStatistics`` serves them (durations as ``"<s>s"``).
* ``GetKernel`` with a version label serves that version's source, as ``kaggle kernels pull
  owner/slug/N`` reads it.
* A version saved in Kaggle's editor (``save_in_editor``) is a version like any other, with its
  own source and session, that no push of the client made.
* Right after a push Kaggle may not show the new version yet (``stale_reads``): status reads of
  the new version answer the previous version's status, and ``GetKernel`` names the previous
  version as current.

Scripting (all thread-safe, callable while the client runs):

* ``configure(session_cap=None, run_seconds=None, queue_seconds=0.0, session_time_limit=None)``
* ``set_run(ref, seconds=None, outcome="COMPLETE")``: this kernel's sessions' length and outcome
* ``set_statuses(ref, ["QUEUED", "RUNNING", ("ERROR", "why")], version=None)``
* ``set_output(ref, files={"submission.csv": b"..."}, log=..., version=None)``; with ``ref=None``
  the output every other kernel serves
* ``reject_next_push("message", count=1)``
* ``lose_answers(method="SaveKernel", every=None, count=None)``: the answer to every
  ``every``-th call (or the next ``count`` calls) is lost; for SaveKernel only accepted pushes
  count, and they are carried out first
* ``invalid_sources("owner/dataset", ...)``: slugs Kaggle lists as invalid in a push answer
* ``omit_version_numbers(count=1)``: accepted pushes answered without ``versionNumber``
* ``set_quota(tpu_used=0, tpu_allowed=30, gpu_used=0, gpu_allowed=30, refresh=None)`` in hours
* ``save_in_editor(ref, text, during_next_push=False)``: a version with that notebook source, now
  or when the next push of ``ref`` arrives (before it is carried out or refused)
* ``stale_reads(ref, count)``: the next ``count`` reads of ``ref`` (status of its latest version,
  or GetKernel) see the version before it
* ``fail_next(method, count=1, status=500, message=None, retry_after=None)`` where method is an
  RPC name (``"SaveKernel"``, ``"GetKernelSessionStatus"``, ...) or ``"download"`` / ``"upload"``.
* ``require_auth(username, key)`` makes every RPC demand that HTTP Basic credential.

Recorded for assertions: ``requests`` (every request), ``unknown_requests``, ``pushes``,
``submissions``, ``errors`` (exceptions raised inside the fake itself), ``calls(method)``,
``accepted(ref)``, ``lost_answers`` (requests whose answer was dropped) and ``peak_sessions``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from slugify import slugify

from tests.fake_kaggle_datasets import BLOB_PATH, DatasetsFake

DEFAULT_USERNAME = "petals-tester"
DEFAULT_KEY = "fake-key-0123456789abcdef"

_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY")
_RPC_PATH = re.compile(r"^(?:/api)?/v1/(?P<service>[A-Za-z0-9_.]+)/(?P<method>[A-Za-z0-9_]+)$")
_KERNELS = "kernels.KernelsApiService"
_COMPETITIONS = "competitions.CompetitionApiService"
# Machine shapes Kaggle lists (kaggle-cli docs/kernels.md, Feb 2026); "" and None: no accelerator.
MACHINE_SHAPES = {
    "NvidiaTeslaP100",
    "TpuV38",
    "NvidiaTeslaT4",
    "NvidiaTeslaT4Highmem",
    "Tpu1VmV38",
    "NvidiaTeslaA100",
    "NvidiaL4",
    "TpuV5E8",
    "NvidiaL4X1",
    "TpuV6E8",
    "NvidiaH100",
    "NvidiaRtxPro6000",
}
COMPETITIONS = {"tpu-getting-started"}
# A push request's source list → the push answer's list of those Kaggle could not attach.
_SOURCE_FIELDS = {
    "datasetDataSources": "invalidDatasetSources",
    "competitionDataSources": "invalidCompetitionSources",
    "kernelDataSources": "invalidKernelSources",
    "modelDataSources": "invalidModelSources",
}
_LOST = object()  # a route's payload meaning: close the connection without an answer
FINAL_STATUSES = {"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"}
KAGGLE_RULES = (
    "notebook JSON with a kernelspec and no metadata.kaggle",
    "a known machine shape",
    "owner = caller, title slugifies to the slug",
    "existing competition sources",
    "model sources 'owner/model/framework/variation/version', the version from 1",
)


@dataclass
class RecordedRequest:
    """One request as the fake saw it. ``status`` is filled in once the fake has answered."""

    method: str
    target: str  # the request line's target, e.g. "http://localhost/api/v1/..."
    host: str  # host the client aimed at ("localhost", "127.0.0.1:<port>", ...)
    path: str
    headers: dict[str, str]  # the Authorization value is redacted
    body: Any  # parsed JSON, or None
    raw: bytes
    user: str | None = None  # the username of a Basic Authorization header, if any
    auth_scheme: str | None = None  # "Basic", "Bearer" or None
    status: int | None = None

    @property
    def rpc(self) -> str | None:
        """The RPC method name ("SaveKernel", ...) for an API call, else None."""
        match = _RPC_PATH.match(self.path)
        return match.group("method") if match else None


@dataclass
class Push:
    """One SaveKernel call. ``version_number`` is None and ``error`` set when it was rejected."""

    ref: str  # "owner/slug"
    body: dict
    version_number: int | None
    error: str | None = None

    @property
    def notebook(self) -> dict:
        """The pushed notebook (the ``text`` field parsed as JSON)."""
        return json.loads(self.body["text"])

    @property
    def machine_shape(self) -> str | None:
        return self.body.get("machineShape")


@dataclass
class Submission:
    """One CreateSubmission call, joined with the bytes uploaded for its blob token."""

    ref: int
    competition: str
    description: str | None
    file_name: str | None
    content: bytes
    body: dict


@dataclass
class _Output:
    files: dict[str, bytes]
    log: str


@dataclass
class _Upload:
    competition: str
    file_name: str | None
    content: bytes | None = None


@dataclass
class _Fault:
    status: int
    message: str
    retry_after: str | None = None


@dataclass
class _StatusScript:
    steps: list[tuple[str, str | None]]
    cursor: int = 0


@dataclass
class _Session:
    """One accepted push: a batch session of one kind ("TPU", "GPU" or "CPU")."""

    ref: str
    version: int
    kind: str
    started: float  # time.monotonic() of the push
    queue_seconds: float
    run_seconds: float | None  # None: untimed, its status script decides
    outcome: tuple[str, str | None]
    time_limit: float | None
    finished: bool = False  # untimed: a final status was served

    def status(self, now: float) -> tuple[str, str | None]:
        """QUEUED, RUNNING, then the outcome; a run past the time limit ends in ERROR."""
        elapsed = now - self.started
        if elapsed < self.queue_seconds:
            return "QUEUED", None
        if self.time_limit is not None and self.run_seconds > self.time_limit:
            if elapsed < self.queue_seconds + self.time_limit:
                return "RUNNING", None
            return "ERROR", (
                f"The session ran past its time limit of {self.time_limit:g} s and was stopped"
            )
        if elapsed < self.queue_seconds + self.run_seconds:
            return "RUNNING", None
        return self.outcome

    def active(self, now: float) -> bool:
        if self.run_seconds is None:
            return not self.finished
        return self.status(now)[0] not in FINAL_STATUSES


def session_kind(machine_shape: str | None) -> str:
    """The session pool a machine shape draws from, as Kaggle's refusal names it."""
    if (machine_shape or "").startswith("Tpu"):
        return "TPU"
    return "GPU" if (machine_shape or "").startswith("Nvidia") else "CPU"


def kaggle_log(lines, stream_name: str = "stdout", start: float = 1.0) -> str:
    """A log string the way Kaggle serves it: a JSON array of {stream_name, time, data}."""
    entries = []
    for i, line in enumerate(lines):
        if isinstance(line, dict):
            entries.append(line)
        else:
            text = line if line.endswith("\n") else line + "\n"
            entries.append({"stream_name": stream_name, "time": start + i, "data": text})
    return json.dumps(entries)


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeKaggle/1.0"
    protocol_version = "HTTP/1.0"  # one request per connection: simple and robust

    def log_message(self, format, *args):  # noqa: A002 - keep pytest output quiet
        pass

    def _dispatch(self):
        self.server.fake._handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_CONNECT = _dispatch


class FakeKaggle(DatasetsFake):
    """The fake server. Use ``start()``/``stop()`` or the ``fake_kaggle`` pytest fixture.
    Datasets (create, versions, status, files, attaching): tests/fake_kaggle_datasets.py."""

    def __init__(self):
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[RecordedRequest] = []
        self.unknown_requests: list[RecordedRequest] = []
        self.pushes: list[Push] = []
        self.submissions: list[Submission] = []
        self.errors: list[str] = []
        self.default_statuses: list = ["COMPLETE"]  # for a pushed kernel with no script
        self.submission_message = "Successfully submitted"
        self._auth: tuple[str, str] | None = None
        self._versions: dict[str, int] = {}
        self._kernel_ids: dict[str, int] = {}
        self._statuses: dict[tuple[str, int | None], _StatusScript] = {}
        self._outputs: dict[tuple[str, int | None], _Output] = {}
        self._blobs: dict[str, bytes] = {}
        self._uploads: dict[str, _Upload] = {}
        self._rejections: list[str] = []
        self._faults: dict[str, list[_Fault]] = {}
        self._counter = 0
        self._sessions: list[_Session] = []
        self._runs: dict[str, tuple[float | None, tuple[str, str | None]]] = {}
        self.session_cap: int | None = None
        self.run_seconds: float | None = None
        self.queue_seconds = 0.0
        self.session_time_limit: float | None = None
        self.peak_sessions = 0
        self.lost_answers: list[RecordedRequest] = []
        self._losses: dict[str, dict] = {}
        self._invalid_sources: set[str] = set()
        self._omitted_versions = 0
        self._editor_saves: dict[str, str] = {}  # ref → source saved when its next push arrives
        self._stale: dict[str, int] = {}  # ref → reads left that see the previous version
        self.quota = {"TPU": (0.0, 30.0), "GPU": (0.0, 30.0)}  # (used, allowed) hours
        self.quota_refresh = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
        self._init_datasets()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> FakeKaggle:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="fake-kaggle",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> FakeKaggle:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(
        self, home, username: str | None = DEFAULT_USERNAME, key: str | None = DEFAULT_KEY
    ) -> dict[str, str]:
        """A complete environment for a ``kaggle`` subprocess that can only reach this fake.

        Every KAGGLE_* and proxy variable of the current environment is dropped; HOME and the
        config dir point into ``home`` (created if needed), so no real token or kaggle.json can be
        picked up. With ``username=None`` no credentials are set at all.
        """
        home = str(home)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.upper().startswith("KAGGLE_") and k.upper() not in _PROXY_VARS
        }
        proxy = self.url
        env.update(
            {
                "HOME": home,
                "KAGGLE_CONFIG_DIR": os.path.join(home, ".kaggle"),
                "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
                "HTTP_PROXY": proxy,
                "http_proxy": proxy,
                "HTTPS_PROXY": proxy,
                "https_proxy": proxy,
                "NO_PROXY": "",
                "no_proxy": "",
            }
        )
        env.pop("XDG_CONFIG_HOME", None)
        if username is not None:
            env["KAGGLE_USERNAME"] = username
            env["KAGGLE_KEY"] = key if key is not None else ""
        os.makedirs(home, exist_ok=True)
        return env

    # ----------------------------------------------------------------- scripting
    def require_auth(self, username: str = DEFAULT_USERNAME, key: str = DEFAULT_KEY) -> None:
        """From now on every RPC needs ``Authorization: Basic base64(username:key)``, else 401."""
        with self._lock:
            self._auth = (username, key)

    def configure(
        self,
        session_cap: int | None = None,
        run_seconds: float | None = None,
        queue_seconds: float = 0.0,
        session_time_limit: float | None = None,
    ) -> None:
        """Kaggle's batch sessions: at most ``session_cap`` queued or running per kind (None: no
        cap); each queued for ``queue_seconds``, then running ``run_seconds`` (None: untimed,
        scripted statuses); a run longer than ``session_time_limit`` ends in ERROR."""
        with self._lock:
            self.session_cap, self.run_seconds = session_cap, run_seconds
            self.queue_seconds, self.session_time_limit = queue_seconds, session_time_limit

    def set_run(self, ref: str, seconds: float | None = None, outcome="COMPLETE") -> None:
        """This kernel's later sessions run ``seconds`` (default: the configured run_seconds)
        and end with ``outcome``: a status name or ``(status, failure_message)``."""
        outcome = (outcome, None) if isinstance(outcome, str) else tuple(outcome)
        with self._lock:
            self._runs[ref] = (seconds, outcome)

    def set_statuses(self, ref: str, steps, version: int | None = None) -> None:
        """Script GetKernelSessionStatus for ``ref`` ("owner/slug"): one step per call, the last
        step repeats. A step is a status name or a ``(status, failure_message)`` pair. With
        ``version`` the script answers only requests for that version label ("vN")."""
        parsed = []
        for step in steps:
            if isinstance(step, str):
                parsed.append((step, None))
            else:
                status, message = step
                parsed.append((status, message))
        if not parsed:
            raise ValueError("at least one status step is needed")
        with self._lock:
            self._statuses[(ref, version)] = _StatusScript(parsed)

    def set_output(
        self, ref: str | None, files: dict | None = None, log="", version: int | None = None
    ) -> None:
        """Script ListKernelSessionOutput for ``ref``: ``files`` maps names to bytes (or str);
        ``log`` is the log string as served, or a list of lines / entries (see ``kaggle_log``).
        ``ref=None`` sets what every kernel without its own output serves."""
        if not isinstance(log, str):
            log = kaggle_log(log)
        data = {
            name: content.encode() if isinstance(content, str) else bytes(content)
            for name, content in (files or {}).items()
        }
        with self._lock:
            self._outputs[(ref, version)] = _Output(data, log)

    def reject_next_push(self, error: str = "Notebook push rejected by fake", count: int = 1):
        """The next ``count`` SaveKernel calls answer HTTP 200 ``{"error": error}``."""
        with self._lock:
            self._rejections.extend([error] * count)

    def fail_next(
        self,
        method: str,
        count: int = 1,
        status: int = 500,
        message: str | None = None,
        retry_after: str | int | None = None,
    ) -> None:
        """The next ``count`` calls to ``method`` (an RPC name, or "download"/"upload") answer
        HTTP ``status`` with ``{"code": status, "message": ...}``; later calls succeed."""
        message = message or f"Fake Kaggle fault: HTTP {status}"
        ra = None if retry_after is None else str(retry_after)
        with self._lock:
            self._faults.setdefault(method, []).extend([_Fault(status, message, ra)] * count)

    def lose_answers(
        self, method: str = "SaveKernel", every: int | None = None, count: int | None = None
    ) -> None:
        """Drop the answer (close the connection unanswered) of every ``every``-th call to
        ``method``, or of the next ``count`` calls. For SaveKernel only accepted pushes count,
        and the push is carried out (version, session) before its answer is lost."""
        with self._lock:
            self._losses[method] = {"every": every, "count": count, "seen": 0}

    def save_in_editor(self, ref: str, text: str, during_next_push: bool = False) -> int | None:
        """A version of ``ref`` saved in Kaggle's editor with notebook source ``text`` (a session
        starts, as "Save & Run All" does); with ``during_next_push`` when the next push of
        ``ref`` arrives, before it is handled. Returns the version (None: not saved yet)."""
        with self._lock:
            if during_next_push:
                self._editor_saves[ref] = text
                return None
            return self._save_version(ref, text)

    def stale_reads(self, ref: str, count: int = 1) -> None:
        """The next ``count`` reads of ``ref`` see the version before its latest: a status read
        of the latest version answers the previous version's, GetKernel names the previous one
        as current (Kaggle right after a push)."""
        with self._lock:
            self._stale[ref] = count

    def _save_version(self, ref: str, text: str) -> int:
        version = self._versions.get(ref, 0) + 1
        self._versions[ref] = version
        self._kernel_ids.setdefault(ref, 1000 + len(self._kernel_ids) + 1)
        body = {"slug": ref, "text": text, "kernelType": "notebook", "language": "python"}
        self.pushes.append(Push(ref, body, version))
        self._sessions.append(
            _Session(ref, version, "CPU", time.monotonic(), 0.0, None, ("COMPLETE", None), None)
        )
        return version

    def _editor_save_before(self, rec: RecordedRequest) -> None:
        """A version saved in the editor as this push arrives (save_in_editor)."""
        slug = str(rec.body.get("slug") or "") if isinstance(rec.body, dict) else ""
        ref = slug if "/" in slug else f"{rec.user or DEFAULT_USERNAME}/{slug}"
        with self._lock:
            if ref in self._editor_saves:
                self._save_version(ref, self._editor_saves.pop(ref))

    def _stale_read(self, ref: str) -> bool:
        """Whether this read of ``ref`` sees the previous version (see stale_reads); counts it."""
        with self._lock:
            if self._stale.get(ref, 0) <= 0:
                return False
            self._stale[ref] -= 1
            return True

    def omit_version_numbers(self, count: int = 1) -> None:
        """The next ``count`` accepted pushes answer without ``versionNumber`` (it is optional
        in Kaggle's answer)."""
        with self._lock:
            self._omitted_versions += count

    def invalid_sources(self, *slugs: str) -> None:
        """Sources Kaggle cannot attach (unknown, private, not visible to the caller): listed in
        the push answer's invalid*Sources; the version runs without them."""
        with self._lock:
            self._invalid_sources.update(slugs)

    def set_quota(
        self,
        tpu_used: float = 0.0,
        tpu_allowed: float = 30.0,
        gpu_used: float = 0.0,
        gpu_allowed: float = 30.0,
        refresh: datetime | None = None,
    ) -> None:
        """The week's accelerator hours used and allowed, and when they refresh (UTC)."""
        with self._lock:
            self.quota = {"TPU": (tpu_used, tpu_allowed), "GPU": (gpu_used, gpu_allowed)}
            if refresh is not None:
                self.quota_refresh = refresh

    # ----------------------------------------------------------------- inspection
    def calls(self, method: str) -> list[RecordedRequest]:
        """Recorded requests for one RPC name, or "download" / "upload"."""
        with self._lock:
            return [r for r in self.requests if _key_of(r) == method]

    def pushes_for(self, ref: str) -> list[Push]:
        with self._lock:
            return [p for p in self.pushes if p.ref == ref]

    def last_push(self, ref: str | None = None) -> Push:
        pushes = self.pushes_for(ref) if ref else list(self.pushes)
        if not pushes:
            raise AssertionError(f"no push recorded for {ref or 'any kernel'}")
        return pushes[-1]

    def version_of(self, ref: str) -> int:
        """The latest accepted version number of ``ref`` (0 when never pushed)."""
        with self._lock:
            return self._versions.get(ref, 0)

    def accepted(self, ref: str | None = None) -> list[Push]:
        """Accepted pushes (of ``ref``, or all): each started one session."""
        with self._lock:
            return [p for p in self.pushes if p.error is None and ref in (None, p.ref)]

    def active_sessions(self, kind: str | None = None) -> list[_Session]:
        """Sessions queued or running now (of one kind, or all)."""
        now = time.monotonic()
        with self._lock:
            return [s for s in self._sessions if s.active(now) and kind in (None, s.kind)]

    # ----------------------------------------------------------------- internals
    def _handle(self, handler: _Handler) -> None:
        target = handler.path
        parts = urlsplit(target)
        if handler.command == "CONNECT":  # "host:443": an https tunnel, never served
            host, path = target, ""
        elif parts.scheme:  # absolute-URI form: we are being used as the HTTP proxy
            host, path = parts.netloc, parts.path or "/"
        else:
            host, path = handler.headers.get("Host", ""), parts.path
        raw = self._read_body(handler)
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                body = None
        headers = {k: v for k, v in handler.headers.items()}
        scheme, user = _auth_of(handler.headers.get("Authorization"))
        if "Authorization" in headers:
            headers["Authorization"] = f"{scheme or '?'} <redacted>"
        record = RecordedRequest(
            handler.command, target, host, path, headers, body, raw, user=user, auth_scheme=scheme
        )
        with self._lock:
            self.requests.append(record)
        try:
            status, payload, extra = self._route(record, handler)
        except Exception as exc:  # a bug in the fake: answer, and keep it for the test
            with self._lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            status, payload, extra = 500, _error(500, f"fake_kaggle internal error: {exc}"), {}
        if payload is _LOST:  # the work is done; the answer never leaves
            with self._lock:
                self.lost_answers.append(record)
            handler.close_connection = True
            return
        record.status = status
        self._respond(handler, status, payload, extra)

    def _lose(self, method: str) -> bool:
        """Whether this call's answer is lost (see lose_answers); counts the call."""
        with self._lock:
            loss = self._losses.get(method)
            if loss is None:
                return False
            loss["seen"] += 1
            if loss["count"] is not None:
                if loss["count"] <= 0:
                    return False
                loss["count"] -= 1
                return True
            return bool(loss["every"]) and loss["seen"] % loss["every"] == 0

    @staticmethod
    def _read_body(handler: _Handler) -> bytes:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = handler.rfile.readline().strip().split(b";")[0]
                size = int(size_line or b"0", 16)
                if size == 0:
                    while handler.rfile.readline().strip():  # trailers
                        pass
                    break
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()  # CRLF after each chunk
            return b"".join(chunks)
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length else b""

    @staticmethod
    def _respond(handler: _Handler, status: int, payload, extra: dict) -> None:
        if isinstance(payload, bytes | bytearray):
            data, ctype = bytes(payload), "application/octet-stream"
        elif payload is None:
            data, ctype = b"", "text/plain"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json"
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)

    def _route(self, rec: RecordedRequest, handler: _Handler):
        if rec.method == "CONNECT":  # something tried https through us: refuse and record
            return self._unknown(rec, 405, "CONNECT (https) is not served by the fake")
        key = _key_of(rec)
        if key is None:
            return self._unknown(rec, 404, f"No fake endpoint for {rec.method} {rec.path}")
        if key == "SaveKernel":
            self._editor_save_before(rec)
        injected = self._injected(key)
        if injected is not None:
            return injected
        raw = {"download": self._download, "upload": self._upload, "blob upload": self._blob_upload}
        if key in raw:  # file transfers, served before the RPC checks
            return raw[key](rec)
        if self._auth is not None and not self._authorized(handler):
            return 401, _error(401, "Unauthenticated"), {}
        match = _RPC_PATH.match(rec.path)
        service, method = match.group("service"), match.group("method")
        route = {
            (_KERNELS, "SaveKernel"): self._save_kernel,
            (_KERNELS, "GetKernelSessionStatus"): self._kernel_status,
            (_KERNELS, "ListKernelSessionOutput"): self._kernel_output,
            (_KERNELS, "GetKernel"): self._get_kernel,
            (_KERNELS, "GetAcceleratorQuotaStatistics"): self._quota,
            (_COMPETITIONS, "StartSubmissionUpload"): self._start_upload,
            (_COMPETITIONS, "CreateSubmission"): self._create_submission,
            (_COMPETITIONS, "GetSubmissionLimits"): self._submission_limits,
            (_COMPETITIONS, "GetSubmission"): self._get_submission,
            **self._dataset_routes(),
        }.get((service, method))
        if route is None or rec.method != "POST":
            return self._unknown(rec, 404, f"No fake endpoint for {rec.method} {rec.path}")
        if not isinstance(rec.body, dict):
            return 400, _error(400, "Request body must be a JSON object"), {}
        return route(rec)

    def _injected(self, key: str):
        """The answer of a scripted fault or lost answer for this endpoint, else None."""
        fault = None
        with self._lock:
            queue = self._faults.get(key)
            if queue:
                fault = queue.pop(0)
        if fault is not None:
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return fault.status, _error(fault.status, fault.message), extra
        if key != "SaveKernel" and self._lose(key):
            return 0, _LOST, {}
        return None

    def _unknown(self, rec: RecordedRequest, status: int, message: str):
        with self._lock:
            self.unknown_requests.append(rec)
        return status, _error(status, message), {}

    def _authorized(self, handler: _Handler) -> bool:
        username, key = self._auth
        expected = "Basic " + base64.b64encode(f"{username}:{key}".encode()).decode()
        return handler.headers.get("Authorization", "") == expected

    def _next_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    # ------------------------------------------------------------ kernels
    def _save_kernel(self, rec: RecordedRequest):
        body = rec.body
        slug = body.get("slug") or (str(body["id"]) if "id" in body else "")
        if not slug:
            return 400, _error(400, "ID or slug must be specified"), {}
        ref = slug if "/" in slug else f"{rec.user or DEFAULT_USERNAME}/{slug}"
        owner, name = ref.split("/", 1)
        kind = session_kind(body.get("machineShape"))
        now = time.monotonic()
        with self._lock:
            error = _refusal(body, ref, rec.user)
            if error is None and self._rejections:
                error = self._rejections.pop(0)
            if (
                error is None
                and self.session_cap is not None
                and len([s for s in self._sessions if s.kind == kind and s.active(now)])
                >= self.session_cap
            ):
                error = f"Maximum batch {kind} session count of {self.session_cap} reached."
            if error is not None:
                self.pushes.append(Push(ref, body, None, error))
                return 200, {"error": error}, {}
            version = self._versions.get(ref, 0) + 1
            self._versions[ref] = version
            kernel_id = self._kernel_ids.setdefault(ref, 1000 + len(self._kernel_ids) + 1)
            self.pushes.append(Push(ref, body, version))
            seconds, outcome = self._runs.get(ref, (None, ("COMPLETE", None)))
            self._sessions.append(
                _Session(
                    ref,
                    version,
                    kind,
                    now,
                    self.queue_seconds,
                    seconds if seconds is not None else self.run_seconds,
                    outcome,
                    self.session_time_limit,
                )
            )
            self.peak_sessions = max(
                self.peak_sessions,
                len([s for s in self._sessions if s.kind == kind and s.active(now)]),
            )
            invalid = {
                field: [
                    source for source in body.get(request) or [] if source in self._invalid_sources
                ]
                for request, field in _SOURCE_FIELDS.items()
            }
            hidden = self._invalid_dataset_sources(body.get("datasetDataSources"), rec.user)
            invalid["invalidDatasetSources"] += hidden
            self._record_attached(
                ref,
                version,
                [s for s in body.get("datasetDataSources") or [] if s not in hidden],
            )
            omit = self._omitted_versions > 0
            self._omitted_versions -= omit
        if self._lose("SaveKernel"):
            return 0, _LOST, {}
        answer = {
            "ref": f"/code/{owner}/{name}",
            "url": f"https://www.kaggle.com/code/{owner}/{name}",
            "versionNumber": version,
            "kernelId": kernel_id,
            **{field: sources for field, sources in invalid.items() if sources},
        }
        if omit:
            del answer["versionNumber"]
        return 200, answer, {}

    def _quota(self, rec: RecordedRequest):
        """GetAcceleratorQuotaStatistics: each kind's hours as durations ("<seconds>s")."""
        with self._lock:
            quota, refresh = dict(self.quota), self.quota_refresh

        def kind(used, allowed):
            return {
                "timeUsed": f"{used * 3600:.0f}s",
                "timeReserved": "0s",
                "totalTimeAllowed": f"{allowed * 3600:.0f}s",
            }

        return (
            200,
            {
                "quotaRefreshTime": refresh.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "tpuQuota": kind(*quota["TPU"]),
                "gpuQuota": kind(*quota["GPU"]),
            },
            {},
        )

    def _kernel_key(self, body: dict) -> tuple[str, int | None]:
        ref = f"{body.get('userName', '')}/{body.get('kernelSlug', '')}"
        label = body.get("versionLabel")
        version = None
        if label:
            try:
                version = int(str(label).lstrip("vV"))
            except ValueError:
                version = None
        return ref, version

    @staticmethod
    def _scripted(table, ref, version):
        """The entry scripted for this version of ``ref``, else for ``ref``; None if neither."""
        return table.get((ref, version)) or table.get((ref, None))

    def _session(self, ref: str, version: int | None) -> _Session | None:
        """The session of that version of ``ref``; without a version, the latest one."""
        sessions = [s for s in self._sessions if s.ref == ref and version in (None, s.version)]
        return sessions[-1] if sessions else None

    def _kernel_status(self, rec: RecordedRequest):
        ref, version = self._kernel_key(rec.body)
        with self._lock:
            latest = self._versions.get(ref)
            if latest and version in (None, latest) and latest > 1 and self._stale_read(ref):
                version = latest - 1  # Kaggle does not show the new version yet
            session = self._session(ref, version)
            script = self._scripted(self._statuses, ref, version)
            if script is None and session is not None and session.run_seconds is not None:
                status, message = session.status(time.monotonic())
            else:
                if script is None:
                    if ref not in self._versions:
                        return 404, _error(404, f"Notebook {ref} not found"), {}
                    script = self._statuses[(ref, None)] = _StatusScript(
                        [
                            (s, None) if isinstance(s, str) else tuple(s)
                            for s in self.default_statuses
                        ]
                    )
                status, message = script.steps[min(script.cursor, len(script.steps) - 1)]
                script.cursor += 1
                if session is not None and status in FINAL_STATUSES:
                    session.finished = True
        payload = {"status": status}
        if message:
            payload["failureMessage"] = message
        return 200, payload, {}

    def _kernel_output(self, rec: RecordedRequest):
        ref, version = self._kernel_key(rec.body)
        with self._lock:
            output = self._scripted(self._outputs, ref, version)
            if output is None:
                if ref not in self._versions:
                    return 404, _error(404, f"Notebook {ref} not found"), {}
                output = self._outputs.get((None, None), _Output({}, ""))
            names = sorted(output.files)
            page_size = int(rec.body.get("pageSize") or 20)
            token = rec.body.get("pageToken") or ""
            start = int(token) if token.isdigit() else 0
            page = names[start : start + page_size]
            files = []
            for name in page:
                blob = f"out{self._next_id()}"
                self._blobs[blob] = output.files[name]
                files.append({"fileName": name, "url": f"{self.url}/files/{blob}"})
        more = start + page_size < len(names)
        return (
            200,
            {
                "files": files,
                "log": output.log,
                "nextPageToken": str(start + page_size) if more else "",
            },
            {},
        )

    def _get_kernel(self, rec: RecordedRequest):
        """The kernel's metadata; ``currentVersionNumber`` is its latest accepted version."""
        ref, asked = self._kernel_key(rec.body)
        with self._lock:
            accepted = [p for p in self.pushes if p.ref == ref and p.error is None]
            if not accepted:
                return 404, _error(404, f"Notebook {ref} not found"), {}
            version = self._versions[ref]
            if version > 1 and self._stale_read(ref):
                version -= 1  # Kaggle does not show the new version yet
            shown = [p for p in accepted if p.version_number == (asked or version)]
            if not shown:
                return 404, _error(404, f"Notebook {ref} has no version {asked}"), {}
            body = shown[-1].body
            kernel_id = self._kernel_ids[ref]
        owner, name = ref.split("/", 1)
        metadata = {
            "id": kernel_id,
            "ref": ref,
            "title": body.get("newTitle", name),
            "author": owner,
            "slug": name,
            "language": body.get("language", "python"),
            "kernelType": body.get("kernelType", "notebook"),
            "isPrivate": body.get("isPrivate", True),
            "machineShape": body.get("machineShape") or "",
            "currentVersionNumber": version,
        }
        return (
            200,
            {
                "metadata": metadata,
                "blob": {
                    "source": body.get("text", ""),
                    "language": metadata["language"],
                    "kernelType": metadata["kernelType"],
                    "slug": name,
                },
            },
            {},
        )

    def _download(self, rec: RecordedRequest):
        token = rec.path.rsplit("/", 1)[-1]
        with self._lock:
            data = self._blobs.get(token)
        if data is None or rec.method not in ("GET", "HEAD"):
            return self._unknown(rec, 404, f"No file {token}")
        return 200, data, {}

    # ------------------------------------------------------------ competitions
    def _start_upload(self, rec: RecordedRequest):
        token = f"blob{self._next_id()}"
        with self._lock:
            self._uploads[token] = _Upload(
                rec.body.get("competitionName", ""), rec.body.get("fileName")
            )
        return 200, {"token": token, "createUrl": f"{self.url}/upload/{token}"}, {}

    def _upload(self, rec: RecordedRequest):
        token = rec.path.rsplit("/", 1)[-1]
        with self._lock:
            upload = self._uploads.get(token)
            if upload is None or rec.method != "PUT":
                return self._unknown(rec, 404, f"No upload {token}")
            upload.content = rec.raw
        return 200, None, {}

    def _create_submission(self, rec: RecordedRequest):
        body = rec.body
        token = body.get("blobFileTokens")
        with self._lock:
            upload = self._uploads.get(token) if isinstance(token, str) else None
            if upload is None or upload.content is None:
                return 400, _error(400, f"Unknown or empty blob token {token!r}"), {}
            ref = 50000000 + len(self.submissions) + 1
            self.submissions.append(
                Submission(
                    ref,
                    body.get("competitionName", ""),
                    body.get("submissionDescription"),
                    upload.file_name,
                    upload.content,
                    body,
                )
            )
        return 200, {"message": self.submission_message, "ref": ref}, {}

    def _submission_limits(self, rec: RecordedRequest):
        name = rec.body.get("competitionName")
        with self._lock:
            made = sum(1 for s in self.submissions if s.competition == name)
        return (
            200,
            {
                "numToday": made,
                "numTotal": made,
                "numAllowedNow": max(0, 5 - made),
                "limitedByTotal": False,
            },
            {},
        )

    def _get_submission(self, rec: RecordedRequest):
        ref = rec.body.get("ref")
        with self._lock:
            known = [s for s in self.submissions if s.ref == ref]
        if not known:
            return 404, _error(404, f"Submission {ref} not found"), {}
        sub = known[0]
        return (
            200,
            {
                "ref": sub.ref,
                "status": "COMPLETE",
                "fileName": sub.file_name,
                "description": sub.description or "",
                "publicScore": "0.5",
            },
            {},
        )


def _model(source) -> bool:
    """Whether a model source names a model's version: owner/model/framework/variation/N≥1."""
    parts = str(source).split("/")
    return len(parts) == 5 and all(parts) and parts[4].isdigit() and int(parts[4]) >= 1


def _source_refusal(body: dict) -> str | None:
    """Why Kaggle would refuse this push's sources: a competition it lacks, a malformed model."""
    unknown = [c for c in body.get("competitionDataSources") or [] if c not in COMPETITIONS]
    if unknown:
        return f"Competition not found: {', '.join(unknown)}"
    malformed = [source for source in body.get("modelDataSources") or [] if not _model(source)]
    if malformed:
        return f"Invalid model source {malformed[0]!r}: expected owner/model/framework/variation/N"
    return None


def _refusal(body: dict, ref: str, user: str | None) -> str | None:
    """Why Kaggle would refuse this push (see KAGGLE_RULES), or None."""
    owner, name = ref.split("/", 1)
    if user is not None and owner != user:
        return f"Cannot push {ref}: it belongs to {owner}, not {user}"
    title = body.get("newTitle")
    if title is not None and slugify(title) != name:
        return f"The title {title!r} does not resolve to the kernel slug {name!r}"
    shape = body.get("machineShape")
    if shape and shape not in MACHINE_SHAPES:
        return f"Unknown machine shape {shape!r}"
    refusal = _source_refusal(body)
    if refusal:
        return refusal
    if body.get("kernelType") == "notebook":
        try:
            notebook = json.loads(body.get("text") or "")
        except ValueError:
            return "The notebook is not valid JSON"
        if (
            not isinstance(notebook, dict)
            or not isinstance(notebook.get("cells"), list)
            or not isinstance(notebook.get("metadata"), dict)
        ):
            return "The notebook has no cells or no metadata"
        if not (notebook["metadata"].get("kernelspec") or {}).get("name"):
            return "The notebook has no kernelspec"
        if "kaggle" in notebook["metadata"]:
            return "The notebook carries metadata.kaggle (the accelerator would be ignored)"
    return None


def _key_of(rec: RecordedRequest) -> str | None:
    if rec.method == "CONNECT":
        return None
    if rec.path.startswith("/files/"):
        return "download"
    if rec.path.startswith("/upload/"):
        return "upload"
    if rec.path.startswith(BLOB_PATH):
        return "blob upload"
    return rec.rpc


def _error(status: int, message: str) -> dict:
    return {"code": status, "message": message}


def _auth_of(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    scheme, _, credential = value.partition(" ")
    if scheme.lower() != "basic":
        return scheme, None
    try:
        user = base64.b64decode(credential.strip()).decode().split(":", 1)[0]
    except (binascii.Error, UnicodeDecodeError):
        user = None
    return "Basic", user


@pytest.fixture
def fake_kaggle():
    """A started FakeKaggle on 127.0.0.1; stopped after the test."""
    server = FakeKaggle().start()
    try:
        yield server
    finally:
        server.stop()
