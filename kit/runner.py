"""Execute a literate notebook (`.py` percent script) through papermill with parameters.

papermill injects the values as a cell tagged `injected-parameters` after the `parameters` cell
and saves the executed notebook, outputs included, in the run's output folder, with an HTML copy
beside it. On the terminal: each section's heading as it starts, and what the notebook prints.
With `--processes N` it starts N processes of the notebook as one run (kit.launcher).
"""

import argparse
import os
import shlex
import sys
import tempfile

from kit.launcher import add_process_arguments, launch_processes, process_folder

NOTEBOOK_NAME = "notebook.ipynb"
HTML_NAME = "notebook.html"
PATH_PARAMETERS = ("DATA_DIR", "WEIGHTS", "COMPILE_CACHE_DIR")
# A kernel that is one of several processes waits this long at its exit for the others (JAX's
# shutdown barrier), instead of jupyter_client's 5 s before it is killed.
PROCESS_SHUTDOWN_WAIT_SECONDS = 60.0
WEIGHTS_NAMES = ("imagenet", "noisy-student")


def kernel_manager_class(socket_folder):
    """A kernel manager talking to its kernel over Unix sockets in `socket_folder`.

    Over jupyter_client's default, TCP on localhost, ipykernel warns that the traffic is not
    encrypted; local sockets are private to the user. And the run is over when the last cell has
    finished: the interrupt jupyter_client sends before every shutdown would only reach an idle
    kernel, which logs it as an error ("KeyboardInterrupt caught in kernel").
    """
    from jupyter_client.manager import AsyncKernelManager

    from petals import hosts

    class RunKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(transport="ipc", ip=os.path.join(socket_folder, "kernel"), **kwargs)
            if hosts.launched_process() is not None or hosts.cloud_tpu_hosts() > 1:
                self.shutdown_wait_time = PROCESS_SHUTDOWN_WAIT_SECONDS

        async def _async_interrupt_kernel(self):
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

    return RunKernelManager


class Progress:
    """nbclient hooks that print each section's heading when its first code cell starts."""

    def __init__(self, stream=sys.stdout):
        self.stream = stream
        self.heading = None

    def cell_start(self, cell, cell_index):
        if cell.cell_type == "markdown":
            headings = [
                line.lstrip("#").strip()
                for line in cell.source.splitlines()
                if line.startswith("#")
            ]
            if headings:
                self.heading = headings[0]

    def cell_execute(self, cell, cell_index):
        if self.heading:
            print(f"== {self.heading}", file=self.stream, flush=True)
            self.heading = None


def absolute_paths(parameters):
    """Path parameters made absolute: the kernel starts in another folder than the caller."""
    parameters = dict(parameters)
    from petals.parameters import is_local_path, is_url, none_or_value

    def absolute(value):
        named = isinstance(value, str) and (value in WEIGHTS_NAMES or none_or_value(value) is None)
        local = isinstance(value, str) and not named and not is_url(value)
        return os.path.abspath(value) if local else value  # gs://… stays as it is

    for name in set(PATH_PARAMETERS) & set(parameters):
        value = parameters[name]
        # WEIGHTS may map each backbone to its own weights, files among them.
        parameters[name] = (
            {key: absolute(item) for key, item in value.items()}
            if isinstance(value, dict)
            else absolute(value)
        )
    cache_source = parameters.get("COMPILE_CACHE_FROM")
    if isinstance(cache_source, str) and is_local_path(cache_source):  # else a dataset slug
        parameters["COMPILE_CACHE_FROM"] = os.path.abspath(os.path.expanduser(cache_source))
    if isinstance(parameters.get("EXTRA_DATA"), list):
        # Local folders are made absolute; anything else is a URL or a Kaggle dataset slug.
        parameters["EXTRA_DATA"] = [
            os.path.abspath(os.path.expanduser(entry))
            if isinstance(entry, str) and is_local_path(entry)
            else entry
            for entry in parameters["EXTRA_DATA"]
        ]
    return parameters


def write_html(notebook_path, html_path):
    """The executed notebook as one HTML file (figures embedded), written atomically."""
    from nbconvert import HTMLExporter

    from petals.files import write_atomically

    body, _ = HTMLExporter().from_filename(notebook_path)
    return write_atomically(html_path, lambda handle: handle.write(body), overwrite=True)


def check_parameters(source, parameters, output_dir):
    """The parameters `execute` injects, checked now: unknown names (with the nearest known
    one), and, for a notebook whose every parameter petals.parameters checks (flowers.py), every
    value, in a second, without Keras. ValueError with one line; nothing is written."""
    from petals import parameters as checks

    names = checks.notebook_parameters(source)
    unknown = checks.unknown_names(parameters, names)
    if unknown:
        raise ValueError(unknown)
    parameters = absolute_paths(checks.plain_none(parameters))
    if set(names) == set(checks.CHECKS):
        checks.check({**names, **parameters, "OUTPUT_DIR": output_dir})
    return parameters


