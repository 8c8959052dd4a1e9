"""The whole push → status → collect → results → submit cycle, offline, with the real client.

`build.py` runs as a subprocess whose only reachable host is the fake Kaggle on 127.0.0.1.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PAIR_SIZES, assert_names, build_py, copy_of
from tests.fake_kaggle import DEFAULT_KEY, DEFAULT_USERNAME

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parent.parent
SWEEP = REPOSITORY / "sweeps" / "competition.toml"
SLUG = "petals-flowers-512-densenet201"  # not the default variant: --only is exercised
DEFAULT_SLUG = "petals-flowers-512-efficientnet-b7"
REF = f"{DEFAULT_USERNAME}/{SLUG}"
ROWS = 4


def submission_bytes(rows=ROWS):
    return "id,label\n" + "".join(f"{index:09x},{index % 104}\n" for index in range(rows))


METRICS = json.dumps(
    {
        "parameters": {"IMAGE_SIZE": 512, "BACKBONES": ["densenet201"], "EPOCHS": 12},
        "blend_f1": 0.9512,
        "blend_weights": {"densenet201": 1.0},
        "seconds_per_epoch": {"densenet201": 51.0},
        "images_per_second": {"densenet201": 250.0},
    }
)


@pytest.fixture(scope="module")
def built_kernels(tmp_path_factory):
    """The two variants' kernels, built once for every test here (building talks to no Kaggle:
    the same files for each test, which gets a copy of its own)."""
    folder = tmp_path_factory.mktemp("built")
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "build.py"), "kernels", "--sweep", str(SWEEP)]
        + ["--owner", DEFAULT_USERNAME, "--only", DEFAULT_SLUG, SLUG],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return folder / "kernels"


@pytest.fixture
def kit(fake_kaggle, tmp_path, built_kernels):
    """Run build.py verbs in a scratch folder holding the built kernels; returns a function
    (verb, *args) → result."""
    environment = fake_kaggle.environment(tmp_path / "home")
    shutil.copytree(built_kernels, tmp_path / "kernels")

    def run(*arguments, env=None):
        return subprocess.run(
            [sys.executable, str(REPOSITORY / "build.py"), *arguments],
            cwd=tmp_path,
            env={**(env or environment), "PYTHONPATH": str(REPOSITORY)},
            capture_output=True,
            text=True,
            timeout=120,
        )

    run.environment = environment
    run.folder = tmp_path
    return run


def selection():
    return ["--sweep", str(SWEEP), "--only", SLUG]


def test_real_client_accepts_a_built_kernel(kit, fake_kaggle):
    """The real `kaggle kernels push` sends a built kernel as Kaggle takes it: TPU, private,
    the competition attached, a kernelspec and no metadata Kaggle refuses."""
    result = subprocess.run(
        [sys.executable, "-m", "kaggle", "kernels", "push", "-p", f"kernels/{SLUG}"],
        cwd=kit.folder,
        env=kit.environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Kernel version 1 successfully pushed" in result.stdout, result.stdout + result.stderr
    push = fake_kaggle.last_push(REF)
    assert push.machine_shape == "TpuV5E8" and push.body["isPrivate"] is True
    assert push.body["competitionDataSources"] == ["tpu-getting-started"]
    assert push.notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert "kaggle" not in push.notebook["metadata"]  # the fake refuses what Kaggle would


def test_push_status_collect_results_submit(kit, fake_kaggle):
    """The whole cycle through the real client: push, status, collect (queued, running,
    complete), the results table and submit."""
    result = kit("push", *selection())
    assert result.returncode == 0 and f"{REF}: version 1 pushed" in result.stdout
    fake_kaggle.set_statuses(REF, ["QUEUED", "RUNNING", "COMPLETE"])
    fake_kaggle.set_output(
        REF,
        {"submission.csv": submission_bytes(), "metrics.json": METRICS},
        log=["training\n", "DONE\n"],
    )
    status = kit("status", *selection()).stdout
    assert f"{SLUG}: v1 queued, " in status and "s since its push — estimate" in status
    result = kit("collect", *selection(), "--poll", "0.01", "--expected-rows", str(ROWS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RUNNING" in result.stdout and "COMPLETE" in result.stdout
    version_1 = kit.folder / "runs" / SLUG / "v1"
    assert (version_1 / "submission.csv").read_text() == submission_bytes()
    assert (version_1 / f"{SLUG}.log").exists()
    assert json.loads((version_1 / "collected.json").read_text())["problem"] is None

    # A second version goes to its own folder; the first is left as it was.
    assert kit("push", *selection()).returncode == 0
    # The second version blends two models: its weights were searched on half of validation.
    blend = json.loads(METRICS) | {
        "blend_f1": 0.9012,
        "blend_f1_in_sample": 0.9254,
        "blend_weights": {"densenet201": 0.65, "efficientnet_b7": 0.35},
    }
    fake_kaggle.set_output(
        REF, {"submission.csv": submission_bytes(), "metrics.json": json.dumps(blend)}, version=2
    )
    before = (version_1 / "collected.json").stat().st_mtime_ns
    assert (
        kit("collect", *selection(), "--poll", "0.01", "--expected-rows", str(ROWS)).returncode == 0
    )
    assert (kit.folder / "runs" / SLUG / "v2" / "submission.csv").exists()
    assert (version_1 / "collected.json").stat().st_mtime_ns == before
    # Collecting again resumes: nothing is downloaded twice.
    downloads = len(fake_kaggle.calls("download"))
    assert "collected already" in kit("collect", *selection(), "--poll", "0.01").stdout
    assert len(fake_kaggle.calls("download")) == downloads

    result = kit("results")
    assert result.returncode == 0
    table = (kit.folder / "runs" / "results.md").read_text()
    assert (
        f"| {SLUG} | v1 | 512 | densenet201 | 12 |  | 0.9512 | 0.9512 | densenet201:1.00 | 51.0 "
        "| 250 |" in table
    )
    assert (kit.folder / "runs" / "results.csv").read_text().count("\n") == 3

    result = kit("submit", SLUG, "--sweep", str(SWEEP))
    assert result.returncode == 0, result.stderr
    (submitted,) = fake_kaggle.submissions
    assert submitted.competition == "tpu-getting-started"
    assert submitted.content.decode() == submission_bytes()
    assert submitted.description == f"petals {SLUG} v2 validation F1 0.9012 (in-sample 0.9254)"


def test_rejected_push_is_a_failure(kit, fake_kaggle):
    """A push Kaggle rejects exits 1 with one line passing on Kaggle's reason; no state kept."""
    fake_kaggle.reject_next_push("Notebook not found")
    result = kit("push", *selection())
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert_names(line, REF, "Notebook not found")  # Kaggle's own words, passed on
    assert not (kit.folder / "runs" / SLUG / "pushes.json").exists()


