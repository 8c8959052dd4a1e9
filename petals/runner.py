"""Execute a literate notebook (`.py` percent script) through papermill with parameters.

papermill injects the values as a cell tagged `injected-parameters` after the `parameters` cell
and saves the executed notebook, outputs included, in the run's output folder.
"""

import argparse
import os
import sys

NOTEBOOK_NAME = "notebook.ipynb"
PATH_PARAMETERS = ("DATA_DIR", "WEIGHTS", "COMPILE_CACHE_DIR")


def execute(source, output_dir, parameters=None, log_output=False, cwd=None):
    """Run `source` with `parameters`, OUTPUT_DIR set to `output_dir`; return the notebook path.

    The kernel starts in `cwd`, by default the source's folder, as Jupyter would start it. Raises
    papermill.PapermillExecutionError when a cell fails (the saved notebook shows where).
    """
    import jupytext
    import papermill

    from petals.parameters import NAMES
    from petals.submission import prepare_output_dir

    unknown = sorted(set(parameters or {}) - set(NAMES))
    if unknown:
        raise ValueError(f"unknown parameters {', '.join(unknown)}; the notebook's parameters "
                         "are " + ", ".join(NAMES))
    parameters = dict(parameters or {})
    # The kernel starts in another folder: paths given relative to the caller's folder are
    # made absolute here, so they mean what the caller meant.
    for name in PATH_PARAMETERS:
        value = parameters.get(name)
        if isinstance(value, str) and value not in ("imagenet", "noisy-student"):
            parameters[name] = os.path.abspath(value)
    output_dir = os.path.abspath(prepare_output_dir(output_dir))
    notebook = jupytext.read(source)
    output_path = os.path.join(output_dir, NOTEBOOK_NAME)
    papermill.execute_notebook(
        notebook, output_path,
        parameters={**parameters, "OUTPUT_DIR": output_dir},
        cwd=cwd or os.path.dirname(os.path.abspath(source)),
        log_output=log_output, progress_bar=False,
    )
    return output_path


def main(argv=None):
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="the notebook's .py percent script")
    parser.add_argument("output_dir", help="new folder for the executed notebook and results")
    parser.add_argument("-f", "--parameters-file", help="YAML file of parameter values")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="one parameter (value parsed as YAML)")
    arguments = parser.parse_args(argv)
    parameters = {}
    if arguments.parameters_file:
        with open(arguments.parameters_file) as handle:
            parameters.update(yaml.safe_load(handle) or {})
    parameters.update({name: yaml.safe_load(value) for name, value in arguments.parameter})
    from papermill import PapermillExecutionError

    try:
        path = execute(arguments.source, arguments.output_dir, parameters, log_output=True)
    except (FileExistsError, ValueError) as error:
        sys.exit(f"error: {error}")
    except PapermillExecutionError as error:
        # The notebook already showed the traceback; the user needs the one line that says why.
        sys.exit(f"error: {error.ename}: {error.evalue} (see {arguments.output_dir}/"
                 f"{NOTEBOOK_NAME})")
    print(f"executed notebook: {path}")


if __name__ == "__main__":
    main()
