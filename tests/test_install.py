"""Tests for petals.install: the efficientnet package is checked without side effects, and
installed only inside a Kaggle notebook, with one line when that fails."""

import importlib.util
import subprocess

import pytest

from petals import install
from petals.backbones import validate_weights


@pytest.fixture
def without_efficientnet(monkeypatch):
    """As on Kaggle's TPU image: no efficientnet package (TensorFlow is there)."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *rest: None if name == "efficientnet" else real_find_spec(name, *rest),
    )


@pytest.fixture
def pip_calls(monkeypatch):
    """The commands passed to subprocess.run; none of them runs, each fails the test."""
    calls = []

    def refuse(command, **options):
        calls.append(command)
        raise AssertionError(f"ran {command}")

    monkeypatch.setattr(subprocess, "run", refuse)
    return calls


def test_checking_installs_nothing(without_efficientnet, pip_calls, monkeypatch):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert install.missing_noisy_student_packages() == ["efficientnet"]
    # Inside a Kaggle notebook the package will be installed when the weights are converted.
    install.check_noisy_student_packages()
    validate_weights("noisy-student", ["efficientnet_b7"])
    assert pip_calls == []
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")
    with pytest.raises(ValueError, match=r"need the efficientnet package\(s\); run: pip install"):
        validate_weights("noisy-student", ["efficientnet_b7"])
    with pytest.raises(ValueError, match=r"need the efficientnet package\(s\); run: pip install"):
        install.ensure_noisy_student_packages()
    assert pip_calls == []


def test_nothing_is_installed_when_the_packages_are_there(pip_calls, monkeypatch):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert install.missing_noisy_student_packages() == []
    install.ensure_noisy_student_packages()
    assert pip_calls == []


@pytest.mark.slow
def test_install_failure_on_kaggle_is_one_line(without_efficientnet, monkeypatch):
    # pip runs for real, and finds nothing (as without Internet).
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setattr(install, "EFFICIENTNET_REQUIREMENT", "efficientnet==0.0.1")
    with pytest.raises(
        ValueError,
        match=r"efficientnet package, which Kaggle's TPU image lacks, and "
        r"`pip install efficientnet==0\.0\.1` failed .*turn on Internet",
    ) as error:
        install.ensure_noisy_student_packages()
    assert "\n" not in str(error.value)
