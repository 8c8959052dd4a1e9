#!/usr/bin/env python3
"""Build Kaggle kernels from the literate notebooks, run them on Kaggle or locally, collect.

    python build.py kernels   one self-contained notebook + kernel-metadata.json per variant
    python build.py run       push, wait, collect the whole sweep within Kaggle's session cap
    python build.py push      push the built kernels with the kaggle client
    python build.py status    per variant: queued/running/complete/error, elapsed, estimate
    python build.py collect   wait for the pushed versions, download and validate their outputs
    python build.py submit    submit a collected submission.csv to the competition
    python build.py sweep     run the sweep locally through papermill (resumable)
    python build.py results   one table (markdown and CSV) over every collected or local run
    python build.py blend     blend the saved probabilities of the sweep's runs; --submit it

A sweep is a TOML file (see sweeps/): the notebook, fixed parameters and a grid.
"""

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from kit import (
    blend,
    cache_dataset,
    collect,
    cycle,
    estimate,
    kernels,
    pushes,
    results,
    submit,
    sweeps,
)
from kit.kaggle_client import KaggleError, check_client, connect, read_config
from kit.runner import command_name
from petals.parameters import DATASET_SLUG

DEFAULT_SWEEP = "sweeps/competition.toml"
OWNER_PLACEHOLDER = "your-kaggle-username"
# Sessions `run` keeps busy at once unless --max-concurrent says otherwise. Kaggle publishes no
# number; its refusal ("Maximum batch TPU session count of N reached.") is what counts, and
# `run` waits for a free session when it comes.
DEFAULT_CONCURRENT = {"tpu": 1, "gpu": 2, "cpu": 2}
# The verbs that talk to Kaggle (and `blend --submit`): the installed client is checked before
# anything else.
KAGGLE_VERBS = ("run", "push", "status", "collect", "submit")


def this_command(*arguments):
    """`.venv/bin/python build.py ARGUMENTS…`, started as this command was: the hints' commands
    then run with the interpreter that has the kit's packages (a bare `python` may have none)."""
    script = os.path.relpath(__file__)
    return shlex.join([command_name(), __file__ if script.startswith("..") else script, *arguments])


def find_owner(requested):
    """--owner, else KAGGLE_USERNAME, else the username in the kaggle config file."""
    if requested:
        return requested
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    username = read_config().get("username")  # a malformed kaggle.json is named as such
    if username:
        return username
    raise ValueError(
        "no Kaggle owner: pass --owner, set KAGGLE_USERNAME, or put kaggle.json in ~/.kaggle"
    )


def selected(sweep, only):
    """The sweep's variants named by --only (all without it); ValueError naming unknown ones."""
    variants = [variant for variant in sweep.variants if not only or variant.slug in only]
    unknown = set(only or ()) - {variant.slug for variant in sweep.variants}
    if unknown:
        raise ValueError(
            f"unknown variant(s) {', '.join(sorted(unknown))}; this sweep has: "
            + ", ".join(variant.slug for variant in sweep.variants)
        )
    return variants


def built_kernel_id(arguments, variant):
    """The id in the built kernel's metadata (the owner it was built for)."""
    path = Path(arguments.kernels_dir) / variant.slug / kernels.METADATA_FILE
    if not path.exists():
        raise ValueError(f"{variant.slug} is not built; run `{this_command('kernels')}` first")
    return json.loads(path.read_text())["id"]


def variant_kernel_id(arguments, variant):
    """The Kaggle id of a variant: the one its pushes.json records, else the built kernel's;
    None when neither exists."""
    state = pushes.read_state(Path(arguments.runs_dir) / variant.slug)
    if state.get("kernel"):
        return state["kernel"]
    path = Path(arguments.kernels_dir) / variant.slug / kernels.METADATA_FILE
    return built_kernel_id(arguments, variant) if path.exists() else None


def variant_stamp(arguments, variant):
    """The stamp of the variant's built kernel (`pushes.kernel_stamp`; None when not built): the
    versions on Kaggle that carry it are this build's."""
    return pushes.kernel_stamp(Path(arguments.kernels_dir) / variant.slug)


