"""The README's runner example, run as written (on a small demo dataset in a scratch folder)."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from petals.demo_data import write_demo_dataset

pytestmark = pytest.mark.slow

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runner_example():
    """The README's shell command that runs the notebook through petals.runner, as arguments."""
    text = open(os.path.join(REPOSITORY, "README.md")).read()
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        command = block.replace("\\\n", " ")
        for line in command.splitlines():
            if "petals.runner" in line:
                return shlex.split(line, comments=True)
    raise AssertionError("the README has no petals.runner example")


def test_readme_runner_example_runs_as_written(tmp_path):
    arguments = runner_example()
    assert arguments[:3] == [".venv/bin/python", "-m", "petals.runner"]
    # The example runs from the repository root: give the scratch folder the same layout, with
    # the demo data (smaller than `make demo-data`'s, so the test stays short) in data/demo.
    os.symlink(os.path.join(REPOSITORY, "notebooks"), tmp_path / "notebooks")
    write_demo_dataset(str(tmp_path / "data" / "demo"), image_size=32, shards=2, limit=400)
    environment = {**os.environ, "PYTHONPATH": REPOSITORY}
    result = subprocess.run(
        [sys.executable, *arguments[1:]],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output_dir = tmp_path / arguments[arguments.index("petals.runner") + 2]
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert list(metrics["history"]) == ["tiny", "tiny_wide"]
    assert all(len(history["loss"]) == 4 for history in metrics["history"].values())
    # The two models are validated and blended, with the honest and the in-sample score.
    assert set(metrics["validation"]) == {"tiny", "tiny_wide"}
    assert metrics["blend_f1"] is not None and metrics["blend_f1_in_sample"] is not None
    assert (output_dir / "notebook.html").exists()
    # Progress reached the terminal: the sections and one line per epoch.
    assert "== Training" in result.stdout and result.stdout.count("Epoch 4/4") == 2