def test_missing_or_wrong_credentials_give_one_line(kit, fake_kaggle, tmp_path):
    """No credentials, or credentials Kaggle refuses (401): one line, no traceback, no push."""
    no_credentials = fake_kaggle.environment(tmp_path / "empty-home", username=None)
    result = kit("push", *selection(), env=no_credentials)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: no Kaggle credentials: set KAGGLE_USERNAME")
    assert len(result.stderr.strip().splitlines()) == 1
    assert fake_kaggle.calls("SaveKernel") == []
    fake_kaggle.require_auth(DEFAULT_USERNAME, "another-key")
    result = kit("push", *selection())
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "refused the credentials (HTTP 401)" in result.stderr


PUSH_HERE = """
import json, sys
from kit import pushes
from kit.kaggle_client import KaggleError, connect

waits = []
try:
    outcome = pushes.push(sys.argv[1], sys.argv[2], sys.argv[3], connect(), sleep=waits.append)
except KaggleError as error:
    outcome = str(error)
print(json.dumps({"waits": waits, "outcome": outcome}))
"""


def push_here(kit):
    """`pushes.push` of the variant in a child process with the real client, its waits recorded
    rather than slept: (what it printed, the waits, the version or the error's line)."""
    result = subprocess.run(
        [sys.executable, "-c", PUSH_HERE, f"kernels/{SLUG}", f"runs/{SLUG}", REF],
        cwd=kit.folder,
        env={**kit.environment, "PYTHONPATH": str(REPOSITORY)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    *printed, last = result.stdout.strip().splitlines()
    answer = json.loads(last)
    return "\n".join(printed), answer["waits"], answer["outcome"]


def test_a_429_is_retried_after_its_retry_after(kit, fake_kaggle):
    """A 429 is retried after its Retry-After (or a default wait), and the retry is said."""
    fake_kaggle.fail_next("SaveKernel", status=429, retry_after=3)
    fake_kaggle.fail_next("GetKernelSessionStatus", status=429)
    result = kit("push", *selection())
    assert result.returncode == 0, result.stderr
    assert len(fake_kaggle.calls("SaveKernel")) == 2 and len(fake_kaggle.accepted()) == 1
    assert f"push {REF}: retrying in 3 s (attempt 1 of 5)" in result.stdout
    result = kit("status", *selection())
    assert result.returncode == 0 and f"{SLUG}: v1 complete" in result.stdout
    assert "retrying in 1 s" in result.stdout


def test_a_push_answered_500_is_sent_again_only_after_kaggle_had_minutes_to_show_it(
    kit, fake_kaggle
):
    """A push answered 500 may have been carried out by a slow Kaggle: it is looked for, with
    backoff, for about two minutes before it is sent again."""
    from kit.pushes import LOST_ANSWER_WAITS

    fake_kaggle.fail_next("SaveKernel", status=500)
    printed, waits, outcome = push_here(kit)
    assert outcome == 1, printed
    assert waits == list(LOST_ANSWER_WAITS) and sum(waits) >= 120
    assert waits == sorted(waits) and waits[-1] >= 4 * waits[0]  # backing off
    assert len(fake_kaggle.calls("SaveKernel")) == 2 and len(fake_kaggle.accepted()) == 1
    assert (
        f"push {REF}: Kaggle shows no version of this build after 126 s: pushing again "
        "(attempt 2 of 4)" in printed
    )


def test_state_file_of_the_first_name_is_read_then_replaced(kit, fake_kaggle):
    """Runs pushed before the rename kept their versions in kaggle.json (the name of Kaggle's
    credentials file): still read, and replaced by pushes.json at the next push."""
    assert kit("push", *selection()).returncode == 0
    run_dir = kit.folder / "runs" / SLUG
    (run_dir / "pushes.json").rename(run_dir / "kaggle.json")
    fake_kaggle.set_output(REF, {"submission.csv": submission_bytes(), "metrics.json": METRICS})
    result = kit("collect", *selection(), "--poll", "0.01", "--expected-rows", str(ROWS))
    assert result.returncode == 0 and f"{SLUG}: v1 → runs/{SLUG}/v1" in result.stdout
    assert kit("push", *selection(), "--yes").returncode == 0
    assert not (run_dir / "kaggle.json").exists()
    state = json.loads((run_dir / "pushes.json").read_text())
    assert [push["version"] for push in state["pushes"]] == [1, 2]


def test_error_run_shows_its_log_tail(kit, fake_kaggle):
    """A version that ended in ERROR is reported with Kaggle's message and its log's tail."""
    assert kit("push", *selection()).returncode == 0
    fake_kaggle.set_statuses(REF, ["RUNNING", ("ERROR", "Your notebook hit an error")])
    fake_kaggle.set_output(
        REF,
        {},
        log=[f"line {index}\n" for index in range(50)]
        + ["ValueError: IMAGE_SIZE = 300 is not valid\n"],
    )
    result = kit("collect", *selection(), "--poll", "0.01")
    assert result.returncode == 1
    assert "ERROR: Your notebook hit an error" in result.stdout
    assert "ValueError: IMAGE_SIZE = 300 is not valid" in result.stdout
    assert "line 49" in result.stdout and "line 5\n" not in result.stdout  # a tail, not all


def test_complete_run_without_submission(kit, fake_kaggle):
    """A COMPLETE version without submission.csv is a problem, and `submit` refuses it."""
    assert kit("push", *selection()).returncode == 0
    fake_kaggle.set_output(REF, {"metrics.json": METRICS}, log=["done\n"])
    result = kit("collect", *selection(), "--poll", "0.01")
    assert result.returncode == 1 and "COMPLETE but no submission.csv" in result.stdout
    result = kit("submit", SLUG, "--sweep", str(SWEEP))
    assert result.returncode == 1 and "has no valid submission" in result.stderr


def test_submit_without_metrics_says_why_there_is_no_score(kit, fake_kaggle):
    """The variant did not train on validation: its message must not say it did."""
    assert kit("push", *selection()).returncode == 0
    fake_kaggle.set_output(REF, {"submission.csv": submission_bytes()})
    assert (
        kit("collect", *selection(), "--poll", "0.01", "--expected-rows", str(ROWS)).returncode == 0
    )
    result = kit("submit", SLUG, "--sweep", str(SWEEP))
    assert result.returncode == 0, result.stderr
    (submitted,) = fake_kaggle.submissions
    assert submitted.description == (
        f"petals {SLUG} v1 (no validation score: no metrics.json was collected)"
    )


def test_a_malformed_kaggle_json_is_named_as_such(kit, fake_kaggle, tmp_path):
    """A malformed kaggle.json is named in one line, by `push` and by `kernels`."""
    home = tmp_path / "broken-home"
    environment = fake_kaggle.environment(home, username=None)
    config = Path(environment["KAGGLE_CONFIG_DIR"])
    config.mkdir(parents=True, exist_ok=True)
    (config / "kaggle.json").write_text('{"username": "someone", "key": ')
    (config / "kaggle.json").chmod(0o600)
    for arguments in (
        ("push", *selection()),
        ("kernels", "--sweep", str(SWEEP), "--only", SLUG, "--kernels-dir", "other"),
    ):
        result = kit(*arguments, env=environment)
        assert result.returncode == 1
        assert result.stderr.startswith(f"error: {config / 'kaggle.json'} is malformed ("), (
            result.stderr
        )


def test_invalid_submission_is_flagged(kit, fake_kaggle):
    """A collected submission.csv with labels out of range is flagged as invalid."""
    assert kit("push", *selection()).returncode == 0
    fake_kaggle.set_output(REF, {"submission.csv": "id,label\nabc,104\n"})
    result = kit("collect", *selection(), "--poll", "0.01")
    assert result.returncode == 1
    # The sentence is petals.submission's (tests/test_submission.py): here, what it names.
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(f"{SLUG}: v1 → ")]
    assert_names(line, "invalid submission.csv", "0..103", "104")


def saved_probabilities(ids, test):
    """A model's probabilities file as the notebook writes it (here with any values)."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        name=np.array("densenet201"),
        test_ids=np.array(ids),
        test=np.asarray(test, np.float16),
    )
    return buffer.getvalue()


def test_saved_probabilities_are_validated_like_the_submission(kit, fake_kaggle):
    """Collected probabilities are kept when valid, and flagged when they hold NaN."""
    ids = [f"{index:09x}" for index in range(ROWS)]
    uniform = np.full((ROWS, 104), 1 / 104)
    fake_kaggle.set_output(
        REF,
        {
            "submission.csv": submission_bytes(),
            "metrics.json": METRICS,
            "probabilities-densenet201.npz": saved_probabilities(ids, uniform),
        },
    )
    assert kit("push", *selection()).returncode == 0
    result = kit("collect", *selection(), "--poll", "0.01", "--expected-rows", str(ROWS))
    assert result.returncode == 0, result.stdout
    assert (kit.folder / "runs" / SLUG / "v1" / "probabilities-densenet201.npz").exists()
    uniform[1, 3] = np.nan
    fake_kaggle.set_output(
        REF,
        {
            "submission.csv": submission_bytes(),
            "metrics.json": METRICS,
            "probabilities-densenet201.npz": saved_probabilities(ids, uniform),
        },
    )
    assert kit("push", *selection()).returncode == 0
    result = kit("collect", *selection(), "--poll", "0.01", "--expected-rows", str(ROWS))
    assert result.returncode == 1
    assert (
        "v2: invalid probabilities-densenet201.npz: test probabilities hold non-finite "
        "values" in result.stdout
    )


@pytest.mark.parametrize("source", ["environment", "kaggle.json"])
def test_credentials_never_reach_outputs(kit, fake_kaggle, tmp_path, source):
    """The key, from the environment or kaggle.json, is masked in what is printed and found in
    no file written and no push sent."""
    environment = kit.environment
    if source == "kaggle.json":
        home = tmp_path / "json-home"
        environment = fake_kaggle.environment(home, username=None)
        config = Path(environment["KAGGLE_CONFIG_DIR"])
        config.mkdir(parents=True, exist_ok=True)
        (config / "kaggle.json").write_text(
            json.dumps({"username": DEFAULT_USERNAME, "key": DEFAULT_KEY})
        )
        (config / "kaggle.json").chmod(0o600)
    assert kit("push", *selection(), env=environment).returncode == 0
    fake_kaggle.set_output(
        REF,
        {"submission.csv": submission_bytes(), "metrics.json": METRICS},
        log=[f"key is {DEFAULT_KEY}\n"],
    )
    fake_kaggle.set_statuses(REF, [("ERROR", "failed")])
    printed = kit("collect", *selection(), "--poll", "0.01", env=environment).stdout
    printed += kit("results", env=environment).stdout
    assert "key is ***" in printed and DEFAULT_KEY not in printed
    for path in kit.folder.rglob("*"):
        if path.is_file() and not {"home", "json-home"} & set(path.parts):
            assert DEFAULT_KEY not in path.read_text(errors="replace"), path
    for push in fake_kaggle.pushes:
        assert DEFAULT_KEY not in json.dumps(push.body)


def test_bad_values_and_tpu_sweeps_are_refused_before_anything_runs(tmp_path):
    """`build.py` refuses bad values, and a TPU sweep run locally without --on-cpu, before
    anything runs, naming the command to use."""

    def build(*arguments):
        return subprocess.run(
            [sys.executable, str(REPOSITORY / "build.py"), *arguments],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    result = build("sweep", "--sweep", str(SWEEP))
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert "sweep flowers is sized for a TPU" in result.stderr and "--on-cpu" in result.stderr
    assert f"`{sys.executable} {REPOSITORY / 'build.py'} run --sweep" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "bad"\naccelerator = "cpu"\n[parameters]\nEPOCHS = -3\n'
        '[grid]\nTTA_VIEWS = [["flip_lr"], ["flipud"]]\n'
    )
    for verb in ("sweep", "kernels"):
        result = (
            build(verb, "--sweep", str(bad), "--owner", "someone")
            if verb == "kernels"
            else build(verb, "--sweep", str(bad))
        )
        assert result.returncode == 1
        assert result.stderr.startswith(
            "error: petals-bad-tta-views-flip-lr: EPOCHS = -3 is not valid"
        ), result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "kernels").exists()
    result = build("kernels", "--sweep", str(SWEEP), "--owner", "someone", "--dataset", "notaslug")
    assert result.stderr == (
        "error: --dataset 'notaslug' is not a Kaggle dataset "
        "'owner/dataset-name' (3-50 lowercase letters, digits and "
        "hyphens)\n"
    )


@pytest.mark.xdist_group("local_sweep")
def test_local_sweep_is_resumable_and_tabulated(local_sweep, tmp_path):
    """A local sweep runs the real notebook per variant, skips the finished ones when run
    again, and tabulates them."""
    folder = copy_of(local_sweep.folder, tmp_path)
    sweep = "pair.toml"
    assert "sweep pair: 2 run(s), 0 finished already, 2 to run" in local_sweep.first.stdout
    slugs = [f"petals-pair-{size}" for size in PAIR_SIZES]
    for slug in slugs:
        assert (folder / "runs" / slug / "local-1" / "submission.csv").exists()
    assert (
        "2 run(s), 2 finished already, 0 to run"
        in build_py(folder, "sweep", "--sweep", sweep).stdout
    )
    result = build_py(folder, "sweep", "--sweep", sweep, "--rerun", "--only", slugs[1])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (folder / "runs" / slugs[1] / "local-2" / "metrics.json").exists()
    result = build_py(folder, "results", timeout=60)
    rows = [line for line in result.stdout.splitlines() if line.startswith("| petals-pair")]
    assert len(rows) == 3 and all("| tiny | 1 |" in row for row in rows)
    assert sorted(row.split("|")[3].strip() for row in rows) == ["32", "64", "64"]


def test_a_push_whose_answer_is_lost_is_adopted_not_sent_again(kit, fake_kaggle):
    """A push whose answer is lost is found on Kaggle and adopted, not pushed twice; lost every
    time, a few tries minutes apart, then one line."""
    fake_kaggle.lose_answers("SaveKernel", count=1)
    result = kit("push", *selection())
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(fake_kaggle.lost_answers) == 1 and len(fake_kaggle.calls("SaveKernel")) == 1
    assert (
        "Kaggle has v1, made by this build since the push began: adopted, not pushed again"
        in result.stdout
    )
    state = json.loads((kit.folder / "runs" / SLUG / "pushes.json").read_text())
    assert [(push["version"], push.get("adopted")) for push in state["pushes"]] == [(1, True)]
    # Lost every time, and nothing done: a few tries, each after minutes of looking, then one
    # line.
    fake_kaggle.fail_next("SaveKernel", status=502, count=4)
    _, waits, outcome = push_here(kit)
    assert len(fake_kaggle.accepted()) == 1 and len(fake_kaggle.calls("SaveKernel")) == 5
    assert len(waits) == 4 * 6 and sum(waits) > 4 * 120
    assert outcome == (
        f"push {REF}: no answer from Kaggle 4 times and no version of this build after v1 "
        f"(push {REF}: HTTP 502: Fake Kaggle fault: HTTP 502); try again later"
    )


def other_notebook(kit):
    """The built kernel as someone changed it in Kaggle's editor (a parameter edited)."""
    notebook = json.loads((kit.folder / "kernels" / SLUG / f"{SLUG}.ipynb").read_text())
    injected = next(
        cell
        for cell in notebook["cells"]
        if "injected-parameters" in cell["metadata"].get("tags", [])
    )
    source = "".join(injected["source"])
    injected["source"] = source.replace("EPOCHS = ", "EPOCHS = 1 + ")
    assert injected["source"] != source
    return json.dumps(notebook)


def test_a_lost_push_adopts_only_a_version_of_this_build(kit, fake_kaggle):
    """While a push's answer is lost, someone saves the kernel in Kaggle's editor: that version
    is named and not adopted; the push, which Kaggle never carried out, is sent again."""
    assert kit("push", *selection()).returncode == 0
    fake_kaggle.save_in_editor(REF, other_notebook(kit), during_next_push=True)
    fake_kaggle.fail_next("SaveKernel", status=502)
    printed, waits, outcome = push_here(kit)
    assert f"push {REF}: Kaggle has v2, but it is not this build's" in printed
    assert printed.count("Kaggle has v2") == 1  # named once, not at every look
    assert outcome == 3 and len(waits) == 6
    state = json.loads((kit.folder / "runs" / SLUG / "pushes.json").read_text())
    assert [push["version"] for push in state["pushes"]] == [1, 3]
    assert [push.version_number for push in fake_kaggle.accepted(REF)] == [1, 2, 3]


def test_a_version_saved_in_the_editor_is_not_taken_as_the_current_one(kit, fake_kaggle):
    """A newer version saved in Kaggle's editor is not this build's: it is said, and the
    build's own version is collected."""
    assert kit("push", *selection()).returncode == 0
    fake_kaggle.set_output(REF, {"submission.csv": submission_bytes(), "metrics.json": METRICS})
    version = fake_kaggle.save_in_editor(REF, other_notebook(kit))
    assert version == 2
    result = kit("status", *selection())
    assert result.returncode == 0, result.stderr
    assert f"{REF}: Kaggle has v2, but it is not this build's" in result.stdout
    assert f"{SLUG}: v1 complete" in result.stdout
    result = kit("collect", *selection(), "--poll", "0.01", "--expected-rows", str(ROWS))
    assert result.returncode == 0 and f"{SLUG}: v1 → " in result.stdout, result.stdout
    state = json.loads((kit.folder / "runs" / SLUG / "pushes.json").read_text())
    assert [push["version"] for push in state["pushes"]] == [1]


def test_a_status_read_right_after_a_push_is_the_pushed_versions(kit, fake_kaggle):
    """Kaggle does not show v2 yet and answers v1's COMPLETE: that is not taken as v2's, which
    ends in ERROR."""
    assert kit("push", *selection()).returncode == 0
    fake_kaggle.set_output(REF, {"submission.csv": submission_bytes(), "metrics.json": METRICS})
    collect = ["collect", *selection(), "--poll", "0.01", "--expected-rows", str(ROWS)]
    assert kit(*collect).returncode == 0
    fake_kaggle.set_statuses(REF, ["RUNNING", ("ERROR", "Your notebook hit an error")], version=2)
    assert kit("push", *selection(), "--yes").returncode == 0
    fake_kaggle.set_output(REF, {}, log=["Traceback\n"], version=2)
    fake_kaggle.stale_reads(REF, count=3)  # collect's look-up, a status read, a look-up
    result = kit(*collect)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{REF} v2: PUSHED" in result.stdout
    record = json.loads((kit.folder / "runs" / SLUG / "v2" / "collected.json").read_text())
    assert (record["status"], record["problem"]) == ("ERROR", "ERROR: Your notebook hit an error")


@pytest.mark.parametrize(
    ("name", "body", "said"),
    [
        (
            "submission.csv",
            "<!DOCTYPE html><html><head><title>403 Forbidden</title></head></html>",
            "submission.csv is an HTTP error body (HTML: 403 Forbidden), not a CSV",
        ),
        (
            "probabilities-densenet201.npz",
            '{"code": 404, "message": "Not found: the signed URL expired"}',
            "probabilities-densenet201.npz is an HTTP error body (JSON: Not found: the signed "
            "URL expired), not an NPZ archive",
        ),
    ],
)
def test_an_output_that_is_an_http_error_body_is_refused(kit, fake_kaggle, name, body, said):
    """An output file that is an HTTP error page is refused and nothing is kept: collect again."""
    assert kit("push", *selection()).returncode == 0
    files = {"submission.csv": submission_bytes(), "metrics.json": METRICS, name: body}
    fake_kaggle.set_output(REF, files)
    collect = ["collect", *selection(), "--poll", "0.01", "--expected-rows", str(ROWS)]
    result = kit(*collect)
    assert result.returncode == 1
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(f"{SLUG}: ")]
    assert line.startswith(f"{SLUG}: download {REF} v1: {said}; nothing was kept: collect again")
    assert not (kit.folder / "runs" / SLUG / "v1").exists()
    # Served properly later: collected then.
    fake_kaggle.set_output(REF, {"submission.csv": submission_bytes(), "metrics.json": METRICS})
    assert kit(*collect).returncode == 0
    assert (kit.folder / "runs" / SLUG / "v1" / "collected.json").exists()


