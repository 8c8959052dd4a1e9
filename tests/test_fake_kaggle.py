"""The loopback Kaggle fake, proven against the real ``kaggle`` CLI (2.2.5) run as a subprocess.

Each CLI run takes about 0.4 s (mostly importing the client). What these tests pin down about
the real client, so that the kit knows what it must handle itself:

* ``kernels push`` exits 0 even when Kaggle rejects the push; only stdout says
  "Kernel push error: ...".
* One HTTP 500 or 429 on SaveKernel, GetKernelSessionStatus or ListKernelSessionOutput makes
  the CLI exit 1 at once, with no retry (not even with a Retry-After header); the message goes
  to stderr. The kit must retry itself.
* A 401 on push or submit prints the auth help on stdout and exits 1; on status or output it
  becomes "Cannot access kernel ..." on stderr, exit 1.
* With no credentials at all, the CLI prints the auth help and exits 1 before any request.
"""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests import fake_kaggle as fk

pytestmark = pytest.mark.contract

OWNER = fk.DEFAULT_USERNAME
SLUG = "petals-flowers"
REF = f"{OWNER}/{SLUG}"


def run_kaggle(env, *args, cwd):
    """Run the real client CLI; nothing but the fake is reachable with this env."""
    return subprocess.run(
        [sys.executable, "-m", "kaggle", *args],
        env=env,
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_kernel(folder, **overrides):
    """A minimal valid notebook kernel folder, as the kit would push it."""
    os.makedirs(folder, exist_ok=True)
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "metadata": {},
                "outputs": [],
                "source": ["print('petals')\n"],
            }
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    with open(os.path.join(folder, "petals.ipynb"), "w") as f:
        json.dump(notebook, f)
    metadata = {
        "id": REF,
        "title": "Petals Flowers",
        "code_file": "petals.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": False,
        "enable_tpu": False,
        "enable_internet": False,
        "machine_shape": "TpuV5E8",
        "competition_sources": ["tpu-getting-started"],
        "dataset_sources": [],
        "kernel_sources": [],
        "model_sources": [],
    }
    metadata.update(overrides)
    with open(os.path.join(folder, "kernel-metadata.json"), "w") as f:
        json.dump(metadata, f)
    return str(folder)


@pytest.fixture
def cli(fake_kaggle, tmp_path):
    """``cli(*args)`` runs the real CLI with credentials, aimed at the fake."""
    env = fake_kaggle.environment(tmp_path / "home")

    def run(*args, env=env):
        return run_kaggle(env, *args, cwd=tmp_path)

    return run


def assert_only_fake_traffic(fake):
    """Every request reached a fake endpoint: API calls for localhost, files/uploads for us."""
    assert fake.unknown_requests == [] and fake.errors == []
    for request in fake.requests:
        expected = "localhost" if request.rpc else f"127.0.0.1:{fake.port}"
        assert request.host == expected, request


# --------------------------------------------------------------------- push
def test_push_sends_the_notebook_and_versions_increase(fake_kaggle, cli, tmp_path):
    folder = write_kernel(tmp_path / "kernel")
    first = cli("kernels", "push", "-p", folder)
    assert first.returncode == 0, first.stderr
    assert "Kernel version 1 successfully pushed" in first.stdout
    assert f"https://www.kaggle.com/code/{REF}" in first.stdout

    push = fake_kaggle.last_push(REF)
    assert push.version_number == 1 and push.error is None
    assert push.body["slug"] == REF and push.body["newTitle"] == "Petals Flowers"
    assert push.machine_shape == "TpuV5E8"
    assert push.body["kernelType"] == "notebook" and push.body["language"] == "python"
    assert push.body["competitionDataSources"] == ["tpu-getting-started"]
    assert push.body["isPrivate"] is True and push.body["enableInternet"] is False
    assert push.notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert push.notebook["cells"][0]["source"] == "print('petals')\n"

    second = cli("kernels", "push", "-p", folder)
    assert "Kernel version 2 successfully pushed" in second.stdout
    assert [p.version_number for p in fake_kaggle.pushes_for(REF)] == [1, 2]
    assert fake_kaggle.version_of(REF) == 2
    calls = fake_kaggle.calls("SaveKernel")
    assert len(calls) == 2 and all(c.user == OWNER and c.auth_scheme == "Basic" for c in calls)
    assert all(c.headers["Authorization"] == "Basic <redacted>" for c in calls)
    assert_only_fake_traffic(fake_kaggle)


