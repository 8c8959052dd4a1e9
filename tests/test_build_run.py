"""`build.py run` against a fake Kaggle that behaves like Kaggle: a batch-session cap with
Kaggle's refusal, queued then running sessions that take time, failures, a session time limit.

`build.py` runs as a subprocess driving the real `kaggle` client; the only host it can reach is
the fake on 127.0.0.1. Sessions last a second or two, so each test takes seconds.
"""

import io
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_names

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parent.parent
OWNER = "someone"
TEST_ROWS = 7382  # the competition's test split
SIZES = (192, 224, 331, 512)
SWEEP_SLUGS = [
    f"petals-flowers-{size}-{backbone}"
    for size in (512, 331, 192)
    for backbone in ("efficientnet-b7", "densenet201")
] + [
    "petals-flowers-convnext-base-512",
    "petals-flowers-convnext-base-331",
    "petals-flowers-hgnetv2-b6-512",
    "petals-flowers-recipe",
]
CAP_REFUSAL = "Maximum batch TPU session count of {} reached."


def submission_text(rows=TEST_ROWS):
    return "id,label\n" + "".join(f"{index:09x},{index % 104}\n" for index in range(rows))


def metrics_text(size=512):
    """A metrics.json as the notebook writes it (the keys the table and the estimate read)."""
    return json.dumps(
        {
            "parameters": {
                "IMAGE_SIZE": size,
                "BACKBONES": ["densenet201"],
                "EPOCHS": 2,
                "TTA_VIEWS": [],
            },
            "accelerator": {"kind": "tpu", "backend": "jax", "replicas": 8},
            "seconds_per_epoch": {"densenet201": 40.0},
            "images_per_second": {"densenet201": 300.0},
            "stage_seconds": {
                "import": 10.0,
                "data": 5.0,
                "build": 20.0,
                "compile": 100.0,
                "train": 90.0,
                "evaluate": 10.0,
                "predict": 20.0,
            },
            "blend_weights": {"densenet201": 1.0},
            "blend_f1": 0.91,
            "blend_f1_in_sample": 0.91,
        }
    )


def probabilities_bytes(validation=20, classes=104):
    """A model's probabilities file as the notebook saves it, for the served submission's ids."""
    random = np.random.default_rng(0)

    def table(rows):
        values = random.random((rows, classes))
        return (values / values.sum(axis=1, keepdims=True)).astype(np.float16)

    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        name=np.array("densenet201"),
        test_ids=np.array([f"{index:09x}" for index in range(TEST_ROWS)]),
        test=table(TEST_ROWS),
        validation_ids=np.array([f"v{index}" for index in range(validation)]),
        validation_labels=np.arange(validation) % classes,
        validation=table(validation),
    )
    return buffer.getvalue()


def small_sweep(folder):
    """Four TPU variants: petals-cap-192, -224, -331, -512."""
    path = Path(folder) / "cap.toml"
    path.write_text(
        'name = "cap"\naccelerator = "tpu"\n[parameters]\nBACKBONES = ["densenet201"]'
        f"\nEPOCHS = 2\n[grid]\nIMAGE_SIZE = {list(SIZES)}\n"
    )
    return path


def ref(size):
    return f"{OWNER}/petals-cap-{size}"