def check_variants(sweep, variants, fixed=None, output_dirs=None):
    """Every variant's parameter values checked now, before anything is built or run: one line
    naming the variant and the mistake (petals.parameters.check, no Keras: about a second)."""
    from petals import parameters

    defaults = parameters.notebook_parameters(str(kernels.REPOSITORY / sweep.notebook))
    for variant in variants:
        output_dir = (output_dirs or {}).get(variant.slug, ".")
        try:
            parameters.check(
                {**defaults, **variant.parameters, **(fixed or {}), "OUTPUT_DIR": str(output_dir)}
            )
        except ValueError as error:
            raise ValueError(f"{variant.slug}: {error}") from None


def command_kernels(arguments, sweep):
    """`kernels`: each selected variant checked, then built into `<kernels-dir>/<slug>/`
    (notebook + kernel-metadata.json); the root kernel-metadata.json is rewritten only by a
    build for the placeholder owner."""
    import nbformat

    owner = find_owner(arguments.owner)
    accelerator = arguments.accelerator or sweep.accelerator
    variants = selected(sweep, arguments.only)
    for dataset in arguments.dataset:
        if not DATASET_SLUG.fullmatch(dataset):
            raise ValueError(
                f"--dataset {dataset!r} is not a Kaggle dataset 'owner/dataset-name' "
                "(3-50 lowercase letters, digits and hyphens)"
            )
    # As the kernel runs on Kaggle: the data found there, outputs in the working folder.
    check_variants(sweep, variants, kernels.KAGGLE_PARAMETERS)
    print(f"building {len(variants)} kernel(s) for {owner}, accelerator {accelerator}")
    for variant in variants:
        folder = kernels.write_kernel(
            variant,
            Path(arguments.kernels_dir) / variant.slug,
            owner,
            accelerator,
            arguments.public,
            arguments.dataset,
        )
        notebook = nbformat.read(folder / f"{variant.slug}.ipynb", as_version=4)
        before, total = kernels.visible_code_lines(notebook)
        print(f"  {folder} ({total} visible code lines, {before} before the first heading)")
    default = sweep.variants[0]
    default_folder = Path(arguments.kernels_dir) / default.slug
    if default not in variants:
        print(
            f"  {arguments.root_metadata} left as it is: the default variant {default.slug} "
            "was not built"
        )
    elif owner == OWNER_PLACEHOLDER:
        # The committed root file is the default kernel's metadata for the placeholder owner:
        # only a build for that owner regenerates it, so building for yourself changes no
        # tracked file.
        document = kernels.write_root_metadata(default_folder, arguments.root_metadata)
        print(f"  {arguments.root_metadata} → {document['code_file']} (the default variant)")
    else:
        print(
            f"  push the default variant with `kaggle kernels push -p {default_folder}` or "
            f"`{this_command('run')}`"
        )


def checked_kernel(arguments, variant):
    """(kernel id, accelerator) of a built kernel, its metadata validated again (the files may
    have been edited since they were built)."""
    kernel_id = built_kernel_id(arguments, variant)
    folder = Path(arguments.kernels_dir) / variant.slug
    document = json.loads((folder / kernels.METADATA_FILE).read_text())
    kernels.validate_metadata(document, folder)
    accelerators = {shape: name for name, shape in kernels.MACHINE_SHAPES.items()}
    return kernel_id, accelerators.get(document.get("machine_shape"), "cpu")


def built_accelerator(accelerators):
    """The one accelerator the selected kernels were built for."""
    if len(set(accelerators)) > 1:
        raise ValueError(
            f"the kernels were built for different accelerators "
            f"({', '.join(sorted(set(accelerators)))}); rebuild them together with "
            f"`{this_command('kernels')}`"
        )
    return accelerators[0]


def print_estimates(arguments, variants, accelerator, each=True):
    """The total (and with `each`, a line per variant). Returns {slug: Estimate}."""
    # With a compile cache of the expected image to attach, compiles take what they took with one.
    cached = cache_dataset.expected_fingerprint(arguments.runs_dir, accelerator) is not None
    estimates = estimate.estimate_sweep(variants, accelerator, arguments.runs_dir, cached)
    for item in estimates if each else ():
        print(f"  {item.slug}: {item.text()}")
    print(estimate.summary(estimates) + f" on {accelerator}")
    return {item.slug: item for item in estimates}


