"""The runner, papermill and JupyterLab commands of docs/notebook.md (the README links there),
run as written (on a small demo dataset in a scratch folder laid out as the repository, with no
PYTHONPATH)."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import jupytext
import pytest
import requests
from jupyter_client import BlockingKernelClient

from kit import demo_data
from petals import submission

pytestmark = pytest.mark.slow

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The page that shows how to run the notebook.
NOTEBOOK_PAGE = os.path.join(REPOSITORY, "docs", "notebook.md")
# What a user's shell has: no path variable (the project is installed by `make install`).
ENVIRONMENT = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def readme_block(marker):
    """The notebook page's shell block holding `marker`: its commands, each as arguments."""
    text = open(NOTEBOOK_PAGE).read()
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        commands = [
            shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()
        ]
        commands = [command for command in commands if command]
        if any(marker in command for command in commands):
            return commands
    raise AssertionError(f"{NOTEBOOK_PAGE} has no {marker} example")


def runner_example():
    """The notebook page's command that runs the notebook through kit.runner, as arguments."""
    (command,) = [command for command in readme_block("kit.runner") if "kit.runner" in command]
    return command


def repository_layout(folder):
    """`folder` laid out as the repository for the notebook page's commands: .venv (this
    environment), notebooks/ with the paired flowers.ipynb as `make install` writes it, and small
    demo data in data/demo. The notebook's kernel starts in folder/notebooks, away from the
    checkout."""
    os.symlink(sys.prefix, folder / ".venv")
    (folder / "notebooks").mkdir()
    os.symlink(
        os.path.join(REPOSITORY, "notebooks", "demo.yaml"), folder / "notebooks" / "demo.yaml"
    )
    notebook = jupytext.read(os.path.join(REPOSITORY, "notebooks", "flowers.py"))
    jupytext.write(notebook, str(folder / "notebooks" / "flowers.ipynb"))
    demo_data.write_demo_dataset(str(folder / "data" / "demo"), image_size=32, shards=2, limit=240)


def test_readme_runner_example_runs_as_written(tmp_path):
    arguments = runner_example()
    assert arguments[:3] == [".venv/bin/python", "-m", "kit.runner"]
    # The example runs from the repository root: give the scratch folder the same layout, with
    # the demo data (smaller than `make demo-data`'s, so the test stays short) in data/demo.
    os.symlink(os.path.join(REPOSITORY, "notebooks"), tmp_path / "notebooks")
    demo_data.write_demo_dataset(
        str(tmp_path / "data" / "demo"), image_size=32, shards=2, limit=400
    )
    result = subprocess.run(
        [sys.executable, *arguments[1:]],
        cwd=tmp_path,
        env=ENVIRONMENT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output_dir = tmp_path / arguments[arguments.index("kit.runner") + 2]
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert list(metrics["history"]) == ["tiny", "tiny_wide"]
    assert all(len(history["loss"]) == 4 for history in metrics["history"].values())
    # The two models are validated and blended, with the honest and the in-sample score.
    assert set(metrics["validation"]) == {"tiny", "tiny_wide"}
    assert metrics["blend_f1"] is not None and metrics["blend_f1_in_sample"] is not None
    assert (output_dir / "notebook.html").exists()
    # Progress reached the terminal: the sections and one line per epoch.
    assert "== Training" in result.stdout and result.stdout.count("Epoch 4/4") == 2


def test_readme_papermill_example_runs_as_written(tmp_path):
    """Plain papermill on the paired notebook, its kernel in notebooks/: a valid submission."""
    repository_layout(tmp_path)
    commands = readme_block("--cwd")
    assert [command[0] for command in commands] == ["mkdir", ".venv/bin/papermill"]
    for command in commands:
        result = subprocess.run(
            command, cwd=tmp_path, env=ENVIRONMENT, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output_dir = tmp_path / "runs" / "papermill"
    held_out = demo_data.held_out_labels(str(tmp_path / "data" / "demo"), 32)
    ids, _ = submission.read_submission(output_dir / "submission.csv")
    assert ids == list(held_out)  # every test id, in the test split's order
    scores = demo_data.submission_scores(output_dir / "submission.csv", held_out)
    assert scores["accuracy"] > 3 * scores["chance"]
    assert json.loads((output_dir / "metrics.json").read_text())["complete"]
    assert (output_dir / "notebook.ipynb").exists()


def test_readme_jupyterlab_command_starts_a_kernel_that_imports_petals(tmp_path):
    """`jupyter lab notebooks/flowers.ipynb` as written; the notebook's kernel, started by the
    server as the browser starts it, runs in notebooks/ and imports petals from the install."""
    repository_layout(tmp_path)
    (command,) = readme_block("lab")
    runtime = tmp_path / "jupyter-runtime"
    # CI runs as root, where the server refuses to start unless its settings allow it.
    (tmp_path / "jupyter-config").mkdir()
    (tmp_path / "jupyter-config" / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"allow_root": True}})
    )
    environment = {
        **ENVIRONMENT,
        # The test's own Jupyter folders (connection files, settings, kernels), and no browser.
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
        "BROWSER": "true",
    }
    log_path = tmp_path / "jupyter.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        address, token = server_address(server, log_path)
        session = requests.post(
            f"{address}/api/sessions",
            json={
                "path": "notebooks/flowers.ipynb",
                "type": "notebook",
                "name": "flowers.ipynb",
                "kernel": {"name": "python3"},
            },
            headers={"Authorization": f"token {token}"},
            timeout=120,
        )
        assert session.status_code == 201, session.text
        kernel_id = session.json()["kernel"]["id"]
        client = BlockingKernelClient()
        client.load_connection_file(str(runtime / f"kernel-{kernel_id}.json"))
        client.start_channels()
        printed = []
        try:
            client.wait_for_ready(timeout=120)
            reply = client.execute_interactive(
                "import os, sys, petals\n"
                "print(os.getcwd(), sys.executable, petals.__file__, sep='\\n')",
                output_hook=lambda message: printed.append(message["content"].get("text", "")),
                timeout=120,
            )
        finally:
            client.stop_channels()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server shuts its kernels down
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
    assert reply["content"]["status"] == "ok", reply["content"]
    folder, executable, petals_file = "".join(printed).split()
    assert folder == str(tmp_path / "notebooks")
    assert os.path.realpath(executable) == os.path.realpath(sys.executable)
    assert petals_file == os.path.join(REPOSITORY, "petals", "__init__.py")


def server_address(server, log_path, timeout=180):
    """The Jupyter server's http://host:port and token, from the URL it logs once it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(
            r"(http://(?:localhost|127\.0\.0\.1):\d+)/\S*\?token=(\w+)", log_path.read_text()
        )
        if found:
            return found.group(1), found.group(2)
        assert server.poll() is None, log_path.read_text()[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"no server URL after {timeout} s: {log_path.read_text()[-3000:]}")
