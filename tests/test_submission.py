import json
import os

import numpy as np
import pytest

from petals import metrics, output_folder, submission


def test_written_file_round_trips(tmp_path):
    path = submission.write_submission(
        str(tmp_path / "submission.csv"), ["a762df180", "b1"], np.array([0, 103])
    )
    assert open(path).read() == "id,label\na762df180,0\nb1,103\n"
    ids, labels = submission.read_submission(path)
    assert ids == ["a762df180", "b1"] and labels.tolist() == [0, 103]


@pytest.mark.parametrize(
    "ids, labels, expected, message",
    [
        (["a", "b"], [1], None, "1 labels for 2 test ids"),
        (["a", "a"], [1, 2], None, "more than once: a"),
        (["a", "b"], [1, 104], None, "in 0..103"),
        (["a", "b"], [1, -1], None, "in 0..103"),
        (["a", "b"], [1.0, 2.0], None, "integers"),
        (["a"], [1], ["a", "b"], "1 missing"),
        ([], [], None, "empty"),
    ],
)
def test_invalid_submissions_are_rejected_and_not_written(tmp_path, ids, labels, expected, message):
    path = tmp_path / "submission.csv"
    with pytest.raises(submission.SubmissionError, match=message):
        submission.write_submission(str(path), ids, np.array(labels), expected)
    assert os.listdir(tmp_path) == []


def test_results_are_never_overwritten(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    submission.write_submission(str(tmp_path / "submission.csv"), ["a"], np.array([1]))
    with pytest.raises(FileExistsError, match="exists; results are never overwritten"):
        submission.write_submission(str(tmp_path / "submission.csv"), ["a"], np.array([2]))
    with pytest.raises(FileExistsError, match="already holds submission.csv"):
        output_folder.prepare(str(tmp_path))
    assert output_folder.prepare(str(tmp_path / "new")) == str(tmp_path / "new")


def interactive(monkeypatch, environment):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)


def write_results(folder):
    submission.write_submission(str(folder / "submission.csv"), ["a"], np.array([1]))
    metrics.write(str(folder / "metrics.json"), {"f1": 0.5})


@pytest.mark.parametrize(
    "environment, replaced",
    [
        ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, True),  # Kaggle's editor
        ({"JPY_SESSION_NAME": "/home/me/flowers.ipynb"}, True),  # Jupyter
        ({"KAGGLE_KERNEL_RUN_TYPE": "Batch", "JPY_SESSION_NAME": "x"}, False),  # Kaggle's batch run
        ({}, False),  # papermill, the runner, a script
    ],
)
def test_a_second_run_all_replaces_results_only_in_an_interactive_session(
    tmp_path, monkeypatch, capsys, environment, replaced
):
    interactive(monkeypatch, environment)
    assert output_folder.prepare(str(tmp_path)) == str(tmp_path)  # the first "Run all"
    write_results(tmp_path)
    (tmp_path / "schedule.png").write_bytes(b"png")
    if not replaced:
        with pytest.raises(FileExistsError, match="already holds submission.csv, metrics.json"):
            output_folder.prepare(str(tmp_path))
        assert (tmp_path / "submission.csv").exists()
        assert sorted(os.listdir(tmp_path)) == ["metrics.json", "schedule.png", "submission.csv"]
        return
    capsys.readouterr()
    assert output_folder.prepare(str(tmp_path)) == str(tmp_path)
    assert capsys.readouterr().out == (
        f"replacing the previous run's submission.csv, "
        f"metrics.json in {tmp_path} (run again in this "
        "session)\n"
    )
    # Figures are simply redrawn; the session file says whose results come next.
    assert sorted(os.listdir(tmp_path)) == [output_folder.SESSION_FILE, "schedule.png"]
    # The runner's fresh folders refuse even there.
    write_results(tmp_path)
    with pytest.raises(FileExistsError):
        output_folder.prepare(str(tmp_path), replace=False)


@pytest.mark.parametrize("other_session", [None, "kaggle-4f2a kernel /root/kernel-1.json"])
def test_an_interactive_session_refuses_another_sessions_results(
    tmp_path, monkeypatch, other_session
):
    """Results that an older session left (Kaggle's editor keeping /kaggle/working, a notebook
    folder opened in Jupyter again), with its session file or with none (a batch run's), are
    not this session's: its first "Run all" refuses them, as a batch run does."""
    interactive(monkeypatch, {"KAGGLE_KERNEL_RUN_TYPE": "Interactive"})
    write_results(tmp_path)
    if other_session:
        (tmp_path / output_folder.SESSION_FILE).write_text(other_session + "\n")
    with pytest.raises(
        FileExistsError,
        match="already holds submission.csv, metrics.json from an earlier run that this "
        "session did not write",
    ):
        output_folder.prepare(str(tmp_path))
    assert (tmp_path / "submission.csv").exists() and (tmp_path / "metrics.json").exists()


def test_metrics_are_plain_json_and_finite(tmp_path):
    path = metrics.write(
        str(tmp_path / "metrics.json"),
        {"f1": np.float32(0.5), "weights": np.array([0.25, 0.75]), "history": {"loss": [1.0, 0.5]}},
    )
    assert json.load(open(path)) == {
        "f1": 0.5,
        "weights": [0.25, 0.75],
        "history": {"loss": [1.0, 0.5]},
    }
    with pytest.raises(ValueError, match="not finite"):
        metrics.write(str(tmp_path / "other.json"), {"loss": float("nan")})
    assert not os.path.exists(tmp_path / "other.json")


# What a "Run all" of the notebook does to its folder, run in a real Jupyter kernel.
RUN_ALL = """
import numpy as np
from petals import output_folder, submission
output_folder.prepare({folder!r})
submission.write_submission({folder!r} + "/submission.csv", ["a"], np.array([1]), overwrite=True)
"""


@pytest.mark.slow
def test_a_restarted_kernel_is_the_same_session_and_another_kernel_is_not(tmp_path):
    """Jupyter's "Restart & Run all" keeps the kernel (its connection file), so it replaces its
    own results; another notebook's kernel, or the next session's, refuses them."""
    from jupyter_client.manager import KernelManager

    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment = {
        **os.environ,
        "KAGGLE_KERNEL_RUN_TYPE": "Interactive",
        "PYTHONPATH": repository,
    }
    code = RUN_ALL.format(folder=str(tmp_path))
    managers = []

    def run_all(manager):
        printed = []

        def keep(message):
            content = message["content"]
            printed.append(content.get("text", "") + content.get("evalue", ""))

        client = manager.client()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=120)
            reply = client.execute_interactive(code, timeout=120, output_hook=keep)
        finally:
            client.stop_channels()
        return reply["content"]["status"], "".join(printed)

    def started():
        manager = KernelManager(kernel_name="python3")
        manager.start_kernel(env=environment, cwd=repository)
        managers.append(manager)
        return manager

    try:
        session = started()
        assert run_all(session) == ("ok", "")
        session.restart_kernel(now=True)
        status, printed = run_all(session)
        assert status == "ok" and "replacing the previous run's submission.csv" in printed
        status, printed = run_all(started())
        assert status == "error" and "that this session did not write" in printed
    finally:
        for manager in managers:
            manager.shutdown_kernel(now=True)
    assert (tmp_path / "submission.csv").exists()