def weekly_quota(api, accelerator, budget_hours=None, checking=True):
    """Kaggle's quota of the week for a TPU or GPU sweep (None for CPU kernels), printed; when
    Kaggle does not answer, None and one line (naming, when `checking`, the budget that counts
    instead: `status` checks nothing)."""
    if accelerator not in ("tpu", "gpu"):
        return None
    try:
        quota = cycle.weekly_quota(api, accelerator)
    except KaggleError as error:
        budget = estimate.DEFAULT_BUDGET_HOURS if budget_hours is None else budget_hours
        instead = f"; checking against --budget-hours {budget:g} instead" if checking else ""
        print(f"Kaggle's {accelerator.upper()} quota is not known ({error}){instead}", flush=True)
        return None
    print(quota.text(), flush=True)
    return quota


def check_hours(arguments, estimates, quota, pending, active):
    """Refuse (BudgetError) what has no estimate or would pass the session limit, the hours left
    of Kaggle's quota or --budget-hours: the `pending` jobs to push, plus what the `active`
    sessions (`cycle.Session`s queued or running on Kaggle) still need; --yes pushes anyway."""
    if not arguments.yes:
        running = [
            (estimates[session.job.slug], pushes.seconds_since(session.pushed_at))
            for session in active
        ]
        estimate.check_budget(
            [estimates[job.slug] for job in pending],
            arguments.budget_hours,
            quota=quota,
            running=running,
        )


def jobs_of(arguments, variants, built):
    """A `cycle.Job` per variant: its built kernel, run folder and Kaggle id."""
    return [
        cycle.Job(
            variant.slug,
            Path(arguments.kernels_dir) / variant.slug,
            Path(arguments.runs_dir) / variant.slug,
            kernel_id,
        )
        for variant, (kernel_id, _) in zip(variants, built, strict=True)
    ]


def command_push(arguments, sweep):
    """`push`: push each built kernel once, after the estimate is checked against the week's
    quota; the session cap stops it with the command that waits for free sessions (`run`)."""
    variants = selected(sweep, arguments.only)
    built = [checked_kernel(arguments, variant) for variant in variants]
    accelerator = built_accelerator([kind for _, kind in built])
    estimates = print_estimates(arguments, variants, accelerator)
    api = connect()
    quota = weekly_quota(api, accelerator, arguments.budget_hours)
    # Every variant is pushed (again); its versions still queued or running on Kaggle count too.
    jobs = jobs_of(arguments, variants, built)
    check_hours(
        arguments, estimates, quota, jobs, cycle.SweepRun(jobs, api, len(jobs)).start().active
    )
    attach_compile_cache(
        arguments,
        api,
        accelerator,
        [
            (kernel_id, Path(arguments.kernels_dir) / variant.slug)
            for variant, (kernel_id, _) in zip(variants, built, strict=True)
        ],
    )
    print(f"pushing {len(variants)} kernel(s)")
    for variant, (kernel_id, _) in zip(variants, built, strict=True):
        folder = Path(arguments.kernels_dir) / variant.slug
        try:
            version = pushes.push(folder, Path(arguments.runs_dir) / variant.slug, kernel_id, api)
        except pushes.SessionCapReached as refusal:
            raise KaggleError(
                f"{refusal} `{this_command('run')}` pushes each variant when a session is free"
            ) from None
        print(f"  {kernel_id}: version {version} pushed")


STATES = {
    "QUEUED": "queued",
    "RUNNING": "running",
    "COMPLETE": "complete",
    "ERROR": "error",
    collect.NOT_SHOWN: "pushed, not shown by Kaggle yet",
}