def test_a_rejected_push_still_exits_0(fake_kaggle, cli, tmp_path):
    """The client only prints the server's error: the kit must read stdout, not the exit code."""
    folder = write_kernel(tmp_path / "kernel")
    fake_kaggle.reject_next_push("Maximum weekly TPU quota reached")
    rejected = cli("kernels", "push", "-p", folder)
    assert rejected.returncode == 0
    assert rejected.stdout.startswith("Kernel push error: Maximum weekly TPU quota reached")
    assert fake_kaggle.last_push(REF).error == "Maximum weekly TPU quota reached"
    assert fake_kaggle.version_of(REF) == 0

    accepted = cli("kernels", "push", "-p", folder)
    assert "Kernel version 1 successfully pushed" in accepted.stdout
    assert_only_fake_traffic(fake_kaggle)


# --------------------------------------------------------------------- status and output
def test_status_follows_the_scripted_sequence(fake_kaggle, cli):
    fake_kaggle.set_statuses(REF, ["QUEUED", "RUNNING", "COMPLETE"])
    seen = []
    for _ in range(3):
        result = cli("kernels", "status", REF)
        assert result.returncode == 0, result.stderr
        seen.append(result.stdout.strip())
    assert seen == [
        f'{REF} has status "KernelWorkerStatus.{s}"' for s in ("QUEUED", "RUNNING", "COMPLETE")
    ]
    assert [c.body for c in fake_kaggle.calls("GetKernelSessionStatus")] == [
        {"userName": OWNER, "kernelSlug": SLUG}
    ] * 3
    assert_only_fake_traffic(fake_kaggle)


def test_status_of_a_version_with_a_failure_message(fake_kaggle, cli):
    fake_kaggle.set_statuses(REF, ["RUNNING"])
    fake_kaggle.set_statuses(REF, [("ERROR", "CUDA out of memory")], version=2)
    result = cli("kernels", "status", f"{REF}/2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f'{REF}/2 has status "KernelWorkerStatus.ERROR"',
        'Failure message: "CUDA out of memory"',
    ]
    assert fake_kaggle.calls("GetKernelSessionStatus")[0].body["versionLabel"] == "v2"
    assert "RUNNING" in cli("kernels", "status", REF).stdout


def test_output_downloads_files_and_writes_the_log(fake_kaggle, cli, tmp_path):
    csv = b"id,label\na762df180,0\nb1,103\n"
    fake_kaggle.set_output(
        REF, {"submission.csv": csv, "metrics.json": '{"f1": 0.5}'}, log=["epoch 1", "done"]
    )
    target = tmp_path / "out"
    result = cli("kernels", "output", REF, "-p", str(target))
    assert result.returncode == 0, result.stderr
    assert (target / "submission.csv").read_bytes() == csv
    assert json.loads((target / "metrics.json").read_text()) == {"f1": 0.5}
    log = json.loads((target / f"{SLUG}.log").read_text())
    assert [entry["data"] for entry in log] == ["epoch 1\n", "done\n"]
    assert {entry["stream_name"] for entry in log} == {"stdout"}
    assert len(fake_kaggle.calls("download")) == 2
    assert all(c.user is None for c in fake_kaggle.calls("download"))  # files carry no auth
    assert fake_kaggle.calls("ListKernelSessionOutput")[0].body == {
        "userName": OWNER,
        "kernelSlug": SLUG,
        "pageSize": 20,
        "pageToken": "",
    }
    assert_only_fake_traffic(fake_kaggle)