INTERRUPTIBLE = """
import runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture
def kit(fake_kaggle, tmp_path):
    """build.py verbs in a scratch folder as `someone`; the fake serves a valid submission."""
    environment = {
        **fake_kaggle.environment(tmp_path / "home", username=OWNER),
        "PYTHONPATH": str(REPOSITORY),
    }
    fake_kaggle.set_output(
        None, {"submission.csv": submission_text(), "metrics.json": metrics_text()}, log=["DONE\n"]
    )

    def command(*arguments):
        return [sys.executable, str(REPOSITORY / "build.py"), *arguments]

    def run(*arguments):
        return subprocess.run(
            command(*arguments),
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def start(*arguments):
        # A shell without job control starts background commands (a CI step run with `&`, say)
        # with SIGINT ignored, and Python then never raises KeyboardInterrupt: the child turns
        # Ctrl-C's usual handling back on before it runs build.py, as a terminal would have it.
        interruptible = [sys.executable, "-c", INTERRUPTIBLE, *command(*arguments)[1:]]
        return subprocess.Popen(
            interruptible,
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    run.start, run.folder = start, tmp_path
    return run


def built(kit, sweep):
    result = kit("kernels", "--owner", OWNER, "--sweep", str(sweep))
    assert result.returncode == 0, result.stderr
    return ["--sweep", str(sweep)]


def collected(folder, slug, version=1):
    path = Path(folder) / slug / f"v{version}" / "collected.json"
    return json.loads(path.read_text()) if path.exists() else None


def pushes_per_kernel(fake):
    counts = {}
    for push in fake.accepted():
        counts[push.ref] = counts.get(push.ref, 0) + 1
    return counts


def test_default_sweep_through_a_cap_of_one(kit, fake_kaggle):
    """The issues' check: a fake refusing a second session and losing the answer to every third
    accepted push, 2 s runs, 7,382-row submissions: every variant collected, none pushed twice."""
    fake_kaggle.configure(session_cap=1, run_seconds=2)
    fake_kaggle.lose_answers("SaveKernel", every=3)
    # Each kernel also saves its model's probabilities, as the notebook does.
    fake_kaggle.set_output(
        None,
        {
            "submission.csv": submission_text(),
            "metrics.json": metrics_text(),
            "probabilities-densenet201.npz": probabilities_bytes(),
        },
        log=["DONE\n"],
    )
    selection = built(kit, REPOSITORY / "sweeps" / "competition.toml")
    result = kit("run", *selection, "--max-concurrent", "2", "--poll", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(fake_kaggle.lost_answers) == 3  # of the 10 accepted pushes
    assert result.stdout.count("since the push began: adopted, not pushed again") == 3
    slugs = [path.name for path in (kit.folder / "kernels").iterdir()]
    assert len(slugs) == 10  # the 3 × 2 grid (one model each), the 3 of 2026 and the recipe
    for slug in slugs:
        assert collected(kit.folder / "runs", slug)["problem"] is None, slug
        assert (
            kit.folder / "runs" / slug / "v1" / "submission.csv"
        ).read_text() == submission_text()
    assert pushes_per_kernel(fake_kaggle) == {f"{OWNER}/{slug}": 1 for slug in slugs}
    assert fake_kaggle.peak_sessions == 1
    refusals = [push for push in fake_kaggle.pushes if push.error]
    assert refusals and all(push.error == CAP_REFUSAL.format(1) for push in refusals)
    assert "waiting for a free session" in result.stdout
    # Once every variant is collected, the blend of all their models: one row per model.
    table = result.stdout[re.search(r"^run +backbone", result.stdout, re.M).start() :]
    assert [line.split()[0] for line in table.splitlines()[1:11]] == [
        f"{slug}/v1" for slug in SWEEP_SLUGS
    ]
    assert "blend: honest validation F1 " in table
    assert "python build.py blend --sweep" in table
    assert "10 variant(s) collected with a valid submission, 0 with a problem" in result.stdout


def test_cap_of_two_with_failures(kit, fake_kaggle):
    """An ERROR with a log and a COMPLETE without submission.csv are reported, a run stopped
    past the time limit is kept as partial; the others are collected; never more than two
    sessions at once."""
    fake_kaggle.configure(session_cap=2, run_seconds=1, queue_seconds=0.3, session_time_limit=1.5)
    fake_kaggle.set_run(ref(224), outcome=("ERROR", "Your notebook hit an error"))
    fake_kaggle.set_output(ref(224), {}, log=["epoch 1\n", "ValueError: out of memory\n"])
    fake_kaggle.set_output(ref(331), {"metrics.json": metrics_text(331)}, log=["done\n"])
    fake_kaggle.set_run(ref(512), seconds=5)
    fake_kaggle.set_output(
        ref(192), {"submission.csv": submission_text(), "metrics.json": metrics_text(192)}
    )
    selection = built(kit, small_sweep(kit.folder))
    result = kit("run", *selection, "--max-concurrent", "2", "--poll", "0.2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "QUEUED" in result.stdout and "RUNNING" in result.stdout
    runs = kit.folder / "runs"
    assert collected(runs, "petals-cap-192")["problem"] is None
    assert collected(runs, "petals-cap-224")["problem"] == "ERROR: Your notebook hit an error"
    assert "ValueError: out of memory" in result.stdout  # the log's tail
    assert (
        collected(runs, "petals-cap-331")["problem"]
        == "COMPLETE but no submission.csv among its outputs"
    )
    # Stopped at the time limit, after writing its valid submission: kept, as partial.
    stopped = collected(runs, "petals-cap-512")
    assert stopped["problem"] is None and "time limit of 1.5 s" in stopped["partial"]["ended"]
    assert (
        "2 variant(s) collected with a valid submission (1 of them partial), 2 with a problem"
        in result.stdout
    )
    assert "| petals-cap-192 | v1 |" in result.stdout  # the results table
    assert fake_kaggle.peak_sessions == 2
    assert pushes_per_kernel(fake_kaggle) == {ref(size): 1 for size in SIZES}

    status = kit("status", *selection)
    assert status.returncode == 0, status.stderr
    assert "petals-cap-192: v1 complete, collected" in status.stdout
    assert "petals-cap-224: v1 error (Your notebook hit an error)" in status.stdout
    assert f"measured {Path('runs') / 'petals-cap-192' / 'v1'}" in status.stdout

    again = kit("run", *selection, "--poll", "0.2")  # everything is collected or reported
    assert again.returncode == 1 and "4 finished, 0 running on Kaggle, 0 not pushed" in again.stdout
    assert pushes_per_kernel(fake_kaggle) == {ref(size): 1 for size in SIZES}


def wait_for(condition, seconds=120):
    """Wait until condition() holds (the run under test makes progress); fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)


