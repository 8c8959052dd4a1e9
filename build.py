#!/usr/bin/env python3
"""Build Kaggle kernels from the literate notebooks, run them on Kaggle or locally, collect.

    python build.py kernels   one self-contained notebook + kernel-metadata.json per variant
    python build.py push      push the built kernels with the kaggle client
    python build.py status    one line per variant: version, status, failure message
    python build.py collect   wait for the pushed versions, download and validate their outputs
    python build.py submit    submit a collected submission.csv to the competition
    python build.py sweep     run the sweep locally through papermill (resumable)
    python build.py results   one table (markdown and CSV) over every collected or local run

A sweep is a TOML file (see sweeps/): the notebook, fixed parameters and a grid.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from kit import cycle, kernels, results, sweeps
from kit.kaggle_client import KaggleError, connect

DEFAULT_SWEEP = "sweeps/competition.toml"
OWNER_PLACEHOLDER = "your-kaggle-username"


def find_owner(requested):
    """--owner, else KAGGLE_USERNAME, else the username in the kaggle config file."""
    if requested:
        return requested
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    config_dir = os.environ.get("KAGGLE_CONFIG_DIR", os.path.expanduser("~/.kaggle"))
    config = Path(config_dir) / "kaggle.json"
    if config.exists():
        username = json.loads(config.read_text()).get("username")
        if username:
            return username
    raise ValueError("no Kaggle owner: pass --owner, set KAGGLE_USERNAME, or put kaggle.json in "
                     "~/.kaggle")


def selected(sweep, only):
    variants = [variant for variant in sweep.variants if not only or variant.slug in only]
    unknown = set(only or ()) - {variant.slug for variant in sweep.variants}
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(sorted(unknown))}; this sweep has: "
                         + ", ".join(variant.slug for variant in sweep.variants))
    return variants


def built_kernel_id(arguments, variant):
    """The id in the built kernel's metadata (the owner it was built for)."""
    path = Path(arguments.kernels_dir) / variant.slug / kernels.METADATA_FILE
    if not path.exists():
        raise ValueError(f"{variant.slug} is not built; run `python build.py kernels` first")
    return json.loads(path.read_text())["id"]


def command_kernels(arguments, sweep):
    owner = find_owner(arguments.owner)
    accelerator = arguments.accelerator or sweep.accelerator
    variants = selected(sweep, arguments.only)
    print(f"building {len(variants)} kernel(s) for {owner}, accelerator {accelerator}")
    for variant in variants:
        folder = kernels.write_kernel(variant, Path(arguments.kernels_dir) / variant.slug, owner,
                                      accelerator, arguments.public, arguments.dataset)
        print(f"  {folder}")
    default = sweep.variants[0]
    if default not in variants:
        print(f"  {arguments.root_metadata} left as it is: the default variant {default.slug} "
              "was not built")
        return
    document = kernels.root_metadata(default, owner, accelerator, arguments.kernels_dir)
    root = Path(arguments.root_metadata)
    kernels.validate_metadata(document, root.parent)
    root.write_text(json.dumps(document, indent=2) + "\n")
    print(f"  {root} → {document['code_file']} (the default variant)")


def command_push(arguments, sweep):
    api = connect()
    variants = selected(sweep, arguments.only)
    print(f"pushing {len(variants)} kernel(s)")
    for variant in variants:
        kernel_id = built_kernel_id(arguments, variant)
        folder = Path(arguments.kernels_dir) / variant.slug
        # Checked again here: the files may have been edited since they were built.
        kernels.validate_metadata(json.loads((folder / kernels.METADATA_FILE).read_text()),
                                  folder)
        version = cycle.push(folder, Path(arguments.runs_dir) / variant.slug, kernel_id, api)
        print(f"  {kernel_id}: version {version} pushed")


def command_status(arguments, sweep):
    api = connect()
    for variant in selected(sweep, arguments.only):
        state = cycle.read_state(Path(arguments.runs_dir) / variant.slug)
        if not state["pushes"]:
            print(f"{variant.slug}: not pushed")
            continue
        version = state["pushes"][-1]["version"]
        name, failure = cycle.status(state["kernel"], version, api)
        print(f"{variant.slug}: v{version} {name}" + (f" — {failure}" if failure else ""))


def command_collect(arguments, sweep):
    api = connect()
    problems = 0
    for variant in selected(sweep, arguments.only):
        try:
            version, folder, problem = cycle.collect(
                Path(arguments.runs_dir) / variant.slug, variant.slug, arguments.expected_rows,
                api, poll=arguments.poll, timeout=arguments.timeout)
        except KaggleError as error:  # This variant can't be collected now; the others can.
            print(f"{variant.slug}: {error}")
            problems += 1
            continue
        print(f"{variant.slug}: v{version} → {folder}" + (f" ({problem})" if problem else ""))
        problems += problem is not None
    return 1 if problems else 0


