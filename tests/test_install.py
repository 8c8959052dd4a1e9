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
    """pip runs for real and finds nothing: the one line saying to turn on Internet."""
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


@pytest.fixture
def old_keras_hub(monkeypatch):
    """As on a Kaggle image built with an older keras-hub (0.21.1)."""
    import importlib.metadata

    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "0.21.1" if name == "keras-hub" else real_version(name),
    )


def test_the_installed_keras_hub_passes_its_check(pip_calls, monkeypatch):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    install.check_keras_hub()
    assert install.ensure_keras_hub() is None
    assert pip_calls == []


def test_an_older_keras_hub_is_named_off_kaggle(old_keras_hub, pip_calls, monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    with pytest.raises(ValueError, match=r"keras-hub 0\.21\.1 is here; run: pip install") as error:
        install.check_keras_hub()
    assert install.KERAS_HUB_REQUIREMENT in str(error.value)
    assert install.ensure_keras_hub() is None  # nothing installed outside Kaggle
    assert pip_calls == []


def test_an_older_keras_hub_on_kaggle_is_replaced_without_its_dependencies(
    old_keras_hub, monkeypatch, capsys
):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    commands = []

    def pip(command, **options):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", pip)
    assert install.ensure_keras_hub() == install.KERAS_HUB_REQUIREMENT
    (command,) = commands
    assert command[-2:] == ["--no-deps", install.KERAS_HUB_REQUIREMENT]
    assert install.KERAS_HUB_REQUIREMENT in capsys.readouterr().out


def test_keras_hub_brings_what_it_imports_where_the_image_lacks_it(old_keras_hub, monkeypatch):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *rest: None if name == "tokenizers" else real_find_spec(name, *rest),
    )
    commands = []

    def pip(command, **options):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", pip)
    install.ensure_keras_hub()
    assert [command[-1] for command in commands] == [install.KERAS_HUB_REQUIREMENT, "tokenizers"]