def test_interrupted_run_resumes_here_and_from_an_empty_runs_folder(kit, fake_kaggle):
    """Ctrl-C during `run` exits 130 with the command that resumes; resuming pushes nothing
    twice and keeps what was collected, here and on another machine with no runs folder (the
    state comes back from Kaggle)."""
    # Runs long enough that the interrupt lands while the second one runs, even on a busy machine.
    fake_kaggle.configure(session_cap=1, run_seconds=4, queue_seconds=0.2)
    selection = built(kit, small_sweep(kit.folder))
    process = kit.start("run", *selection, "--poll", "0.2")
    runs = kit.folder / "runs"
    # Interrupt once one variant is collected and the next one is running.
    wait_for(lambda: len(fake_kaggle.accepted()) >= 2 and any(runs.glob("*/v*/collected.json")))
    process.send_signal(signal.SIGINT)
    output, errors = process.communicate(timeout=60)
    assert process.returncode == 130, output + errors
    # The interpreter the command was started with, not a bare `python` that may lack the kit.
    assert_names(
        output,
        "interrupted",
        f"`{sys.executable} {REPOSITORY / 'build.py'} run --sweep {selection[1]} --poll 0.2`",
    )
    done_before = {path: path.stat().st_mtime_ns for path in runs.glob("*/v*/collected.json")}
    assert done_before

    result = kit("run", *selection, "--poll", "0.2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert pushes_per_kernel(fake_kaggle) == {ref(size): 1 for size in SIZES}
    assert {path: path.stat().st_mtime_ns for path in done_before} == done_before
    assert all(collected(runs, f"petals-cap-{size}")["problem"] is None for size in SIZES)

    # Another machine: nothing on disk; the state comes back from Kaggle, nothing is pushed.
    result = kit("run", *selection, "--poll", "0.2", "--runs-dir", "elsewhere")
    assert result.returncode == 0, result.stdout + result.stderr
    assert pushes_per_kernel(fake_kaggle) == {ref(size): 1 for size in SIZES}
    for size in SIZES:
        assert collected(kit.folder / "elsewhere", f"petals-cap-{size}")["problem"] is None
    assert fake_kaggle.peak_sessions == 1


def test_a_version_found_on_kaggle_is_not_pushed_again_unless_rerun(kit, fake_kaggle):
    """A push whose answer was lost (or made elsewhere) is watched, not repeated; --rerun
    pushes one new version."""
    fake_kaggle.configure(run_seconds=1)
    selection = [*built(kit, small_sweep(kit.folder)), "--only", "petals-cap-192", "--poll", "0.2"]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "kaggle",
            "kernels",
            "push",
            "-p",
            str(kit.folder / "kernels" / "petals-cap-192"),
        ],
        check=True,
        env=fake_kaggle.environment(kit.folder / "home", username=OWNER),
        capture_output=True,
        timeout=120,
    )
    result = kit("run", *selection)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 finished, 1 running on Kaggle, 0 not pushed" in result.stdout
    assert "pushed elsewhere" in result.stdout
    assert pushes_per_kernel(fake_kaggle) == {ref(192): 1}
    state = json.loads((kit.folder / "runs" / "petals-cap-192" / "pushes.json").read_text())
    assert [push["version"] for push in state["pushes"]] == [1]

    result = kit("run", *selection, "--rerun")
    assert result.returncode == 0, result.stdout + result.stderr
    # Each selected variant counted once: the collected version is not also "finished".
    assert "0 finished, 0 running on Kaggle, 1 not pushed" in result.stdout
    assert [push.version_number for push in fake_kaggle.accepted()] == [1, 2]
    assert collected(kit.folder / "runs", "petals-cap-192", 2)["problem"] is None