def command_status(arguments, sweep):
    """`status`: per variant, its current version (`pushes.current_version`), Kaggle's status,
    time since its push or collection, and the estimate."""
    variants = selected(sweep, arguments.only)
    kernels_built = all(
        (Path(arguments.kernels_dir) / variant.slug / kernels.METADATA_FILE).exists()
        for variant in variants
    )
    accelerator = (
        built_accelerator([checked_kernel(arguments, variant)[1] for variant in variants])
        if kernels_built
        else sweep.accelerator
    )
    estimates = print_estimates(arguments, variants, accelerator, each=False)
    api = connect()
    weekly_quota(api, accelerator, checking=False)
    for variant in variants:
        run_dir = Path(arguments.runs_dir) / variant.slug
        kernel_id = variant_kernel_id(arguments, variant)
        _, current = (
            pushes.current_version(run_dir, kernel_id, api, variant_stamp(arguments, variant))
            if kernel_id
            else (None, None)
        )
        guess = f"estimate {estimates[variant.slug].text()}"
        if current is None:
            print(f"{variant.slug}: not pushed — {guess}")
            continue
        version = current["version"]
        name, failure = collect.status(kernel_id, version, api)
        record = collect.collected(run_dir, version)
        since = pushes.seconds_since(current["pushed_at"])
        if record is not None:  # pushed → collected: an upper bound of the session's time
            took = (
                since - pushes.seconds_since(record["collected_at"])
                if since is not None and record.get("collected_at")
                else None
            )
            when = "collected" + (
                f" {estimate.duration(took)} after its push" if took is not None else ""
            )
        else:
            when = (
                "pushed elsewhere"
                if since is None
                else f"{estimate.duration(since)} since its push"
            )
        detail = failure or (record or {}).get("problem")
        partial = collect.partial_text(record)
        print(
            f"{variant.slug}: v{version} {STATES.get(name, name.lower())}"
            + (f" ({detail})" if detail else "")
            + f", {when}"
            + (f", {partial}, submittable" if partial else "")
            + f" — {guess}"
        )


def command_collect(arguments, sweep):
    """`collect`: wait for each variant's current version, download and validate its outputs;
    1 when any variant has a problem (the others are still collected)."""
    api = connect()
    problems = 0
    versions = {}
    for variant in selected(sweep, arguments.only):
        kernel_id = variant_kernel_id(arguments, variant)
        if kernel_id is None:
            print(
                f"{variant.slug}: never pushed and not built; run `{this_command('kernels')}` first"
            )
            problems += 1
            continue
        try:
            version, folder, problem = collect.collect(
                Path(arguments.runs_dir) / variant.slug,
                variant.slug,
                kernel_id,
                arguments.expected_rows,
                api,
                variant_stamp(arguments, variant),
                poll=arguments.poll,
                timeout=arguments.timeout,
            )
        except KaggleError as error:  # This variant can't be collected now; the others can.
            print(f"{variant.slug}: {error}")
            problems += 1
            continue
        said = problem or collect.partial_text(collect.collected(folder.parent, version))
        print(f"{variant.slug}: v{version} → {folder}" + (f" ({said})" if said else ""))
        problems += problem is not None
        versions[variant.slug] = (version, kernel_id.split("/")[0])
    for owner in {owner for _, owner in versions.values()}:
        collected = {slug: version for slug, (version, who) in versions.items() if who == owner}
        upload_compile_caches(arguments, api, collected, owner)
    return 1 if problems else 0


def resume_hint(arguments, sweep_run):
    """How to resume this run: the same command without --rerun (which would push again what
    this one pushed), plus, after a --rerun, how to push the variants it had not pushed yet."""
    command = this_command(*(argument for argument in arguments.argv if argument != "--rerun"))
    hint = (
        f"resume with `{command}`, here or on another machine after "
        f"`{this_command('kernels')}` for the same owner (the state is read back from "
        "Kaggle)"
    )
    if arguments.rerun and sweep_run.pending:
        hint += (
            "; then push again those not pushed yet with `--rerun --only "
            + " ".join(job.slug for job in sweep_run.pending)
            + "`"
        )
    return hint