def command_submit(arguments, sweep):
    (variant,) = selected(sweep, [arguments.variant])
    run_dir = Path(arguments.runs_dir) / variant.slug
    state = cycle.read_state(run_dir)
    if not state["pushes"]:
        raise ValueError(f"{variant.slug} was never pushed")
    version = arguments.version or state["pushes"][-1]["version"]
    folder = run_dir / f"v{version}"
    collected = folder / cycle.COLLECTED_FILE
    if not collected.exists():
        raise ValueError(f"{variant.slug} v{version} is not collected; run collect first")
    problem = json.loads(collected.read_text())["problem"]
    if problem:
        raise ValueError(f"{variant.slug} v{version} has no valid submission: {problem}")
    metrics_path = folder / "metrics.json"
    f1 = json.loads(metrics_path.read_text()).get("blend_f1") if metrics_path.exists() else None
    message = f"petals {variant.slug} v{version}" + (
        f" validation F1 {f1:.4f}" if f1 is not None else " (trained on validation)")
    print(cycle.submit(folder / "submission.csv", message, connect()))
    print(f"submitted: {message}")


def command_sweep(arguments, sweep):
    from papermill import PapermillExecutionError

    from petals import runner

    variants = selected(sweep, arguments.only)
    plans = [(variant, *cycle.local_run_dir(Path(arguments.runs_dir) / variant.slug,
                                            arguments.rerun)) for variant in variants]
    pending = [plan for plan in plans if not plan[2]]
    print(f"sweep {sweep.name}: {len(variants)} run(s), {len(variants) - len(pending)} finished "
          f"already, {len(pending)} to run")
    failures = 0
    for variant, folder, _ in pending:
        print(f"  {variant.slug} → {folder}", flush=True)
        try:
            runner.execute(str(kernels.REPOSITORY / sweep.notebook), str(folder),
                           variant.parameters)
        except (PapermillExecutionError, OSError, ValueError) as error:
            # One failed variant is reported and the sweep goes on with the others.
            failures += 1
            last_line = str(error).strip().splitlines()[-1] if str(error).strip() else error
            print(f"  {variant.slug} failed: {last_line} (see {folder}/notebook.ipynb)")
    return 1 if failures else 0


def command_results(arguments, sweep):
    table = results.rows(arguments.runs_dir)
    if not table:
        raise ValueError(f"no runs with metrics.json under {arguments.runs_dir}")
    markdown = results.markdown(table)
    Path(arguments.runs_dir, "results.md").write_text(markdown)
    Path(arguments.runs_dir, "results.csv").write_text(results.csv_text(table))
    print(markdown + f"\n(also {arguments.runs_dir}/results.md and results.csv)")


COMMANDS = {"kernels": command_kernels, "push": command_push, "status": command_status,
            "collect": command_collect, "submit": command_submit, "sweep": command_sweep,
            "results": command_results}


def parser():
    main = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = main.add_subparsers(dest="verb", required=True, metavar="VERB")
    helps = {line.split()[2]: " ".join(line.split()[3:]) for line in __doc__.splitlines()
             if line.startswith("    python build.py")}
    for verb in COMMANDS:
        sub = verbs.add_parser(verb, help=helps[verb], description=helps[verb])
        if verb != "results":
            sub.add_argument("--sweep", default=DEFAULT_SWEEP, help="sweep file (TOML)")
            if verb != "submit":
                sub.add_argument("--only", nargs="+", metavar="VARIANT",
                                 help="only these variants (run names)")
        sub.add_argument("--runs-dir", default="runs", help="where runs and results live")
        sub.add_argument("--kernels-dir", default="kernels", help="where kernels are built")
        if verb == "kernels":
            sub.add_argument("--owner", help="Kaggle username (default: KAGGLE_USERNAME or "
                                             "the kaggle config)")
            sub.add_argument("--accelerator", choices=sweeps.ACCELERATORS,
                             help="override the sweep's accelerator (tpu: TpuV5E8, gpu: "
                                  "NvidiaTeslaT4, cpu: none)")
            sub.add_argument("--public", action="store_true", help="make kernels public")
            sub.add_argument("--dataset", action="append", default=[], metavar="OWNER/SLUG",
                             help="attach a dataset (e.g. weights files)")
            sub.add_argument("--root-metadata", default=kernels.METADATA_FILE,
                             help="where to write the default variant's kernel-metadata.json")
        if verb == "collect":
            sub.add_argument("--poll", type=float, default=10.0, help="first poll interval (s)")
            sub.add_argument("--timeout", type=float, default=None,
                             help="stop waiting for a variant after this many seconds (each "
                                  "variant waits up to this long; collect resumes later)")
            sub.add_argument("--expected-rows", type=int, default=7382,
                             help="rows a submission must have (the competition's test split)")
        if verb == "submit":
            sub.add_argument("variant", help="run name of the variant to submit")
            sub.add_argument("--version", type=int, help="kernel version (default: latest)")
        if verb == "sweep":
            sub.add_argument("--rerun", action="store_true",
                             help="run finished variants again (in a new folder)")
    return main


def main(argv=None):
    arguments = parser().parse_args(argv)
    try:
        sweep = sweeps.load(arguments.sweep) if hasattr(arguments, "sweep") else None
        return COMMANDS[arguments.verb](arguments, sweep) or 0
    except (ValueError, KaggleError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