def test_estimate_refuses_past_the_budget_or_the_session_limit(kit, fake_kaggle, tmp_path):
    """A sweep estimated past --budget-hours, or a variant past the 9 h session limit, is
    refused in one line before any push; --yes pushes it anyway."""
    selection = built(kit, small_sweep(kit.folder))
    result = kit("run", *selection, "--budget-hours", "0.01")
    assert result.returncode == 1
    assert "estimated total" in result.stdout and "petals-cap-512: " in result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert_names(line, "4 variant(s)", "--budget-hours 0.01")
    assert fake_kaggle.calls("SaveKernel") == []
    long = tmp_path / "long.toml"
    long.write_text(
        'name = "long"\n[parameters]\nBACKBONES = ["efficientnet_b7"]\n'
        "EPOCHS = 500\n[grid]\nIMAGE_SIZE = [512]\n"
    )
    selection = built(kit, long)
    result = kit("push", *selection)
    assert result.returncode == 1
    assert_names(result.stderr, "9 h", "--yes")
    assert fake_kaggle.calls("SaveKernel") == []
    assert kit("push", *selection, "--yes").returncode == 0
    assert len(fake_kaggle.accepted()) == 1


def test_push_stops_at_the_session_cap(kit, fake_kaggle):
    """`push` stops at Kaggle's session cap with Kaggle's refusal and the command that waits;
    `run --timeout` then stops with the count of what is finished, running and not pushed."""
    fake_kaggle.configure(session_cap=1, run_seconds=60)
    selection = built(kit, small_sweep(kit.folder))
    result = kit("push", *selection)
    assert result.returncode == 1
    # Kaggle's own refusal, passed on, and the command that waits for a free session.
    assert_names(result.stderr, CAP_REFUSAL.format(1), "build.py run")
    assert len(fake_kaggle.accepted()) == 1
    # `run` takes over: the pushed version holds the one TPU session until --timeout stops it.
    result = kit("run", *selection, "--poll", "0.2", "--timeout", "1")
    assert result.returncode == 1
    (line,) = [line for line in result.stdout.splitlines() if "--timeout 1 s" in line]
    assert_names(
        line,
        "0 finished",
        "1 running",
        "3 not pushed",
        f"`{sys.executable} {REPOSITORY / 'build.py'} run",
    )
    assert len(fake_kaggle.accepted()) == 1