def execute(source, output_dir, parameters=None, log_output=False, cwd=None, notebook_dir=None):
    """Run `source` with `parameters`, OUTPUT_DIR set to `output_dir`; return the notebook path.

    The executed notebook and its HTML go to `notebook_dir` (default: `output_dir`).

    Unknown parameter names and bad values are refused before anything runs
    (`check_parameters`); the strings 'None' and 'null' mean None. With `log_output`, section
    headings and the notebook's printed output stream to this process's stdout and stderr. The
    kernel starts in `cwd`, by default the source's folder, as Jupyter would start it. The
    executed notebook is written with an HTML copy, also when a cell fails; then
    papermill.PapermillExecutionError is raised.
    """
    parameters = check_parameters(source, parameters or {}, os.path.abspath(output_dir))
    import jupytext
    import papermill

    from petals import output_folder

    output_dir = os.path.abspath(output_folder.prepare(output_dir, replace=False))
    notebook = jupytext.read(source)
    notebook_dir = os.path.abspath(notebook_dir or output_dir)
    os.makedirs(notebook_dir, exist_ok=True)
    output_path = os.path.join(notebook_dir, NOTEBOOK_NAME)
    options = {}
    if log_output:
        progress = Progress()
        options = {
            "stdout_file": sys.stdout,
            "stderr_file": sys.stderr,
            "on_cell_start": progress.cell_start,
            "on_cell_execute": progress.cell_execute,
        }
    # The kernel inherits this environment: TensorFlow's C++ start-up banner (CPU features,
    # missing CUDA) goes to the terminal, not the notebook, and says nothing to act on.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="petals-kernel-") as socket_folder:
        try:
            papermill.execute_notebook(
                notebook,
                output_path,
                parameters={**parameters, "OUTPUT_DIR": output_dir},
                cwd=cwd or os.path.dirname(os.path.abspath(source)),
                progress_bar=False,
                kernel_manager_class=kernel_manager_class(socket_folder),
                **options,
            )
        finally:
            if os.path.exists(output_path):
                write_html(output_path, os.path.join(notebook_dir, HTML_NAME))
    return output_path


def parse_value(name, text):
    """A -p value read as YAML (`[a, b]` is a list, `4` a number); ValueError if it is not YAML."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(
            f"-p {name} {text!r} is not a YAML value: {str(error).splitlines()[0]}"
        ) from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="the notebook's .py percent script")
    parser.add_argument("output_dir", help="new folder for the executed notebook and results")
    parser.add_argument("-f", "--parameters-file", help="YAML file of parameter values")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="one parameter (value parsed as YAML; None or null for None)",
    )
    add_process_arguments(parser)
    arguments = parser.parse_args(argv)
    from petals import hosts

    try:
        parameters = {}
        if arguments.parameters_file:
            parameters.update(read_parameters_file(arguments.parameters_file))
        parameters.update({name: parse_value(name, value) for name, value in arguments.parameter})
        # Checked before papermill is even imported: a mistake is named within a second.
        check_parameters(arguments.source, parameters, os.path.abspath(arguments.output_dir))
        if arguments.processes != 1 or arguments.timeout is not None:
            sys.exit(launch_processes(arguments))
        from papermill import PapermillExecutionError

        try:
            path = execute(
                arguments.source,
                arguments.output_dir,
                parameters,
                log_output=hosts.prints_progress(),
                notebook_dir=process_notebook_dir(arguments.output_dir),
            )
        except PapermillExecutionError as error:
            # The notebook already showed the traceback; the user needs the one line saying why.
            notebook_dir = process_notebook_dir(arguments.output_dir) or arguments.output_dir
            sys.exit(f"error: {error.ename}: {error.evalue} (see {notebook_dir}/{NOTEBOOK_NAME})")
    except (FileExistsError, ValueError) as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        # The kernel is gone with this process; its notebook so far stays as the record.
        command = [command_name(), "-m", "kit.runner", *(sys.argv[1:] if argv is None else argv)]
        sys.exit(
            f"\ninterrupted: the run in {arguments.output_dir} stopped unfinished; start it "
            f"again with `{shlex.join(command)}`"
        )
    print(f"executed notebook: {path}")


def command_name(executable=None):
    """The interpreter this command was started with, as the user can type it: relative to the
    current folder when inside it (`.venv/bin/python`), else the full path."""
    executable = executable or sys.executable
    relative = os.path.relpath(executable)
    return executable if relative.startswith("..") else relative


def read_parameters_file(path):
    """The {name: value} mapping of a YAML parameters file; ValueError saying what is wrong."""
    import yaml

    try:
        with open(path) as handle:
            document = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ValueError(f"parameters file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ValueError(
            f"parameters file {path} is not valid YAML: {str(error).splitlines()[0]}"
        ) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ValueError(f"parameters file {path} must map names to values")
    return document


def process_notebook_dir(output_dir):
    """Where this process writes its executed notebook: OUTPUT_DIR for process 0 (or a run of
    one process), OUTPUT_DIR/process-I for process I > 0 of a launch."""
    from petals import hosts

    process = hosts.launched_process()
    if process is None or process.index == 0:
        return None
    return process_folder(output_dir, process.index)


if __name__ == "__main__":
    main()
