"""The runner on a small notebook without TensorFlow: what reaches the terminal and the disk."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from kit import launcher, runner
from tests.conftest import TINY_SIZE, assert_names

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = """# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A small notebook

# %% tags=["parameters"]
VALUE = 1
DATA_DIR = None
OUTPUT_DIR = "."

# %% [markdown]
# ## First section
# Prints its parameters.

# %%
print("value", VALUE)
print("data", DATA_DIR)

# %% [markdown]
# ## Second section

# %%
import sys

if VALUE < 0:
    raise ValueError("VALUE must be at least 0")
print("a warning", file=sys.stderr)
print("done")
"""
NOISE = ("without encryption", "KeyboardInterrupt", "[IPKernelApp]", "Executing Cell")


@pytest.fixture
def notebook(tmp_path):
    path = tmp_path / "small.py"
    path.write_text(NOTEBOOK)
    return str(path)


def run(notebook, output_dir, *arguments):
    return subprocess.run(
        [sys.executable, "-m", "kit.runner", notebook, str(output_dir), *arguments],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_progress_and_output_reach_the_terminal_without_noise(notebook, tmp_path):
    """Each section's heading and what the notebook prints reach the terminal as it runs,
    its warnings reach stderr, and none of papermill's or Jupyter's noise does."""
    result = run(notebook, tmp_path / "run", "-p", "VALUE", "2", "-p", "DATA_DIR", "data/x")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[lines.index("== First section") : lines.index("== Second section") + 2] == [
        "== First section",
        "value 2",
        f"data {REPOSITORY}/data/x",
        "== Second section",
        "done",
    ]
    assert result.stderr == "a warning\n"
    assert not [noise for noise in NOISE if noise in result.stdout + result.stderr]
    html = (tmp_path / "run" / runner.HTML_NAME).read_text()
    assert "value 2" in html and "<html" in html
    assert (tmp_path / "run" / runner.NOTEBOOK_NAME).exists()


@pytest.mark.slow
def test_none_and_null_both_mean_none(notebook, tmp_path):
    """`-p NAME None` and `-p NAME null` both give the notebook None."""
    for index, text in enumerate(("None", "null")):
        output = tmp_path / f"run-{index}"
        runner.execute(notebook, str(output), {"DATA_DIR": runner.parse_value("DATA_DIR", text)})
        assert "data None" in (output / runner.HTML_NAME).read_text()


@pytest.mark.slow
def test_a_failing_cell_ends_with_one_line_and_still_writes_the_notebook(notebook, tmp_path):
    """A failing cell ends the run with the one line that says why, and where the executed
    notebook (written all the same) is."""
    result = run(notebook, tmp_path / "run", "-p", "VALUE", "-1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: ValueError: VALUE must be at least 0 (see {tmp_path / 'run'}/notebook.ipynb)"
    )
    assert "VALUE must be at least 0" in (tmp_path / "run" / runner.HTML_NAME).read_text()


@pytest.mark.slow
def test_the_kernel_imports_the_installed_package_with_no_path_added(tmp_path):
    """Started in another folder, the runner leaves the environment as it is: its kernel
    imports petals as papermill's and Jupyter's do, from the installed package."""
    source = tmp_path / "where.py"
    source.write_text(
        NOTEBOOK.replace(
            'print("done")',
            'import os\nimport petals\nprint("PYTHONPATH", os.environ.get("PYTHONPATH"))\n'
            'print("petals", petals.__file__)',
        )
    )
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", "kit.runner", str(source), str(tmp_path / "run")],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "PYTHONPATH None\n" in result.stdout
    assert f"petals {os.path.join(REPOSITORY, 'petals', '__init__.py')}\n" in result.stdout


@pytest.mark.parametrize(
    "arguments, facts",
    [
        # The sentence is petals.parameters' (tests/test_parameters.py): here, what it names.
        (["-p", "VALU", "3"], ["VALU ", "'VALUE'", "VALUE, DATA_DIR, OUTPUT_DIR"]),
        (["-p", "VALUE", "[1"], ["-p VALUE", "'[1'", "YAML"]),
        (["-f", "/no/such.yaml"], ["/no/such.yaml", "does not exist"]),
    ],
)
def test_bad_arguments_fail_with_one_line_before_anything_runs(
    notebook, tmp_path, capsys, arguments, facts
):
    with pytest.raises(SystemExit) as error:
        runner.main([notebook, str(tmp_path / "run"), *arguments])
    (line,) = str(error.value.code).splitlines()
    assert line.startswith("error: ")
    assert_names(line, *facts)
    assert not (tmp_path / "run").exists()


def test_a_parameters_file_must_map_names_to_values(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must map names to values"):
        runner.read_parameters_file(str(tmp_path / "list.yaml"))
    (tmp_path / "good.yaml").write_text("VALUE: 3\nDATA_DIR: null\n")
    assert runner.read_parameters_file(str(tmp_path / "good.yaml")) == {
        "VALUE": 3,
        "DATA_DIR": None,
    }


def test_path_parameters_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "extra").mkdir()
    assert runner.absolute_paths(
        {
            "DATA_DIR": "data",
            "WEIGHTS": "imagenet",
            "EXTRA_DATA": ["extra", "owner/dataset"],
            "EPOCHS": 3,
        }
    ) == {
        "DATA_DIR": str(tmp_path / "data"),
        "WEIGHTS": "imagenet",
        "EXTRA_DATA": [str(tmp_path / "extra"), "owner/dataset"],
        "EPOCHS": 3,
    }
    # A compile cache to start from: a folder here, or a dataset slug left as it is.
    assert runner.absolute_paths({"COMPILE_CACHE_FROM": "./earlier/compile-cache"}) == {
        "COMPILE_CACHE_FROM": str(tmp_path / "earlier" / "compile-cache")
    }
    assert runner.absolute_paths({"COMPILE_CACHE_FROM": "owner/petals-compile-cache-abc"}) == {
        "COMPILE_CACHE_FROM": "owner/petals-compile-cache-abc"
    }
    # Cloud storage (a TPU slice reads the data from GCS) is not a local path.
    assert runner.absolute_paths({"DATA_DIR": "gs://bucket/flowers"}) == {
        "DATA_DIR": "gs://bucket/flowers"
    }
    # Weights per backbone: a file among them is a path too.
    assert runner.absolute_paths(
        {"WEIGHTS": {"densenet201": "imagenet", "tiny": "w.h5", "tiny_wide": "null"}}
    ) == {
        "WEIGHTS": {"densenet201": "imagenet", "tiny": str(tmp_path / "w.h5"), "tiny_wide": "null"}
    }


def test_a_bad_value_is_refused_at_once_and_nothing_is_written(tiny_dataset, tmp_path):
    """The flowers notebook's parameters are all checked before papermill, Keras or TensorFlow
    start: one line naming the parameter, and no notebook in the output folder."""
    result = run(
        os.path.join(REPOSITORY, "notebooks", "flowers.py"),
        tmp_path / "run",
        "-f",
        os.path.join(REPOSITORY, "notebooks", "demo.yaml"),
        "-p",
        "DATA_DIR",
        tiny_dataset,
        "-p",
        "IMAGE_SIZE",
        str(TINY_SIZE),
        "-p",
        "EPOCHS",
        "-3",
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()  # one line
    assert line.startswith("error: ")
    assert_names(line, "EPOCHS", "-3", "1")
    assert not (tmp_path / "run").exists()


def test_ctrl_c_ends_with_one_line_and_the_command_to_start_again(tmp_path):
    path = tmp_path / "slow.py"
    path.write_text(
        NOTEBOOK.replace("VALUE = 1\n", "VALUE = 1\nSECONDS = 120\n").replace(
            'print("value", VALUE)',
            'print("sleeping", flush=True)\nimport time\ntime.sleep(SECONDS)',
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "kit.runner", str(path), str(tmp_path / "run")],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stdout:
        if line.startswith("sleeping"):
            break
    process.send_signal(signal.SIGINT)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 1
    assert error.strip() == (
        f"interrupted: the run in {tmp_path / 'run'} stopped unfinished; "
        f"start it again with `{runner.command_name()} -m kit.runner "
        f"{path} {tmp_path / 'run'}`"
    )


def test_hints_name_the_interpreter_as_started(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runner.command_name(str(tmp_path / ".venv" / "bin" / "python")) == ".venv/bin/python"
    assert runner.command_name("/usr/bin/python3") == "/usr/bin/python3"


# --- Several processes (--processes N) ----------------------------------------------------------

PROCESSES_NOTEBOOK = """# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
HANG = False  # both processes sleep, and process 1 ignores SIGTERM
OUTPUT_DIR = "."