def test_run_refuses_a_sweep_past_the_quota_left_before_any_push(kit, fake_kaggle):
    """The week's TPU quota left, read from Kaggle, refuses a sweep that needs more before any
    push; when Kaggle cannot say, --budget-hours alone counts."""
    fake_kaggle.set_quota(tpu_used=29, tpu_allowed=30)
    selection = built(kit, REPOSITORY / "sweeps" / "competition.toml")
    result = kit("run", *selection)
    assert result.returncode == 1, result.stdout + result.stderr
    (quota,) = [line for line in result.stdout.splitlines() if line.startswith("TPU quota")]
    assert_names(quota, "29.0 h", "30.0 h", "1.0 h left", "refreshes")
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert_names(line, "10 variant(s)", "1.0 h", "29.0 h", "30.0 h", "--only", "--yes")
    assert fake_kaggle.calls("SaveKernel") == []
    status = kit("status", *selection)
    assert status.returncode == 0 and "1.0 h left" in status.stdout
    # --budget-hours caps what the quota leaves; without Kaggle's answer, it alone counts.
    fake_kaggle.set_quota(tpu_used=0, tpu_allowed=30)
    fake_kaggle.fail_next("GetAcceleratorQuotaStatistics", status=404, count=2)
    result = kit(
        "run", *selection, "--only", "petals-flowers-192-densenet201", "--budget-hours", "0.01"
    )
    assert result.returncode == 1
    (unknown,) = [line for line in result.stdout.splitlines() if "quota is not known" in line]
    assert_names(unknown, "HTTP 404", "--budget-hours 0.01")
    assert_names(result.stderr, "--budget-hours 0.01")
    assert fake_kaggle.calls("SaveKernel") == []


def test_backbones_never_timed_are_estimated_and_refused_past_the_quota_left(kit, fake_kaggle):
    """Issue 22's check: with 29.5 of 30 TPU hours used, EfficientNetB3 and EfficientNetV2-S at
    512 px (never timed: derived estimates) are refused before any push, naming the 0.5 h left."""
    fake_kaggle.set_quota(tpu_used=29.5, tpu_allowed=30)
    sweep = kit.folder / "untimed.toml"
    sweep.write_text(
        'name = "untimed"\naccelerator = "tpu"\n[parameters]\nIMAGE_SIZE = 512\nEPOCHS = 20\n'
        '[grid]\nBACKBONES = [["efficientnet_b3"], ["efficientnetv2_s"]]\n'
    )
    selection = built(kit, sweep)
    result = kit("run", *selection, "--poll", "0.2")
    assert result.returncode == 1, result.stdout + result.stderr
    for slug in ("petals-untimed-efficientnet-b3", "petals-untimed-efficientnetv2-s"):
        assert re.search(
            rf"^  {slug}: \d+\.\d h \(derived from efficientnet_b7 by FLOPs\)$",
            result.stdout,
            re.M,
        ), result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert_names(line, "2 variant(s)", "0.5 h", "29.5 h", "30.0 h")
    assert fake_kaggle.calls("SaveKernel") == []
    # A smoke backbone has no FLOPs row: refused by name, never counted as free.
    tiny = kit.folder / "tiny.toml"
    tiny.write_text(
        'name = "tiny"\naccelerator = "tpu"\n[parameters]\nIMAGE_SIZE = 512\nEPOCHS = 1\n'
        'BACKBONES = ["tiny"]\nWEIGHTS = "None"\n'
    )
    fake_kaggle.set_quota(tpu_used=0, tpu_allowed=30)
    result = kit("run", *built(kit, tiny), "--poll", "0.2")
    assert result.returncode == 1
    assert_names(result.stderr, "no estimate", "petals-tiny", "tiny")
    assert fake_kaggle.calls("SaveKernel") == []