def test_a_push_answer_without_a_version_number(kit, fake_kaggle):
    """Kaggle's answer may lack versionNumber: the version is asked of Kaggle."""
    fake_kaggle.omit_version_numbers(count=1)
    result = kit("push", *selection())
    assert result.returncode == 0 and f"{REF}: version 1 pushed" in result.stdout


def test_the_installed_client_is_checked_against_the_minimum():
    """The installed kaggle client is the pinned one; an older one is refused in one line."""
    from kit.kaggle_client import KaggleError, check_client

    assert check_client() == "2.2.5"  # what requirements.txt installs
    assert check_client("2.3.0") == "2.3.0"
    with pytest.raises(
        KaggleError,
        match=r"^the kaggle client 2\.2\.3 is older than 2\.2\.5, "
        r"which this kit needs \(per-version status\); run: "
        r"pip install 'kaggle>=2\.2\.5'$",
    ):
        check_client("2.2.3")


def test_timeouts_are_retried_then_one_line():
    """A read timeout (what a stalled output download raises) is retried like a lost
    connection; a push's is never retried: its answer may be lost after Kaggle acted."""
    import requests

    from kit.kaggle_client import AnswerLost, KaggleError, call

    waits, outcomes = (
        [],
        [
            requests.exceptions.ReadTimeout("read timed out"),
            requests.exceptions.ChunkedEncodingError("cut short"),
            "files",
        ],
    )

    def download():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert call(download, "download", sleep=waits.append) == "files" and waits == [1.0, 2.0]

    def stalled():
        raise requests.exceptions.ReadTimeout("HTTPSConnectionPool: Read timed out. (300)")

    with pytest.raises(
        KaggleError,
        match=r"^download: cannot reach Kaggle, or it did not "
        r"answer in time, 3 times \(HTTPSConnectionPool: Read "
        r"timed out\. \(300\)\); try again later$",
    ):
        call(stalled, "download", attempts=3, sleep=waits.append)
    with pytest.raises(AnswerLost):
        call(stalled, "push", sleep=waits.append, repeatable=False)
    assert waits == [1.0, 2.0, 1.0, 2.0]