def command_run(arguments, sweep):
    """`run`: the unattended push → wait → collect of the sweep within the session cap
    (`cycle.SweepRun`), resumable; then the results table and the blend. 1 on any problem, 130
    when interrupted."""
    variants = selected(sweep, arguments.only)
    built = [checked_kernel(arguments, variant) for variant in variants]
    accelerator = built_accelerator([kind for _, kind in built])
    estimates = print_estimates(arguments, variants, accelerator)
    jobs = jobs_of(arguments, variants, built)
    maximum = arguments.max_concurrent or DEFAULT_CONCURRENT[accelerator]
    api = connect()
    quota = weekly_quota(api, accelerator, arguments.budget_hours)
    sweep_run = cycle.SweepRun(
        jobs, api, maximum, arguments.poll, arguments.expected_rows, arguments.rerun
    )
    attach_compile_cache(
        arguments, api, accelerator, [(job.kernel_id, job.kernel_dir) for job in jobs]
    )
    try:
        sweep_run.start()
        print(
            f"run {sweep.name}: {sweep_run.describe()}; at most {maximum} {accelerator} "
            "session(s) at once",
            flush=True,
        )
        # What a resumed run will still push counts, not what ran.
        check_hours(arguments, estimates, quota, sweep_run.pending, sweep_run.active)
        done = sweep_run.run(arguments.timeout)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: {sweep_run.describe()} (what runs on Kaggle goes on); "
            f"{resume_hint(arguments, sweep_run)}"
        )
        return 130
    except KaggleError as error:
        print(f"stopped: {sweep_run.describe()}; {resume_hint(arguments, sweep_run)}")
        raise error from None
    if not done:
        print(
            f"stopped after --timeout {arguments.timeout:g} s: {sweep_run.describe()}; "
            f"{resume_hint(arguments, sweep_run)}"
        )
        return 1
    problems = {slug: problem for slug, (_, problem) in sweep_run.outcomes.items() if problem}
    upload_compile_caches(
        arguments,
        api,
        {slug: version for slug, (version, _) in sweep_run.outcomes.items()},
        built[0][0].split("/")[0],
    )
    for slug, problem in problems.items():
        print("\n".join(f"{slug}: {line}" for line in problem.splitlines()))
    partials = {
        job.slug: collect.partial_text(
            collect.collected(job.run_dir, sweep_run.outcomes[job.slug][0])
        )
        for job in jobs
        if job.slug in sweep_run.outcomes and job.slug not in problems
    }
    partials = {slug: text for slug, text in partials.items() if text}
    for slug, text in partials.items():
        version = sweep_run.outcomes[slug][0]
        print(f"{slug}: v{version} {text}; submittable with `{this_command('submit', slug)}`")
    table = results.rows(arguments.runs_dir)
    if table:
        print(write_results(arguments.runs_dir, table))
    # Every variant is collected: the blend of all their models, as `build.py blend` makes it.
    try:
        print(blend.table(blend_of(arguments, sweep, variants)))
        print(
            f"write and submit this blend: `python build.py blend --sweep {arguments.sweep} "
            "--submit`"
        )
    except ValueError as error:
        print(f"no blend: {error}")
    print(
        f"run {sweep.name}: {len(sweep_run.outcomes) - len(problems)} variant(s) collected "
        "with a valid submission"
        + (f" ({len(partials)} of them partial)" if partials else "")
        + f", {len(problems)} with a problem"
    )
    return 1 if problems else 0


def attach_compile_cache(arguments, api, accelerator, kernels_built):
    """Before anything is pushed: the kernels ([(kernel id, folder)]) attach the owner's compile
    cache of the image their accelerator last ran on (kit/cache_dataset.py), or none."""
    owner = kernels_built[0][0].split("/")[0]
    line = cache_dataset.attach_expected(
        api, owner, arguments.runs_dir, accelerator, [folder for _, folder in kernels_built]
    )
    if line:
        print(line, flush=True)


def upload_compile_caches(arguments, api, versions, owner):
    """After collecting: the programs the collected versions ({slug: version}) compiled become
    the owner's private cache dataset of their image. A failed upload is one line; the results
    stand."""
    folders = [
        Path(arguments.runs_dir) / slug / f"v{version}"
        for slug, version in versions.items()
        if version is not None
    ]
    try:
        for line in cache_dataset.upload_collected(api, owner, arguments.runs_dir, folders):
            print(line, flush=True)
    except KaggleError as error:
        print(f"compile cache not uploaded: {error}; `collect` uploads it again", flush=True)
    accelerators = {cache_dataset.accelerator_of(folder) for folder in folders} - {None}
    saved = cache_dataset.saved_line(
        arguments.runs_dir, folders, "/".join(sorted(accelerators)) or "accelerator"
    )
    if saved:
        print(saved, flush=True)