def test_what_the_running_sessions_still_need_counts_against_the_quota(kit, fake_kaggle):
    """A session pushed elsewhere still runs: its whole estimate counts, so the quota left
    does not also cover the variant still to push."""
    fake_kaggle.configure(run_seconds=60)
    selection = built(kit, small_sweep(kit.folder))
    running, waiting = "petals-cap-512", "petals-cap-192"
    subprocess.run(
        [sys.executable, "-m", "kaggle", "kernels", "push", "-p", f"kernels/{running}"],
        cwd=kit.folder,
        env=fake_kaggle.environment(kit.folder / "home", username=OWNER),
        check=True,
        capture_output=True,
        timeout=120,
    )
    estimates = kit("status", *selection, "--only", running, waiting).stdout
    hours = {
        slug: float(re.search(rf"^{slug}: .* — estimate (\d+\.\d) h", estimates, re.M).group(1))
        for slug in (running, waiting)
    }
    # Room for the variant to push, not for both.
    used = 30 - (hours[waiting] + hours[running] / 2)
    fake_kaggle.set_quota(tpu_used=used, tpu_allowed=30)
    result = kit("run", *selection, "--only", running, waiting, "--poll", "0.2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert_names(
        result.stderr,
        "1 variant(s)",
        f"{hours[waiting]:.1f} h",
        "1 session(s)",
        f"{hours[running]:.1f} h more",
    )
    assert len(fake_kaggle.accepted()) == 1


def test_a_version_stopped_by_an_error_after_its_first_model_is_kept_as_partial(kit, fake_kaggle):
    """Issue 22's check: a version that ended in ERROR after writing a valid submission.csv is
    collected, reported as partial, and then submitted by `build.py submit <variant>`."""
    fake_kaggle.configure(run_seconds=0.5)
    sweep = kit.folder / "pair.toml"
    sweep.write_text(
        'name = "pair"\naccelerator = "tpu"\n[parameters]\nIMAGE_SIZE = 512\nEPOCHS = 2\n'
        'BACKBONES = ["densenet201", "efficientnet_b7"]\n'
    )
    slug = "petals-pair"
    stopped = json.loads(metrics_text()) | {"complete": False, "members": ["densenet201"]}
    stopped["parameters"]["BACKBONES"] = ["densenet201", "efficientnet_b7"]
    fake_kaggle.set_run(f"{OWNER}/{slug}", outcome=("ERROR", "Your notebook hit an error"))
    fake_kaggle.set_output(
        f"{OWNER}/{slug}",
        {
            "submission.csv": submission_text(),
            "metrics.json": json.dumps(stopped),
            "probabilities-densenet201.npz": probabilities_bytes(),
        },
        log=["densenet201 done\n", "ResourceExhaustedError: out of memory\n"],
    )
    selection = built(kit, sweep)
    result = kit("run", *selection, "--poll", "0.2")
    assert result.returncode == 0, result.stdout + result.stderr
    # What the partial version is said to be, wherever it is named: the models it holds, the
    # one missing, and how the session ended.
    partial = ("partial", "1 of 2", "efficientnet_b7", "ERROR", "Your notebook hit an error")
    lines = [line.strip() for line in result.stdout.splitlines()]
    (line,) = [line for line in lines if line.startswith(f"{slug} v1: collected")]
    assert_names(line, f"runs/{slug}/v1", *partial)
    assert "ResourceExhaustedError: out of memory" in result.stdout  # why it stopped
    (line,) = [line for line in lines if line.startswith(f"{slug}: v1 partial")]
    assert_names(line, "submittable", *partial)
    assert (
        "1 variant(s) collected with a valid submission (1 of them partial), 0 with a problem"
        in result.stdout
    )
    assert "| petals-pair | v1 | 512 | densenet201+efficientnet_b7 | 2 | 1 of 2 partial |" in (
        result.stdout
    )
    record = collected(kit.folder / "runs", slug)
    assert record["problem"] is None and record["status"] == "ERROR"
    assert record["partial"]["finished"] == ["densenet201"]
    status = kit("status", *selection)
    (line,) = [line for line in status.stdout.splitlines() if line.startswith(f"{slug}: ")]
    assert_names(line, "v1", "collected", "submittable", *partial)
    result = kit("submit", slug, "--sweep", str(sweep))
    assert result.returncode == 0, result.stderr
    assert_names(result.stdout, f"{slug} v1", *partial)
    (submitted,) = fake_kaggle.submissions
    assert submitted.content.decode() == submission_text()
    assert submitted.description == f"petals {slug} v1 partial (1 of 2 models) validation F1 0.9100"