def test_retry_after_in_seconds_or_as_a_date():
    """Retry-After is read in seconds or as an HTTP date; anything else is no wait."""
    from email.utils import formatdate

    import requests

    from kit.kaggle_client import retry_after

    def refusal(value):
        response = requests.Response()
        response.status_code = 429
        if value is not None:
            response.headers["Retry-After"] = value
        return requests.exceptions.HTTPError("429", response=response)

    assert retry_after(refusal("12")) == 12.0
    assert 55 < retry_after(refusal(formatdate(time.time() + 60, usegmt=True))) <= 60
    assert retry_after(refusal(None)) is None and retry_after(refusal("soon")) is None


def test_collect_and_submit_follow_a_version_pushed_elsewhere(kit, fake_kaggle):
    """After a push from another machine, collect and submit take Kaggle's current version, not
    the last one this folder pushed, and pushes.json records it."""
    assert kit("push", *selection()).returncode == 0
    fake_kaggle.set_output(REF, {"submission.csv": submission_bytes(), "metrics.json": METRICS})
    collect = ["collect", *selection(), "--poll", "0.01", "--expected-rows", str(ROWS)]
    assert kit(*collect).returncode == 0
    subprocess.run(
        [sys.executable, "-m", "kaggle", "kernels", "push", "-p", f"kernels/{SLUG}"],
        cwd=kit.folder,
        env=kit.environment,
        check=True,
        capture_output=True,
        timeout=120,
    )
    fake_kaggle.set_output(REF, {"submission.csv": submission_bytes()}, version=2)
    assert f"{SLUG}: v2 complete" in kit("status", *selection()).stdout
    result = kit(*collect)
    assert result.returncode == 0 and f"{SLUG}: v2 → " in result.stdout, result.stdout
    state = json.loads((kit.folder / "runs" / SLUG / "pushes.json").read_text())
    assert [push["version"] for push in state["pushes"]] == [1, 2]
    assert kit("submit", SLUG, "--sweep", str(SWEEP)).returncode == 0
    assert fake_kaggle.submissions[-1].description.startswith(f"petals {SLUG} v2 ")