# --------------------------------------------------------------------- faults
@pytest.mark.parametrize(
    "status, hint",
    [
        (500, "This is a problem on Kaggle's side"),
        (429, "You have been rate limited"),
    ],
)
@pytest.mark.parametrize("command", ["push", "status"])
def test_one_transient_error_fails_the_cli_without_retry(
    fake_kaggle, cli, tmp_path, command, status, hint
):
    """The real CLI does not retry: one 500/429 (even with Retry-After) means exit 1."""
    method = {"push": "SaveKernel", "status": "GetKernelSessionStatus"}[command]
    args = {
        "push": ("kernels", "push", "-p", write_kernel(tmp_path / "kernel")),
        "status": ("kernels", "status", REF),
    }[command]
    fake_kaggle.set_statuses(REF, ["COMPLETE"])
    fake_kaggle.fail_next(method, 1, status, retry_after=1)

    failed = cli(*args)
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert f"Fake Kaggle fault: HTTP {status}" in failed.stderr and hint in failed.stderr
    assert [c.status for c in fake_kaggle.calls(method)] == [status]  # no retry

    recovered = cli(*args)
    assert recovered.returncode == 0, recovered.stderr
    assert [c.status for c in fake_kaggle.calls(method)] == [status, 200]


def test_a_failed_output_download_fails_the_cli(fake_kaggle, cli, tmp_path):
    fake_kaggle.set_output(REF, {"submission.csv": b"id,label\n"}, log="[]")
    fake_kaggle.fail_next("download", 1, 500)
    target = tmp_path / "out"
    result = cli("kernels", "output", REF, "-p", str(target))
    assert result.returncode == 1 and "500 Server Error" in result.stderr
    assert not (target / "submission.csv").exists()
    assert cli("kernels", "output", REF, "-p", str(target)).returncode == 0
    assert (target / "submission.csv").read_bytes() == b"id,label\n"


def test_no_credentials_prints_auth_help_before_any_request(fake_kaggle, tmp_path):
    env = fake_kaggle.environment(tmp_path / "home", username=None)
    assert not any(
        k.startswith("KAGGLE_") and k not in ("KAGGLE_CONFIG_DIR", "KAGGLE_API_ENVIRONMENT")
        for k in env
    )
    result = run_kaggle(
        env, "kernels", "push", "-p", write_kernel(tmp_path / "kernel"), cwd=tmp_path
    )
    assert result.returncode == 1
    assert "Authentication required to call the Kaggle API" in result.stdout
    assert fake_kaggle.requests == []


def test_wrong_key_gets_401(fake_kaggle, tmp_path):
    """Push: auth help on stdout. Status: the client rewrites 401 into "Cannot access kernel"."""
    fake_kaggle.require_auth(OWNER, "the-right-key")
    env = fake_kaggle.environment(tmp_path / "home", key="a-wrong-key")
    push = run_kaggle(env, "kernels", "push", "-p", write_kernel(tmp_path / "kernel"), cwd=tmp_path)
    assert push.returncode == 1
    assert "Authentication required to call the Kaggle API" in push.stdout
    status = run_kaggle(env, "kernels", "status", REF, cwd=tmp_path)
    assert status.returncode == 1 and f"Cannot access kernel '{REF}'" in status.stderr
    assert [r.status for r in fake_kaggle.requests] == [401, 401]
    assert fake_kaggle.pushes == []


def test_https_escapes_are_refused_and_recorded(fake_kaggle, tmp_path):
    """Without KAGGLE_API_ENVIRONMENT the client aims at https://api.kaggle.com; the proxy
    settings still route it here, where the CONNECT is refused and kept as unknown."""
    env = fake_kaggle.environment(tmp_path / "home")
    del env["KAGGLE_API_ENVIRONMENT"]
    result = run_kaggle(env, "kernels", "status", REF, cwd=tmp_path)
    assert result.returncode == 1 and "Tunnel connection failed: 405" in result.stderr
    [escape] = fake_kaggle.unknown_requests
    assert (escape.method, escape.host, escape.status) == ("CONNECT", "api.kaggle.com:443", 405)