def test_a_source_kaggle_cannot_attach_fails_that_variant_only(kit, fake_kaggle):
    """A dataset Kaggle lists as invalid fails its variant with one line naming the dataset
    and --rerun; the other variant is collected, and nothing is pushed again."""
    fake_kaggle.configure(run_seconds=1)
    fake_kaggle.invalid_sources("kirillblinov/tf-flower-photo-tfrec")
    only = ["--only", "petals-flowers-recipe", "petals-flowers-192-densenet201"]
    sweep = REPOSITORY / "sweeps" / "competition.toml"
    assert kit("kernels", "--owner", OWNER, "--sweep", str(sweep), *only).returncode == 0
    selection = ["--sweep", str(sweep), *only, "--poll", "0.2"]
    result = kit("run", *selection)
    assert result.returncode == 1, result.stdout + result.stderr
    dataset = "kirillblinov/tf-flower-photo-tfrec"
    said = f"petals-flowers-recipe: {OWNER}/petals-flowers-recipe v1: "
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(said)]
    assert_names(line, dataset, "invalid", f"https://www.kaggle.com/datasets/{dataset}", "--rerun")
    assert collected(kit.folder / "runs", "petals-flowers-192-densenet201")["problem"] is None
    assert "1 variant(s) collected with a valid submission, 1 with a problem" in result.stdout
    # Run again: reported again, not watched nor pushed again.
    again = kit("run", *selection)
    assert again.returncode == 1 and line in again.stdout.splitlines()
    assert len(fake_kaggle.accepted()) == 2


def test_interrupted_local_sweep_ends_with_one_line_and_the_command_that_resumes(kit, tiny_dataset):
    """Ctrl-C while a local sweep's notebook starts: exit 130, no traceback, one line naming
    the interrupted variant, the count finished and the command that resumes."""
    sweep = kit.folder / "local.toml"
    sweep.write_text(
        f'name = "local"\naccelerator = "cpu"\n[parameters]\nIMAGE_SIZE = 32\n'
        f'BACKBONES = ["tiny"]\nWEIGHTS = "None"\nDATA_DIR = "{tiny_dataset}"\n'
        "[grid]\nEPOCHS = [1, 2]\n"
    )
    process = kit.start("sweep", "--sweep", str(sweep))
    for line in process.stdout:
        if "→" in line:  # the first variant's notebook is starting
            break
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 130, errors
    assert_names(
        errors.strip().splitlines()[-1],
        "interrupted",
        "petals-local-epochs-1",
        "0 of 2",
        f"`{sys.executable} {REPOSITORY / 'build.py'} sweep --sweep {sweep}`",
    )
    assert "Traceback" not in errors