def command_submit(arguments, sweep):
    """`submit`: submit a collected version's submission.csv (default: the current version),
    with a message naming its validation score."""
    (variant,) = selected(sweep, [arguments.variant])
    run_dir = Path(arguments.runs_dir) / variant.slug
    kernel_id = variant_kernel_id(arguments, variant)
    api = connect()
    _, current = (
        pushes.current_version(run_dir, kernel_id, api, variant_stamp(arguments, variant))
        if kernel_id
        else (None, None)
    )
    if current is None:
        raise ValueError(f"{variant.slug} was never pushed")
    version = arguments.version or current["version"]
    folder = run_dir / f"v{version}"
    collected = folder / results.COLLECTED_FILE
    if not collected.exists():
        raise ValueError(f"{variant.slug} v{version} is not collected; run collect first")
    record = json.loads(collected.read_text())
    if record["problem"]:
        raise ValueError(f"{variant.slug} v{version} has no valid submission: {record['problem']}")
    partial = collect.partial_text(record)
    if partial:  # what the session finished before it stopped: valid, and said to be partial
        print(f"{variant.slug} v{version} is {partial}")
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    honest, in_sample = results.validation_f1(metrics), results.in_sample_f1(metrics)
    if honest is not None:
        score = f" validation F1 {honest:.4f}" + (
            f" (in-sample {in_sample:.4f})"
            if in_sample is not None and round(in_sample, 4) != round(honest, 4)
            else ""
        )
    elif in_sample is not None:
        score = f" in-sample F1 {in_sample:.4f} (blend tuned on the images it was scored on)"
    elif variant.parameters.get("TRAIN_ON_VALIDATION"):
        score = " (trained on validation: no validation score)"
    else:
        score = " (no validation score: " + (
            "no metrics.json was collected)" if not metrics else "metrics.json has none)"
        )
    kind = ""
    if partial:
        models = record["partial"]
        kind = f" partial ({len(models['finished'])} of {len(models['planned'])} models)"
    message = f"petals {variant.slug} v{version}{kind}{score}"
    print(submit.submit(folder / "submission.csv", message, api))
    print(f"submitted: {message}")


def command_sweep(arguments, sweep):
    """`sweep`: run the selected variants here through papermill, each in its own `local-N`
    folder (`sweeps.local_run_dir`), skipping finished ones; 1 when any failed, 130 when
    interrupted."""
    from papermill import PapermillExecutionError

    from kit import runner

    variants = selected(sweep, arguments.only)
    if sweep.accelerator != "cpu" and not arguments.on_cpu:
        raise ValueError(
            f"sweep {sweep.name} is sized for a {sweep.accelerator.upper()} (hours "
            "per variant on a CPU); run it on Kaggle with "
            f"`{this_command('run', '--sweep', arguments.sweep)}`, choose a CPU "
            "sweep (--sweep sweeps/cpu-smoke.toml), or pass --on-cpu to run it "
            "here anyway"
        )
    plans = [
        (variant, *sweeps.local_run_dir(Path(arguments.runs_dir) / variant.slug, arguments.rerun))
        for variant in variants
    ]
    pending = [plan for plan in plans if not plan[2]]
    check_variants(
        sweep,
        [variant for variant, _, _ in pending],
        output_dirs={variant.slug: folder for variant, folder, _ in pending},
    )
    print(
        f"sweep {sweep.name}: {len(variants)} run(s), {len(variants) - len(pending)} finished "
        f"already, {len(pending)} to run"
    )
    failures = 0
    for done, (variant, folder, _) in enumerate(pending):
        try:  # from the first line about a variant on, Ctrl-C is this variant's interruption
            print(f"  {variant.slug} → {folder}", flush=True)
            runner.execute(
                str(kernels.REPOSITORY / sweep.notebook),
                str(folder),
                with_compile_cache(arguments, sweep, variant.parameters),
                log_output=True,
            )
        except (PapermillExecutionError, OSError, ValueError) as error:
            # One failed variant is reported and the sweep goes on with the others.
            failures += 1
            last_line = str(error).strip().splitlines()[-1] if str(error).strip() else error
            print(f"  {variant.slug} failed: {last_line} (see {folder}/notebook.ipynb)")
        except KeyboardInterrupt:
            resume = this_command(
                *(argument for argument in arguments.argv if argument != "--rerun")
            )
            print(
                f"\ninterrupted during {variant.slug}: {len(plans) - len(pending) + done} of "
                f"{len(plans)} run(s) finished; resume with `{resume}` (finished runs are "
                "kept, the interrupted one starts again in a new folder)",
                file=sys.stderr,
            )
            return 130
    return 1 if failures else 0