# --------------------------------------------------------------------- submissions
def test_submit_uploads_the_file_and_the_message(fake_kaggle, tmp_path):
    fake_kaggle.require_auth()  # the default credential, the one environment() hands out
    env = fake_kaggle.environment(tmp_path / "home")
    content = b"id,label\na762df180,0\nb1,103\n"
    (tmp_path / "submission.csv").write_bytes(content)
    result = run_kaggle(
        env,
        "competitions",
        "submit",
        "tpu-getting-started",
        "-f",
        "submission.csv",
        "-m",
        "petals run 7",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Successfully submitted" in result.stdout
    [submission] = fake_kaggle.submissions
    assert f"Submission ref: {submission.ref}" in result.stdout
    assert "4 submissions remaining today" in result.stdout
    assert submission.competition == "tpu-getting-started"
    assert submission.description == "petals run 7"
    assert submission.file_name == "submission.csv" and submission.content == content
    assert [r.rpc or r.path.split("/")[1] for r in fake_kaggle.requests] == [
        "StartSubmissionUpload",
        "upload",
        "CreateSubmission",
        "GetSubmissionLimits",
    ]
    start = fake_kaggle.calls("StartSubmissionUpload")[0].body
    assert start["contentLength"] == len(content) and start["fileName"] == "submission.csv"
    assert_only_fake_traffic(fake_kaggle)


# --------------------------------------------------------------------- the fake itself
def direct():
    """A requests session that ignores this process's proxy settings."""
    session = requests.Session()
    session.trust_env = False
    return session


def test_environment_drops_kaggle_and_proxy_variables(fake_kaggle, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "real-secret")
    monkeypatch.setenv("KAGGLE_USERNAME", "real-user")
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    monkeypatch.setenv("ALL_PROXY", "http://elsewhere:3128")
    env = fake_kaggle.environment(tmp_path / "home")
    proxy = f"http://127.0.0.1:{fake_kaggle.port}"
    assert "KAGGLE_API_TOKEN" not in env and "ALL_PROXY" not in env
    assert env["KAGGLE_USERNAME"] == fk.DEFAULT_USERNAME and env["KAGGLE_KEY"] == fk.DEFAULT_KEY
    assert env["HOME"] == str(tmp_path / "home")
    assert env["KAGGLE_CONFIG_DIR"] == str(tmp_path / "home" / ".kaggle")
    assert env["KAGGLE_API_ENVIRONMENT"] == "LOCALHOST"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        assert env[name] == proxy
    assert env["NO_PROXY"] == env["no_proxy"] == ""


def test_unknown_paths_faults_and_auth_answer_json(fake_kaggle):
    session = direct()
    rpc = f"{fake_kaggle.url}/api/v1/kernels.KernelsApiService/GetKernelSessionStatus"
    body = {"userName": OWNER, "kernelSlug": SLUG}

    missing = session.post(
        f"{fake_kaggle.url}/api/v1/kernels.KernelsApiService/DeleteKernel", json=body
    )
    assert missing.status_code == 404 and missing.json()["code"] == 404
    assert [r.path for r in fake_kaggle.unknown_requests] == [
        "/api/v1/kernels.KernelsApiService/DeleteKernel"
    ]
    assert session.post(rpc, json=body).status_code == 404  # never pushed nor scripted

    fake_kaggle.set_statuses(REF, ["RUNNING"])
    fake_kaggle.fail_next("GetKernelSessionStatus", 2, 429, retry_after=3)
    first, second, third = (session.post(rpc, json=body) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (429, 429, 200)
    assert first.headers["Retry-After"] == "3" and first.json()["code"] == 429
    assert third.json() == {"status": "RUNNING"}

    fake_kaggle.require_auth("alice", "k1")
    denied = session.post(rpc, json=body)
    assert denied.status_code == 401
    assert denied.json() == {"code": 401, "message": "Unauthenticated"}
    good = "Basic " + base64.b64encode(b"alice:k1").decode()
    assert session.post(rpc, json=body, headers={"Authorization": good}).status_code == 200
    assert fake_kaggle.errors == []


def test_chunked_upload_and_paged_output(fake_kaggle):
    session = direct()
    api = f"{fake_kaggle.url}/api/v1/competitions.CompetitionApiService"
    start = session.post(
        f"{api}/StartSubmissionUpload", json={"competitionName": "c", "fileName": "s.csv"}
    ).json()
    put = session.put(start["createUrl"], data=iter([b"id,", b"label\n"]))  # chunked
    assert put.status_code == 200
    made = session.post(
        f"{api}/CreateSubmission", json={"competitionName": "c", "blobFileTokens": start["token"]}
    )
    assert made.json()["message"] == "Successfully submitted"
    assert fake_kaggle.submissions[0].content == b"id,label\n"

    fake_kaggle.set_output(REF, {f"f{i}.txt": str(i) for i in range(3)}, log="")
    rpc = f"{fake_kaggle.url}/api/v1/kernels.KernelsApiService/ListKernelSessionOutput"
    page = session.post(rpc, json={"userName": OWNER, "kernelSlug": SLUG, "pageSize": 2}).json()
    assert [f["fileName"] for f in page["files"]] == ["f0.txt", "f1.txt"]
    assert page["nextPageToken"] == "2"
    rest = session.post(
        rpc, json={"userName": OWNER, "kernelSlug": SLUG, "pageSize": 2, "pageToken": "2"}
    ).json()
    assert [f["fileName"] for f in rest["files"]] == ["f2.txt"] and rest["nextPageToken"] == ""
    assert session.get(rest["files"][0]["url"]).content == b"2"


# --------------------------------------------------------------------- Kaggle's rules
@pytest.mark.parametrize(
    "change, refusal",
    [
        ({"machine_shape": "TpuV9000"}, "Unknown machine shape 'TpuV9000'"),
        ({"title": "Another Title"}, "does not resolve to the kernel slug 'petals-flowers'"),
        (
            {"id": "somebody-else/petals-flowers", "title": "Petals Flowers"},
            f"it belongs to somebody-else, not {OWNER}",
        ),
        (
            {"competition_sources": ["no-such-competition"]},
            "Competition not found: no-such-competition",
        ),
        ({"kernelspec": None}, "The notebook has no kernelspec"),
        ({"model_sources": ["keras/hgnetv2/keras/hgnetv2_b4/0"]}, "Invalid model source"),
        ({"kaggle_metadata": True}, "carries metadata.kaggle"),
    ],
)
def test_a_push_kaggle_would_refuse_is_refused(fake_kaggle, cli, tmp_path, change, refusal):
    """The fake checks a pushed kernel the way Kaggle does, so an accepted push means
    something; the client itself lets every one of these through."""
    change = dict(change)
    kernelspec, kaggle_metadata = (
        change.pop("kernelspec", True),
        change.pop("kaggle_metadata", False),
    )
    folder = write_kernel(tmp_path / "kernel", **change)
    notebook_path = os.path.join(folder, "petals.ipynb")
    with open(notebook_path) as handle:
        notebook = json.load(handle)
    if not kernelspec:
        del notebook["metadata"]["kernelspec"]
    if kaggle_metadata:
        notebook["metadata"]["kaggle"] = {"accelerator": "none"}
    with open(notebook_path, "w") as handle:
        json.dump(notebook, handle)
    result = cli("kernels", "push", "-p", folder)
    assert result.returncode == 0  # the client exits 0 and prints the refusal
    assert "Kernel push error: " in result.stdout and refusal in result.stdout, result.stdout
    assert fake_kaggle.accepted() == [] and fake_kaggle.pushes[0].error is not None


def test_the_session_cap_refuses_with_kaggles_text(fake_kaggle, cli, tmp_path):
    fake_kaggle.configure(session_cap=1)  # untimed: a session ends when it is seen finished
    first = write_kernel(tmp_path / "first")
    second = write_kernel(tmp_path / "second", id=f"{OWNER}/petals-second", title="Petals Second")
    gpu = write_kernel(
        tmp_path / "gpu",
        id=f"{OWNER}/petals-gpu",
        title="Petals GPU",
        machine_shape="NvidiaTeslaT4",
    )
    fake_kaggle.set_statuses(REF, ["RUNNING", "COMPLETE"])
    assert "Kernel version 1 successfully pushed" in cli("kernels", "push", "-p", first).stdout
    refused = cli("kernels", "push", "-p", second)
    assert refused.stdout.startswith(
        "Kernel push error: Maximum batch TPU session count of 1 reached."
    )
    # GPU sessions are another pool.
    assert "successfully pushed" in cli("kernels", "push", "-p", gpu).stdout
    assert "RUNNING" in cli("kernels", "status", REF).stdout
    assert "Maximum batch TPU" in cli("kernels", "push", "-p", second).stdout
    assert "COMPLETE" in cli("kernels", "status", REF).stdout  # the session ended
    assert "successfully pushed" in cli("kernels", "push", "-p", second).stdout
    assert fake_kaggle.peak_sessions == 1
    assert [push.ref for push in fake_kaggle.accepted()] == [
        REF,
        f"{OWNER}/petals-gpu",
        f"{OWNER}/petals-second",
    ]


def test_sessions_are_queued_then_run_for_their_time(fake_kaggle):
    """A timed session's status at given moments (seconds after its push)."""
    session = fk._Session(
        REF,
        1,
        "TPU",
        started=0.0,
        queue_seconds=1.0,
        run_seconds=2.0,
        outcome=("ERROR", "boom"),
        time_limit=None,
    )
    assert [session.status(moment)[0] for moment in (0.5, 1.5, 2.9)] == [
        "QUEUED",
        "RUNNING",
        "RUNNING",
    ]
    assert session.status(3.1) == ("ERROR", "boom") and not session.active(3.1)
    too_long = fk._Session(
        REF,
        1,
        "TPU",
        started=0.0,
        queue_seconds=0.0,
        run_seconds=10.0,
        outcome=("COMPLETE", None),
        time_limit=4.0,
    )
    assert too_long.status(3.9) == ("RUNNING", None) and too_long.active(3.9)
    name, message = too_long.status(4.1)
    assert name == "ERROR" and "time limit of 4 s" in message


def test_get_kernel_tells_the_latest_version(fake_kaggle, cli, tmp_path):
    session = direct()
    rpc = f"{fake_kaggle.url}/api/v1/kernels.KernelsApiService/GetKernel"
    body = {"userName": OWNER, "kernelSlug": SLUG}
    assert session.post(rpc, json=body).status_code == 404
    folder = write_kernel(tmp_path / "kernel")
    for _ in range(2):
        assert cli("kernels", "push", "-p", folder).returncode == 0
    metadata = session.post(rpc, json=body).json()["metadata"]
    assert metadata["currentVersionNumber"] == 2 and metadata["ref"] == REF


def pulled_source(cli, tmp_path, kernel):
    """The notebook source `kaggle kernels pull` writes for `kernel` (owner/slug[/N])."""
    target = tmp_path / "pulled" / kernel.replace("/", "-")
    result = cli("kernels", "pull", kernel, "-p", str(target))
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = [path for path in target.iterdir() if path.suffix == ".ipynb"]
    return json.loads(path.read_text())["cells"][0]["source"]


def test_each_version_keeps_its_source_and_an_editor_save_is_one_more(fake_kaggle, cli, tmp_path):
    """`kernels pull owner/slug/N` reads version N's source (GetKernel with a version label); a
    version saved in the editor has its own source and counts like any other."""
    folder = write_kernel(tmp_path / "kernel")
    assert cli("kernels", "push", "-p", folder).returncode == 0
    notebook_path = Path(folder) / "petals.ipynb"
    notebook = json.loads(notebook_path.read_text())
    notebook["cells"][0]["source"] = ["print('second')\n"]
    notebook_path.write_text(json.dumps(notebook))
    assert cli("kernels", "push", "-p", folder).returncode == 0
    edited = dict(notebook, cells=[dict(notebook["cells"][0], source="print('edited')\n")])
    assert fake_kaggle.save_in_editor(REF, json.dumps(edited)) == 3
    assert pulled_source(cli, tmp_path, f"{REF}/1") == "print('petals')\n"
    assert pulled_source(cli, tmp_path, f"{REF}/2") == "print('second')\n"
    assert pulled_source(cli, tmp_path, REF) == "print('edited')\n"
    assert fake_kaggle.version_of(REF) == 3
    # An editor save as the next push arrives: that push makes version 5.
    fake_kaggle.save_in_editor(REF, json.dumps(edited), during_next_push=True)
    assert "Kernel version 5 successfully" in cli("kernels", "push", "-p", folder).stdout
    assert_only_fake_traffic(fake_kaggle)


def test_stale_reads_show_the_version_before_the_latest(fake_kaggle, cli, tmp_path):
    """Right after a push Kaggle may not show the new version: a status read of it answers the
    previous version's, GetKernel names the previous one as current, for `count` reads."""
    folder = write_kernel(tmp_path / "kernel")
    fake_kaggle.set_statuses(REF, [("ERROR", "first failed")], version=1)
    fake_kaggle.set_statuses(REF, ["RUNNING"], version=2)
    for _ in range(2):
        assert cli("kernels", "push", "-p", folder).returncode == 0
    fake_kaggle.stale_reads(REF, count=2)
    stale = cli("kernels", "status", f"{REF}/2")
    assert "ERROR" in stale.stdout and "first failed" in stale.stdout
    session = direct()
    rpc = f"{fake_kaggle.url}/api/v1/kernels.KernelsApiService/GetKernel"
    body = {"userName": OWNER, "kernelSlug": SLUG}
    assert session.post(rpc, json=body).json()["metadata"]["currentVersionNumber"] == 1
    assert session.post(rpc, json=body).json()["metadata"]["currentVersionNumber"] == 2
    assert "RUNNING" in cli("kernels", "status", f"{REF}/2").stdout


# --------------------------------------------------------------------- what Kaggle does besides
def test_an_accepted_push_whose_answer_is_lost(fake_kaggle, cli, tmp_path):
    """Every third accepted push: the version is made and its session starts, but the client
    sees a dropped connection; a refused push does not count."""
    folder = write_kernel(tmp_path / "kernel")
    fake_kaggle.lose_answers("SaveKernel", every=3)
    fake_kaggle.reject_next_push("not counted")
    assert cli("kernels", "push", "-p", folder).stdout.startswith("Kernel push error")
    for version in (1, 2):
        assert (
            f"Kernel version {version} successfully" in cli("kernels", "push", "-p", folder).stdout
        )
    lost = cli("kernels", "push", "-p", folder)
    assert lost.returncode == 1 and "closed connection without response" in lost.stderr
    assert fake_kaggle.version_of(REF) == 3 and len(fake_kaggle.lost_answers) == 1
    assert len(fake_kaggle.active_sessions()) == 3
    assert "Kernel version 4 successfully" in cli("kernels", "push", "-p", folder).stdout


def test_sources_kaggle_cannot_attach_are_listed_in_the_push_answer(fake_kaggle, tmp_path):
    folder = write_kernel(
        tmp_path / "kernel", dataset_sources=["someone/private-data", "someone/public-data"]
    )
    fake_kaggle.invalid_sources("someone/private-data")
    environment = fake_kaggle.environment(tmp_path / "home")
    script = (
        "from kaggle.api.kaggle_api_extended import KaggleApi\n"
        "api = KaggleApi(); api.authenticate()\n"
        f"answer = api.kernels_push({folder!r})\n"
        "print(answer.version_number, answer.invalid_dataset_sources, bool(answer.error))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 ['someone/private-data'] False"
    assert len(fake_kaggle.active_sessions()) == 1  # it runs, without that dataset


def test_quota_as_the_cli_shows_it(fake_kaggle, cli):
    from datetime import UTC, datetime

    fake_kaggle.set_quota(
        tpu_used=29,
        tpu_allowed=30,
        gpu_used=2.5,
        gpu_allowed=30,
        refresh=datetime(2026, 12, 5, tzinfo=UTC),
    )
    result = cli("quota")
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["GPU", "2.50h", "27.50h", "30.00h", "2026-12-05T00:00:00+00:00"] in lines
    assert ["TPU", "29.00h", "1.00h", "30.00h", "2026-12-05T00:00:00+00:00"] in lines


def test_a_429_carries_its_retry_after(fake_kaggle):
    fake_kaggle.fail_next("GetKernelSessionStatus", status=429, retry_after=7)
    answer = direct().post(
        f"{fake_kaggle.url}/api/v1/kernels.KernelsApiService/GetKernelSessionStatus",
        json={"userName": OWNER, "kernelSlug": SLUG},
    )
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "7"


# --------------------------------------------------------------------- datasets
DATASET_CLIENT = """
import json, sys
from kaggle.api.kaggle_api_extended import KaggleApi
api = KaggleApi(); api.authenticate()
folder, ref = sys.argv[1], sys.argv[2]
created = api.dataset_create_new(folder, public=False, quiet=True)
status = api.dataset_status(ref)
again = api.dataset_create_new(folder, public=False, quiet=True)  # the slug is in use now
open(folder + "/new.bin", "wb").write(b"new program")
version = api.dataset_create_version(folder, "a new program", quiet=True)
listed = api.dataset_list_files(ref, page_size=2)
names = [item.name for item in listed.dataset_files]
while listed.next_page_token:
    listed = api.dataset_list_files(ref, page_token=listed.next_page_token, page_size=2)
    names += [item.name for item in listed.dataset_files]
with api.build_kaggle_client() as client:
    from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetRequest
    request = ApiGetDatasetRequest()
    request.owner_slug, request.dataset_slug = ref.split("/")
    dataset = client.datasets.dataset_api_client.get_dataset(request)
print(json.dumps({"created": [created.status, created.error], "status": status,
                  "again": again.error, "version": version.status, "names": names,
                  "current": dataset.current_version_number, "private": dataset.is_private}))
"""


def test_datasets_are_created_versioned_listed_and_private(fake_kaggle, tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    ref = f"{OWNER}/petals-compile-cache-abc"
    (folder / "dataset-metadata.json").write_text(
        json.dumps({"id": ref, "title": "Petals compile cache", "licenses": [{"name": "CC0-1.0"}]})
    )
    for name in ("a-cache", "b-cache", "image.json"):
        (folder / name).write_bytes(name.encode())
    environment = fake_kaggle.environment(tmp_path / "home")
    result = subprocess.run(
        [sys.executable, "-c", DATASET_CLIENT, str(folder), ref],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["created"][0] == "ok" and not answer["created"][1]
    assert answer["status"] == "ready"
    assert "already in use" in answer["again"]
    assert answer["version"] == "ok" and answer["current"] == 2 and answer["private"] is True
    assert answer["names"] == ["a-cache", "b-cache", "image.json", "new.bin"]  # paged by two
    assert fake_kaggle.dataset_files(ref, version=1) == {
        "a-cache": b"a-cache",
        "b-cache": b"b-cache",
        "image.json": b"image.json",
    }
    assert fake_kaggle.dataset_files(ref)["new.bin"] == b"new program"
    assert_only_fake_traffic(fake_kaggle)


def test_another_users_private_dataset_is_invisible_and_not_attached(fake_kaggle, cli, tmp_path):
    fake_kaggle.add_dataset("mallory/petals-compile-cache-abc", {"a-cache": b"x"})
    fake_kaggle.add_dataset(f"{OWNER}/petals-compile-cache-abc", {"a-cache": b"y"})
    status = cli("datasets", "status", "mallory/petals-compile-cache-abc")
    assert status.returncode == 1 and "not found" in status.stderr
    folder = write_kernel(
        tmp_path / "kernel",
        dataset_sources=["mallory/petals-compile-cache-abc", f"{OWNER}/petals-compile-cache-abc"],
    )
    assert "successfully pushed" in cli("kernels", "push", "-p", folder).stdout
    push = fake_kaggle.last_push(REF)
    assert push.body["datasetDataSources"] == [
        "mallory/petals-compile-cache-abc",
        f"{OWNER}/petals-compile-cache-abc",
    ]
    # Only the caller's own dataset is attached, at its current version.
    assert fake_kaggle.attached(REF) == {f"{OWNER}/petals-compile-cache-abc": 1}
