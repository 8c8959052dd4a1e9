import json
import os

import numpy as np
import pytest

from petals import submission


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
        submission.prepare_output_dir(str(tmp_path))
    assert submission.prepare_output_dir(str(tmp_path / "new")) == str(tmp_path / "new")


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
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    submission.write_submission(str(tmp_path / "submission.csv"), ["a"], np.array([1]))
    submission.write_metrics(str(tmp_path / "metrics.json"), {"f1": 0.5})
    (tmp_path / "schedule.png").write_bytes(b"png")
    if not replaced:
        with pytest.raises(FileExistsError, match="already holds submission.csv, metrics.json"):
            submission.prepare_output_dir(str(tmp_path))
        assert (tmp_path / "submission.csv").exists()
        return
    assert submission.prepare_output_dir(str(tmp_path)) == str(tmp_path)
    assert capsys.readouterr().out == (
        f"replacing the previous run's submission.csv, "
        f"metrics.json in {tmp_path} (run again in this "
        "session)\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["schedule.png"]  # figures are simply redrawn
    # The runner's fresh folders refuse even there.
    submission.write_submission(str(tmp_path / "submission.csv"), ["a"], np.array([1]))
    with pytest.raises(FileExistsError):
        submission.prepare_output_dir(str(tmp_path), replace=False)


def test_metrics_are_plain_json_and_finite(tmp_path):
    path = submission.write_metrics(
        str(tmp_path / "metrics.json"),
        {"f1": np.float32(0.5), "weights": np.array([0.25, 0.75]), "history": {"loss": [1.0, 0.5]}},
    )
    assert json.load(open(path)) == {
        "f1": 0.5,
        "weights": [0.25, 0.75],
        "history": {"loss": [1.0, 0.5]},
    }
    with pytest.raises(ValueError, match="not finite"):
        submission.write_metrics(str(tmp_path / "other.json"), {"loss": float("nan")})
    assert not os.path.exists(tmp_path / "other.json")