def with_compile_cache(arguments, sweep, parameters):
    """A local sweep's parameters with its one compile cache, `<runs-dir>/<sweep>/compile-cache/`
    (JAX loads there the programs an earlier run of the same image compiled), unless
    --no-compile-cache is given or the variant names its own COMPILE_CACHE_DIR."""
    if arguments.no_compile_cache or parameters.get("COMPILE_CACHE_DIR") is not None:
        return parameters
    folder = Path(arguments.runs_dir).resolve() / sweep.name / "compile-cache"
    return {**parameters, "COMPILE_CACHE_DIR": str(folder)}


def write_results(runs_dir, table=None):
    """Write runs/results.md and results.csv over every run (`table`: their rows, when read
    already); returns the text to print."""
    table = table if table is not None else results.rows(runs_dir)
    if not table:
        raise ValueError(f"no runs with metrics.json under {runs_dir}")
    markdown = results.markdown(table)
    results.write_text(Path(runs_dir, "results.md"), markdown)
    results.write_text(Path(runs_dir, "results.csv"), results.csv_text(table))
    return markdown + f"\n(also {runs_dir}/results.md and results.csv)"


def command_results(arguments, sweep):
    """`results`: write and print the table over every collected and local run."""
    print(write_results(arguments.runs_dir))


def blend_of(arguments, sweep, variants):
    """The blend of the variants' newest runs with saved probabilities (kit/blend.py)."""
    entries = blend.align(blend.gather(arguments.runs_dir, [variant.slug for variant in variants]))
    return blend.search(entries, arguments.step, share=arguments.trained_on_validation_share)


def command_blend(arguments, sweep):
    """`blend`: blend the sweep's newest runs' saved probabilities, write the blend to its own
    folder, and submit it with --submit."""
    blended = blend_of(arguments, sweep, selected(sweep, arguments.only))
    print(blend.table(blended))
    folder = blend.write(blended, arguments.runs_dir, sweep.name)
    print(f"wrote {folder}/submission.csv and metrics.json")
    if arguments.submit:
        message = blend.message(blended, sweep.name)
        print(submit.submit(folder / "submission.csv", message, connect()))
        print(f"submitted: {message}")


COMMANDS = {
    "kernels": command_kernels,
    "run": command_run,
    "push": command_push,
    "status": command_status,
    "collect": command_collect,
    "submit": command_submit,
    "sweep": command_sweep,
    "results": command_results,
    "blend": command_blend,
}


def parser():
    """The command line: one subcommand per verb of COMMANDS, its help from this module's
    docstring."""
    main = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    verbs = main.add_subparsers(dest="verb", required=True, metavar="VERB")
    helps = {
        line.split()[2]: " ".join(line.split()[3:])
        for line in __doc__.splitlines()
        if line.startswith("    python build.py")
    }
    for verb in COMMANDS:
        sub = verbs.add_parser(verb, help=helps[verb], description=helps[verb])
        common_options(sub, verb)
        if verb == "kernels":
            kernels_options(sub)
        if verb in ("collect", "run"):
            waiting_options(sub, verb)
        if verb == "run":
            sub.add_argument(
                "--max-concurrent",
                type=positive,
                metavar="N",
                help="sessions at once (default: 1 for TPU kernels, 2 for GPU); "
                "Kaggle's session-cap refusal makes a variant wait anyway",
            )
            sub.add_argument(
                "--rerun",
                action="store_true",
                help="push one new version of each variant, even one that is running or collected",
            )
        if verb in ("run", "push"):
            budget_options(sub)
        if verb == "submit":
            sub.add_argument("variant", help="run name of the variant to submit")
            sub.add_argument("--version", type=int, help="kernel version (default: latest)")
        if verb == "sweep":
            sub.add_argument(
                "--rerun", action="store_true", help="run finished variants again (in a new folder)"
            )
            sub.add_argument(
                "--on-cpu",
                action="store_true",
                help="run a sweep made for a TPU or GPU here anyway",
            )
            sub.add_argument(
                "--no-compile-cache",
                action="store_true",
                help="compile every program afresh (default: the sweep's runs share "
                "RUNS_DIR/<sweep>/compile-cache/)",
            )
        if verb in ("blend", "run"):
            blend_options(sub)
        if verb == "blend":
            sub.add_argument(
                "--submit",
                action="store_true",
                help="submit the blend, with a message naming its members",
            )
    return main


