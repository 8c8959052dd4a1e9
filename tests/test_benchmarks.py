"""The accelerator check's CPU version (benchmarks/accelerator_check.sh), run as a user runs it."""

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parent.parent
CHECK = REPOSITORY / "benchmarks" / "accelerator_check.sh"
ROW = re.compile(r"^\| tiny \|(.*)\|$", re.MULTILINE)


def run_check(*arguments, python=sys.executable):
    environment = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    return subprocess.run(
        [str(CHECK), *arguments],
        capture_output=True,
        text=True,
        check=False,
        env={**environment, "PYTHON": str(python)},
        timeout=600,
    )


def test_cpu_version_prints_one_row_of_figures_for_the_tiny_backbone():
    result = run_check()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "accelerator check on 8 × cpu" in result.stdout  # eight virtual devices
    rows = ROW.findall(result.stdout)
    assert len(rows) == 1, result.stdout
    cells = [cell.strip() for cell in rows[0].split("|")]
    # bare, full, full/bare, fed, fed/resident, fed+prefetch/resident, compile full, compile
    # bare, compile full with the cache the first full run wrote
    assert len(cells) == 9 and "—" not in cells, result.stdout
    bare, full, full_over_bare, fed, fed_over_resident, ahead_over_resident, *compiles = map(
        float, cells
    )
    assert min(bare, full, fed, ahead_over_resident, *compiles) > 0
    assert abs(full_over_bare - full / bare) < 0.01
    assert abs(fed_over_resident - fed / full) < 0.01  # "full" is the resident full model
    assert re.search(r"uint8-first / float-first time = \d+\.\d+", result.stdout)
    # Then prediction, on the same eight devices, with and without the mirror view.
    assert "prediction on 8 × cpu" in result.stdout
    speeds = re.findall(
        r"^  (model\.predict|predict\.predict, views): +(\d+\.\d) images/s",
        result.stdout,
        re.MULTILINE,
    )
    assert [name for name, _ in speeds] == ["model.predict", "predict.predict, views"]
    (_, plain), (_, views) = speeds
    ratio = float(
        re.search(r"with 1 view\(s\) / without, time = (\d+\.\d+)", result.stdout).group(1)
    )
    assert abs(ratio - float(plain) / float(views)) < 0.05 * ratio


def test_a_host_without_jax_or_keras_gets_one_line_naming_the_wheels_option(tmp_path):
    bare_python = tmp_path / "bare"
    venv.create(bare_python, with_pip=False)
    result = run_check(python=bare_python / "bin" / "python")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "pass --wheels DIR" in result.stderr and "No module named 'jax'" in result.stderr


def test_an_empty_wheels_folder_is_refused_before_anything_runs(tmp_path):
    result = run_check("--wheels", str(tmp_path))
    assert result.returncode == 2
    assert f"no .whl files in {tmp_path}" in result.stderr
