"""The project as an installed package: pyproject.toml agrees with the pinned requirements,
`make install` installs this checkout in editable mode, and a Jupyter kernel started in any
folder imports petals without a path variable."""

import json
import os
import sys
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from petals import install

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pinned_requirements():
    """requirements.txt as {canonical name: pinned version}."""
    pins = {}
    with open(os.path.join(REPOSITORY, "requirements.txt")) as handle:
        for line in handle:
            line = line.split("#")[0].strip()
            if line:
                requirement = Requirement(line)
                (specifier,) = requirement.specifier  # one `==` pin per line
                assert specifier.operator == "==", line
                pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def project_table():
    with open(os.path.join(REPOSITORY, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)["project"]


def test_the_package_declares_what_requirements_txt_pins():
    project = project_table()
    declared = [Requirement(text) for text in project["dependencies"]]
    declared += [Requirement(text) for text in project["optional-dependencies"]["dev"]]
    pins = pinned_requirements()
    names = [canonicalize_name(requirement.name) for requirement in declared]
    assert sorted(names) == sorted(pins)  # the same packages, each once
    refused = [
        f"{requirement} (pinned {pins[name]})"
        for name, requirement in zip(names, declared, strict=True)
        if not requirement.specifier.contains(pins[name], prereleases=True)
    ]
    assert refused == []
    keras = next(item for item in declared if item.name == "keras")
    assert str(keras.specifier) == f">={install.MINIMUM_KERAS}"
    assert project["requires-python"] == ">=3.11"


def test_the_environment_has_this_checkout_installed_in_editable_mode():
    """`make install` (pip install --editable .): petals and kit import from this checkout."""
    # Installed in the environment: not the petals.egg-info the install leaves in the checkout,
    # which is on this process's path too (pytest's pythonpath).
    installed = [path for path in sys.path if path and os.path.realpath(path) != REPOSITORY]
    (distribution,) = metadata.distributions(name="petals", path=installed)
    origin = json.loads(distribution.read_text("direct_url.json"))
    assert origin["dir_info"] == {"editable": True}
    assert origin["url"] == f"file://{REPOSITORY}"
    assert distribution.version == project_table()["version"]


@pytest.mark.slow
def test_a_jupyter_kernel_started_in_another_folder_imports_petals(tmp_path):
    """Jupyter starts a notebook's kernel in the notebook's folder, with no PYTHONPATH."""
    from jupyter_client.manager import start_new_kernel

    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    manager, client = start_new_kernel(
        kernel_name="python3", cwd=str(tmp_path), env=environment, startup_timeout=120
    )
    printed = []

    def collect(message):
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])

    try:
        reply = client.execute_interactive(
            "import os, sys, kit, petals\n"
            "print(os.getcwd(), sys.executable, petals.__file__, kit.__file__, sep='\\n')",
            output_hook=collect,
            timeout=120,
        )
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok", reply["content"]
    folder, executable, petals_file, kit_file = "".join(printed).split()
    assert folder == str(tmp_path)
    assert executable == sys.executable  # the project's environment
    assert petals_file == os.path.join(REPOSITORY, "petals", "__init__.py")
    assert kit_file == os.path.join(REPOSITORY, "kit", "__init__.py")
