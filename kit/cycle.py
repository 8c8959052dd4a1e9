"""The unattended `build.py run`: push, wait and collect a whole sweep on Kaggle, within the
account's batch sessions; the week's quota read from Kaggle (`weekly_quota`)."""

import time
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from kit import poll as polling
from kit.collect import FINISHED, collected, fetch, partial_text, status
from kit.kaggle_client import KaggleError, call
from kit.pushes import (
    InvalidSources,
    SessionCapReached,
    current_version,
    kernel_stamp,
    push,
    read_state,
    seconds_since,
)


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