# %%
import os
import signal
import time

index = int(os.environ["KERAS_DISTRIBUTION_PROCESS_ID"])
print(f"process {index} of {os.environ['KERAS_DISTRIBUTION_NUM_PROCESSES']}", flush=True)
# Process 0 sleeps too: had it finished, the launcher would stop process 1 as hung before the
# interrupt (and the test could not see both kernels running).
if HANG:
    if index == 1:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)
"""


def process(*command):
    """A real child process in its own session, as the launcher starts its workers."""
    return subprocess.Popen(list(command), start_new_session=True)


@pytest.mark.slow
def test_the_first_failing_process_stops_the_others_and_is_named(capsys):
    """The launcher stops every process when one fails, names it and its log, and exits with
    its status."""
    workers = [
        launcher.Worker(0, process("sleep", "60"), None),
        launcher.Worker(1, process("bash", "-c", "exit 3"), "process-1/output.log"),
    ]
    assert launcher.supervise(workers, stop_grace=5) == 3
    assert workers[0].popen.returncode == -15  # stopped by SIGTERM
    assert capsys.readouterr().err == (
        "error: process 1 (its output: process-1/output.log) of 2 "
        "failed with exit status 3; stopped the others\n"
    )


@pytest.mark.slow
def test_a_hung_process_is_killed_after_the_grace_periods(capsys):
    """One process finished, the other ignores SIGTERM: named as hung, then SIGKILLed."""
    workers = [
        launcher.Worker(0, process("true"), None),
        launcher.Worker(1, process("bash", "-c", 'trap "" TERM; sleep 60 & wait'), None),
    ]
    workers[1].remember_descendants()
    assert launcher.supervise(workers, exit_grace=1, stop_grace=1) == 1
    assert workers[1].popen.returncode == -9
    assert len(workers[1].known) == 2  # bash and its sleep
    # SIGKILL is delivered at once but a loaded machine can take a moment to end the process;
    # one that was never killed sleeps on for a minute.
    _, alive = psutil.wait_procs(list(workers[1].known.values()), timeout=10)
    assert not [child for child in alive if child.status() != psutil.STATUS_ZOMBIE]
    assert capsys.readouterr().err == (
        "error: process 1 of 2 still running 1 s after another finished: hung; stopped it\n"
    )


@pytest.mark.slow
def test_a_timeout_stops_every_process(capsys):
    """--timeout stops every process, exits 124 and says so in one line."""
    workers = [launcher.Worker(index, process("sleep", "60"), None) for index in range(2)]
    assert launcher.supervise(workers, timeout=0.5) == 124
    assert [worker.popen.returncode for worker in workers] == [-15, -15]
    assert_names(capsys.readouterr().err, "error: ", "0.5 s", "process 0", "process 1 of 2")


@pytest.mark.slow
def test_processes_stream_process_0_and_stop_together_on_interrupt(tmp_path):
    """Two processes of a notebook: process 0's output on the terminal, process 1's in its
    folder; a hung process 1 and its kernel are killed when the launcher is interrupted."""
    notebook = tmp_path / "processes.py"
    notebook.write_text(PROCESSES_NOTEBOOK)
    result = run(str(notebook), tmp_path / "run", "--processes", "2")
    assert result.returncode == 0, result.stderr
    assert "process 0 of 2" in result.stdout and "process 1" not in result.stdout
    assert "process 1 of 2" in (tmp_path / "run" / "process-1" / "output.log").read_text()
    assert (tmp_path / "run" / runner.NOTEBOOK_NAME).exists()
    assert (tmp_path / "run" / "process-1" / runner.NOTEBOOK_NAME).exists()

    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kit.runner",
            str(notebook),
            str(tmp_path / "hang"),
            "--processes",
            "2",
            "-p",
            "HANG",
            "true",
        ],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = tmp_path / "hang" / "process-1" / "output.log"
    children = []
    deadline = time.monotonic() + 240  # a loaded machine starts four processes slowly
    # Until process 1 sleeps and both runners' kernels are up (on a loaded machine process 0's
    # kernel can start after process 1 has printed).
    while time.monotonic() < deadline and launcher.poll() is None:
        children = psutil.Process(launcher.pid).children(recursive=True)
        if log.exists() and "process 1 of 2" in log.read_text() and len(children) >= 4:
            break
        time.sleep(0.1)
    launcher.send_signal(signal.SIGINT)
    stdout, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 130, stderr
    assert "interrupted: stopping 2 processes" in stderr
    assert len(children) >= 4  # two runners and their kernels
    assert not [
        child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    ]