def common_options(sub, verb):
    """The sweep and variants (but `results`; `submit` names one variant), and the folders."""
    if verb != "results":
        sub.add_argument("--sweep", default=DEFAULT_SWEEP, help="sweep file (TOML)")
        if verb != "submit":
            sub.add_argument(
                "--only", nargs="+", metavar="VARIANT", help="only these variants (run names)"
            )
    sub.add_argument("--runs-dir", default="runs", help="where runs and results live")
    sub.add_argument("--kernels-dir", default="kernels", help="where kernels are built")


def blend_options(sub):
    """`blend` and `run`: the blend-weight search."""
    sub.add_argument(
        "--step",
        type=float,
        default=0.1,
        help="grid step of the blend-weight search (default %(default)g; "
        "0.05 takes about 10× longer with six models)",
    )
    sub.add_argument(
        "--trained-on-validation-share",
        type=float,
        metavar="SHARE",
        help="blend runs trained on validation (no validation scores) "
        "with this fixed share; without it they are left out",
    )


def kernels_options(sub):
    """`kernels`: the owner, accelerator, visibility, datasets and root metadata."""
    sub.add_argument(
        "--owner", help="Kaggle username (default: KAGGLE_USERNAME or the kaggle config)"
    )
    sub.add_argument(
        "--accelerator",
        choices=sweeps.ACCELERATORS,
        help="override the sweep's accelerator (tpu: TpuV5E8, gpu: NvidiaTeslaT4, cpu: none)",
    )
    sub.add_argument("--public", action="store_true", help="make kernels public")
    sub.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="OWNER/SLUG",
        help="attach a dataset (e.g. weights files)",
    )
    sub.add_argument(
        "--root-metadata",
        default=kernels.METADATA_FILE,
        help="where to write the default variant's kernel-metadata.json",
    )


def waiting_options(sub, verb):
    """`collect` and `run`: polling, timeout and the submission's expected rows."""
    sub.add_argument(
        "--poll",
        type=float,
        default=10.0 if verb == "collect" else 60.0,
        help="first poll interval (s); it backs off while nothing changes",
    )
    sub.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="stop waiting for a variant after this many seconds (each "
        "variant waits up to this long; collect resumes later)"
        if verb == "collect"
        else "stop after this many seconds (what runs on Kaggle goes on; run again to resume)",
    )
    sub.add_argument(
        "--expected-rows",
        type=int,
        default=estimate.TEST_IMAGES,
        help="rows a submission must have (the competition's test split)",
    )


def budget_options(sub):
    """`run` and `push`: the accelerator budget, and --yes past it."""
    sub.add_argument(
        "--budget-hours",
        type=float,
        help="refuse when the estimated accelerator time of the variants "
        "to push exceeds this; caps the hours left of the week's quota "
        "that Kaggle reports (without Kaggle's answer: default "
        f"{estimate.DEFAULT_BUDGET_HOURS:g})",
    )
    sub.add_argument(
        "--yes",
        action="store_true",
        help="push even past the quota, --budget-hours or Kaggle's 9 h session limit",
    )


def positive(text):
    """argparse type: an integer ≥ 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not an integer ≥ 1")
    return value


def main(argv=None):
    """Run one verb; a bad input, a Kaggle refusal or a missing credential ends with one line
    and exit status 1."""
    argv = sys.argv[1:] if argv is None else list(argv)
    arguments = parser().parse_args(argv)
    arguments.argv = argv
    try:
        if arguments.verb in KAGGLE_VERBS or getattr(arguments, "submit", False):  # blend --submit
            check_client()
        sweep = sweeps.load(arguments.sweep) if hasattr(arguments, "sweep") else None
        return COMMANDS[arguments.verb](arguments, sweep) or 0
    except (ValueError, KaggleError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
