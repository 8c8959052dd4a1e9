"""Train-step throughput, Keras 3 on JAX: the kit's full model vs the bare backbone + head.

    .venv/bin/python benchmarks/train_step.py                 # CPU: a small smoke check
    python benchmarks/train_step.py --backbones densenet201 efficientnet_b7 --size 512 --batch 64

The full model is what the notebook trains: uint8 input → RandomAffine augmentation (inside the
compiled step) → backbone → pooling → float32 softmax, in bfloat16 mixed precision on an
accelerator. The bare model drops the augmentation. Both train on the same synthetic batch,
already on the device, so only the step itself is timed. Each model runs in a fresh process
twice, sharing a new persistent compilation cache: the first pays the full XLA compile, the
second shows what the cache saves. TensorFlow is never imported (some accelerator hosts have
only JAX); the script checks.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        .venv/bin/python benchmarks/train_step.py --feed --backbones tiny --size 32 --batch 16
    python benchmarks/train_step.py --check          # what benchmarks/accelerator_check.sh runs

--feed measures what a Kaggle run does: `model.fit` fed from the host under the kit's
distribution (`petals.accelerator.detect`: DataParallel over every device), against the same
model's device-resident step. Host batches are uint8 from a numpy generator (no TensorFlow) and,
where TensorFlow is installed, the kit's own `petals.data.training_dataset` on records written
here; each feed is timed plain and through `device_prefetch` (benchmarks/feed.py, not wired into
the kit). It also times the augmentation's gather on uint8 (cast after) against float32 (cast
before). --check adds the bare model and leaves out tf.data; every model runs in its own
process, under a time budget.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
# What the accelerator check measures by default on an accelerator: the competition sweep's 2026
# backbones. EfficientNetB0, DenseNet201 and EfficientNetB7 were measured before
# (docs/performance.md); `--backbones` runs them again. Their compiles and these do not all fit
# in the check's 9 minutes.
CHECK_BACKBONES = ("convnext_base", "hgnetv2_b6_ssld_stage2_ft_in1k")


def keras_hub_without_tensorflow(backbone):
    """Let the kit build a KerasHub backbone on a host with keras-hub but no TensorFlow.

    `import keras_hub` (0.29.1) imports every model's public API, and a few of those modules
    (the Gemma 3 and Qwen 3.5 preprocessors) import TensorFlow at their top, so it fails where
    only JAX is installed (this workplace's GPU image). Here the package is bound without running
    its API `__init__` files, and `keras_hub.models` holds the two real classes the kit uses
    (`petals.backbones._keras_hub_backbone`), imported from their own modules: the network
    built and timed is keras-hub's own. Returns a line saying so, or None where nothing was
    needed (not a KerasHub backbone, TensorFlow or no keras-hub installed, already imported).
    """
    from petals import parameters

    if (
        backbone not in parameters.KERAS_HUB_PRESETS
        or "keras_hub" in sys.modules
        or importlib.util.find_spec("tensorflow") is not None
        or importlib.util.find_spec("keras_hub") is None
    ):
        return None
    package = importlib.util.module_from_spec(importlib.util.find_spec("keras_hub"))
    sys.modules["keras_hub"] = package  # its __init__ (the API imports) is not run
    from keras_hub.src.models.backbone import Backbone
    from keras_hub.src.models.hgnetv2.hgnetv2_backbone import HGNetV2Backbone
    from keras_hub.src.version import __version__

    models = types.ModuleType("keras_hub.models")
    models.Backbone, models.HGNetV2Backbone = Backbone, HGNetV2Backbone
    package.models, package.__version__ = models, __version__
    sys.modules["keras_hub.models"] = models
    return (
        f"keras-hub {__version__} without TensorFlow: HGNetV2Backbone imported from its own "
        "module (keras_hub's API modules import TensorFlow)"
    )


def peak_device_gib():
    """The largest peak of device memory in use on this process's devices, GiB (None where the
    platform does not count it, e.g. a CPU)."""
    import jax

    peaks = [
        (device.memory_stats() or {}).get("peak_bytes_in_use") for device in jax.local_devices()
    ]
    peaks = [peak for peak in peaks if peak]
    return max(peaks) / 2**30 if peaks else None


def measure(backbone, size, batch, steps, augment, policy, cache_dir):
    """Runs in the child process: compile time and steady images/s of one model."""
    os.environ["KERAS_BACKEND"] = "jax"
    sys.path.insert(0, str(REPOSITORY))
    import jax
    import keras
    import numpy as np

    from petals import accelerator, backbones
    from petals import augment as augmentation

    accelerator.enable_compilation_cache(cache_dir)
    keras.mixed_precision.set_global_policy(policy)
    keras_hub_without_tensorflow(backbone)
    layer = augmentation.RandomAffine(seed=0) if augment else None
    model = backbones.build_model(backbone, size, weights=None, augmentation=layer)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    random = np.random.default_rng(0)
    images = jax.device_put(random.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
    labels = jax.device_put(random.integers(0, 104, (batch,), dtype=np.int32))
    started = time.perf_counter()
    model.train_on_batch(images, labels)  # returns a Python float: waits for the device
    compile_seconds = time.perf_counter() - started
    timings = []
    for _ in range(steps):
        started = time.perf_counter()
        model.train_on_batch(images, labels)
        timings.append(time.perf_counter() - started)
    return {
        "compile_seconds": compile_seconds,
        "images_per_second": batch / statistics.median(timings),
        "device": str(jax.devices()[0].platform),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }


def child(arguments):
    """Run one measurement in a fresh process and return its JSON result."""
    command = [
        sys.executable,
        __file__,
        "--child",
        arguments["backbone"],
        "--size",
        str(arguments["size"]),
        "--batch",
        str(arguments["batch"]),
        "--steps",
        str(arguments["steps"]),
        "--policy",
        arguments["policy"],
        "--cache-dir",
        arguments["cache_dir"],
    ]
    if arguments["augment"]:
        command.append("--augment")
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if result.returncode != 0:
        sys.exit(f"measurement failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- Feed and accelerator check: jobs in child processes, results as JSON lines ---------------

RESULT_PREFIX = "RESULT "
COMPILED_LINE = "COMPILED"
# Distinct host batches cycled by the numpy feed: made once, so only the feed itself is timed.
HOST_BATCHES = 4
FEEDS = (
    "fit, device-resident batches",
    "fit, numpy feed",
    "fit, numpy feed + device_prefetch",
    "fit, tf.data",
    "fit, tf.data + device_prefetch",
)


def report(**values):
    """Hand partial results to the parent at once, so a job stopped by the budget keeps them."""
    print(RESULT_PREFIX + json.dumps(values), flush=True)


def set_up(settings):
    """The kit's accelerator set-up (DataParallel over all devices), then the benchmark's policy."""
    sys.path.insert(0, str(REPOSITORY))
    from petals import accelerator

    accelerator.choose_backend("jax")
    import keras

    found = accelerator.detect()
    keras.mixed_precision.set_global_policy(settings["policy"])
    accelerator.enable_compilation_cache(settings["cache_dir"])
    if settings["batch"] % found.replicas:
        sys.exit(
            f"--batch {settings['batch']} does not split evenly across {found.replicas} "
            "devices; give a multiple of the device count"
        )
    return found


def host_batches(settings, count=HOST_BATCHES):
    """Random uint8 images and int32 labels, as (images, labels, None) like `fit` sees them.

    The explicit None sample weight gives fit's batches the structure train_on_batch builds, so
    fit reuses the resident step's compiled program instead of compiling another.
    """
    import numpy as np

    random = np.random.default_rng(0)
    shape = (settings["batch"], settings["size"], settings["size"], 3)
    return [
        (
            random.integers(0, 256, shape, dtype=np.uint8),
            random.integers(0, 104, (settings["batch"],), dtype=np.int32),
            None,
        )
        for _ in range(count)
    ]


def endless(batches):
    """Cycle through `batches` forever, as a generator (what `fit` accepts)."""
    while True:
        yield from batches


def epoch_clock():
    """A callback timing each epoch from a finished device state to a finished device state.

    JAX dispatches steps asynchronously, so the epoch's Python loop can end long before the
    device does: waiting for the variables at both ends makes the seconds the device's.
    """
    import jax
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def wait(self):
            jax.block_until_ready([variable.value for variable in self.model.variables])

        def on_epoch_begin(self, epoch, logs=None):
            self.wait()
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.wait()
            self.seconds.append(time.perf_counter() - self.started)

    return EpochClock()


def fit_epoch_seconds(model, batches, settings):
    """Seconds of each timed epoch of `model.fit` on `batches`, after one warm-up epoch."""
    clock = epoch_clock()
    model.fit(
        batches,
        steps_per_epoch=settings["steps"],
        epochs=1 + settings["epochs"],
        shuffle=False,
        verbose=0,
        callbacks=[clock],
    )
    return clock.seconds[1:]


def compare_feeds(model, feeds, settings):
    """Images/s of fit on each feed, the feeds taking turns for `rounds` rounds.

    Taking turns spreads the machine's ups and downs over all of them; each figure is the
    median timed epoch of all rounds.
    """
    seconds = {name: [] for name in feeds}
    for _ in range(settings["rounds"]):
        for name, make in feeds.items():
            seconds[name] += fit_epoch_seconds(model, make(), settings)
    for name, values in seconds.items():
        report(
            feed=name,
            images_per_second=settings["batch"] * settings["steps"] / statistics.median(values),
        )


def kit_dataset_batches(settings, folder):
    """The kit's own training pipeline on the records in `folder`, as numpy batches."""
    from petals import data

    splits = {name: data.find_split(folder, settings["size"], name) for name in data.SPLITS}
    training = data.training_data(splits, settings["size"])
    dataset = data.training_dataset(training, settings["size"], settings["batch"], seed=0)
    # What Keras's tf.data adapter does (each tensor to numpy), with fit's batch structure.
    for images, labels in dataset.as_numpy_iterator():
        yield images, labels, None


def run_model_job(job, settings):
    """Compile seconds and resident images/s of one model; for the full model also the feeds."""
    found = set_up(settings)
    from benchmarks.feed import device_prefetch
    from petals import augment, backbones, train

    note = keras_hub_without_tensorflow(job["backbone"])
    if note:
        report(note=note)
    with found.scope():
        layer = augment.RandomAffine(seed=0) if job["model"] == "full" else None
        model = backbones.build_model(
            job["backbone"], settings["size"], weights=None, augmentation=layer
        )
        train.compile_model(model)
    batches = host_batches(settings)
    resident = next(device_prefetch(batches[:1], found.distribution))
    started = time.perf_counter()
    model.train_on_batch(*resident[:2])  # returns Python floats: waits for the device
    report(
        compile_seconds=time.perf_counter() - started,
        devices=found.replicas,
        device_kind=found.devices[0],
    )
    if settings["barrier"]:
        # Wait until every job of this wave has compiled: timings must not share the machine.
        print(COMPILED_LINE, flush=True)
        sys.stdin.readline()
    if job.get("cached"):  # only the compile with a warm cache is measured
        return
    timings = []
    for _ in range(settings["steps"]):
        started = time.perf_counter()
        model.train_on_batch(*resident[:2])
        timings.append(time.perf_counter() - started)
    report(resident=settings["batch"] / statistics.median(timings), peak_gib=peak_device_gib())
    if job["gather"]:
        measure_gather(found, settings)
    if job["model"] == "bare":
        return
    feeds = {
        FEEDS[0]: lambda: endless([resident]),
        FEEDS[1]: lambda: endless(batches),
        FEEDS[2]: lambda: device_prefetch(endless(batches), found.distribution),
    }
    compare_feeds(model, feeds, settings)
    if not settings["tfdata"]:
        return
    from kit import demo_data

    with tempfile.TemporaryDirectory(prefix="petals-feed-") as folder:
        demo_data.write_demo_dataset(folder, image_size=settings["size"], shards=4)
        compare_feeds(
            model,
            {
                FEEDS[3]: lambda: kit_dataset_batches(settings, folder),
                FEEDS[4]: lambda: device_prefetch(
                    kit_dataset_batches(settings, folder), found.distribution
                ),
            },
            settings,
        )


def measure_gather(found, settings):
    """The augmentation's gather on uint8 then a cast, against a cast to float32 then the gather.

    Same images, same matrices, each compiled once; calls alternate so both see the same
    machine, and each waits for its result.
    """
    import jax
    import keras
    import numpy as np

    from benchmarks.feed import device_prefetch
    from petals.augment import affine_matrices, apply_affine

    images = next(device_prefetch(host_batches(settings, 1), found.distribution))[0]
    random = np.random.default_rng(1)
    batch = settings["batch"]
    matrices = affine_matrices(
        random.normal(0, 15, batch),
        random.normal(0, 5, batch),
        1 + random.normal(0, 0.1, batch),
        1 + random.normal(0, 0.1, batch),
        random.normal(0, 16, batch),
        random.normal(0, 16, batch),
    )
    compute_dtype = keras.mixed_precision.global_policy().compute_dtype
    variants = {
        "cast to float32, then gather": jax.jit(
            lambda pixels, affine: apply_affine(keras.ops.cast(pixels, "float32"), affine)
        ),
        f"gather uint8, then cast to {compute_dtype}": jax.jit(
            lambda pixels, affine: keras.ops.cast(apply_affine(pixels, affine), compute_dtype)
        ),
    }
    outputs = {
        name: np.asarray(keras.ops.cast(function(images, matrices), "float32"))
        for name, function in variants.items()
    }  # compiles each once
    first, second = outputs.values()
    if not np.array_equal(first, second):
        sys.exit("the two gather orders gave different pixels")
    seconds = {name: [] for name in variants}
    for _ in range(max(10, settings["steps"])):
        for name, function in variants.items():
            started = time.perf_counter()
            jax.block_until_ready(function(images, matrices))
            seconds[name].append(time.perf_counter() - started)
    report(gather={name: statistics.median(values) * 1000 for name, values in seconds.items()})


def start_job(job, settings, barrier):
    """Start one job in a fresh process (its own device memory); stderr goes to a file."""
    stderr = tempfile.TemporaryFile(mode="w+")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if barrier:
        # Several processes share the accelerator: each takes memory as it needs it.
        environment["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    process = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--job",
            json.dumps(job),
            "--settings",
            json.dumps({**settings, "barrier": barrier}),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=environment,
    )
    return {"job": job, "process": process, "stderr": stderr, "result": {}}


def read_until(running, stop_line=None):
    """Collect a job's RESULT lines until `stop_line` or the end of its output."""
    for line in running["process"].stdout:
        if line.strip() == stop_line:
            return
        if line.startswith(RESULT_PREFIX):
            values = json.loads(line[len(RESULT_PREFIX) :])
            if "feed" in values:
                running["result"].setdefault("feeds", {})[values["feed"]] = values[
                    "images_per_second"
                ]
            else:
                running["result"].update(values)


def finish(running, out_of_time):
    """Wait for a job's end; note why it stopped early."""
    read_until(running)
    returncode = running["process"].wait()
    if returncode != 0:
        running["stderr"].seek(0)
        lines = [line for line in running["stderr"].read().splitlines() if line.strip()]
        running["result"]["stopped"] = (
            "time budget spent"
            if out_of_time.is_set()
            else "failed: " + (lines[-1] if lines else f"exit status {returncode}")
        )
    running["stderr"].close()
    return running["result"]


def run_jobs(waves, settings, budget_seconds):
    """Run waves of jobs, a process each, within the budget; returns their results in order.

    In a wave the processes compile side by side, then take turns for the timed part, so no
    measurement shares the machine with a compile. At the end of the budget every running
    process is stopped and the table shows what was measured.
    """
    deadline = time.monotonic() + budget_seconds
    results = []
    for wave in waves:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            results += [{"stopped": "time budget spent"} for _ in wave]
            continue
        barrier = len(wave) > 1
        running = [start_job(job, settings, barrier) for job in wave]
        out_of_time = threading.Event()

        def stop_all(processes=tuple(entry["process"] for entry in running), flag=out_of_time):
            flag.set()
            for process in processes:
                process.kill()

        watchdog = threading.Timer(remaining, stop_all)
        watchdog.start()
        try:
            if barrier:
                for entry in running:
                    read_until(entry, COMPILED_LINE)
            for entry in running:
                if barrier and entry["process"].poll() is None:
                    try:
                        entry["process"].stdin.write("go\n")
                        entry["process"].stdin.flush()
                    except BrokenPipeError:  # The job already ended (failed); finish() says why.
                        pass
                results.append(finish(entry, out_of_time))
        finally:
            watchdog.cancel()
    return results


def cell(value, digits=1):
    return "—" if value is None else f"{value:.{digits}f}"


def print_feed_table(jobs, results):
    """One table per full model: each feed's images/s and its ratio to the resident step."""
    for job, result in zip(jobs, results, strict=True):
        if job["model"] != "full":
            continue
        resident = result.get("resident")
        print(
            f"\n{job['backbone']}: compile {cell(result.get('compile_seconds'))} s on "
            f"{result.get('devices', '?')} device(s)"
            + (f" — {result['stopped']}" if "stopped" in result else "")
        )
        print(f"  {'feed':40} {'images/s':>9} {'/ resident':>10}")
        print(f"  {'resident step (train_on_batch)':40} {cell(resident):>9} {'1.000':>10}")
        for feed, speed in result.get("feeds", {}).items():
            ratio = speed / resident if resident else None
            print(f"  {feed:40} {speed:9.1f} {cell(ratio, 3):>10}")
        feeds = result.get("feeds", {})
        if resident and FEEDS[1] in feeds:
            ratio = feeds[FEEDS[1]] / resident
            print(
                f"{job['backbone']}: fed / resident = {ratio:.3f} "
                f"(numpy feed, target ≥ 0.9: {'met' if ratio >= 0.9 else 'missed'})"
            )
        if FEEDS[0] in feeds and FEEDS[1] in feeds:
            # Same loop, only the feed differs: below 1 the host feed is in the critical path.
            print(
                f"{job['backbone']}: fed / fit on resident batches = "
                f"{feeds[FEEDS[1]] / feeds[FEEDS[0]]:.3f}"
            )
        for plain, ahead in ((FEEDS[1], FEEDS[2]), (FEEDS[3], FEEDS[4])):
            if plain in feeds and ahead in feeds:
                print(
                    f"{job['backbone']}: device_prefetch / plain = "
                    f"{feeds[ahead] / feeds[plain]:.3f} ({plain.removeprefix('fit, ')})"
                )


def print_gather(results):
    for result in results:
        if "gather" in result:
            (before, before_ms), (after, after_ms) = result["gather"].items()
            print(
                f"\naugmentation gather, one batch: {before} {before_ms:.2f} ms; "
                f"{after} {after_ms:.2f} ms; uint8-first / float-first time = "
                f"{after_ms / before_ms:.3f}"
            )


def print_check_table(backbones, jobs, results):
    """The accelerator check's one table: a row per backbone."""
    found = {
        (job["backbone"], "cached" if job.get("cached") else job["model"]): result
        for job, result in zip(jobs, results, strict=True)
    }
    print(
        "\n| backbone | bare images/s | full images/s | full / bare | fed images/s "
        "| fed / resident | fed + prefetch / resident | compile s (full) "
        "| compile s (bare) | compile s (full, warm cache) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    notes = []
    for backbone in backbones:
        bare, full = found[(backbone, "bare")], found[(backbone, "full")]
        cached = found.get((backbone, "cached"), {})
        feeds = full.get("feeds", {})
        resident = full.get("resident")
        fed, ahead = feeds.get(FEEDS[1]), feeds.get(FEEDS[2])

        def ratio(numerator, denominator):
            return numerator / denominator if numerator and denominator else None

        print(
            f"| {backbone} | {cell(bare.get('resident'))} | {cell(resident)} "
            f"| {cell(ratio(resident, bare.get('resident')), 2)} | {cell(fed)} "
            f"| {cell(ratio(fed, resident), 2)} | {cell(ratio(ahead, resident), 2)} "
            f"| {cell(full.get('compile_seconds'))} | {cell(bare.get('compile_seconds'))} "
            f"| {cell(cached.get('compile_seconds'))} |"
        )
        for model, result in (("full", full), ("bare", bare), ("full, warm cache", cached)):
            if "stopped" in result:
                notes.append(f"{backbone} {model}: {result['stopped']}")
        peaks = [
            f"{model} {result['peak_gib']:.1f} GiB"
            for model, result in (("full", full), ("bare", bare))
            if result.get("peak_gib")
        ]
        if peaks:
            notes.append(f"{backbone}: peak device memory of one step, {', '.join(peaks)}")
    for note in dict.fromkeys(result["note"] for result in results if "note" in result):
        notes.append(note)
    for note in notes:
        print(f"  ({note})")


def default_platform():
    """JAX's default platform, asked in a child: on a TPU host the process that first opens the
    TPU keeps it, and the jobs need it."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import jax; print(jax.devices()[0].platform, "
            "jax.devices()[0].device_kind, jax.device_count(), jax.__version__,"
            " sep='|')",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if probe.returncode != 0:
        sys.exit("JAX does not start here: " + (probe.stderr.strip().splitlines() or ["?"])[-1])
    return probe.stdout.strip().splitlines()[-1].split("|")


def versions():
    """`Keras 3.15.1, keras-hub 0.29.1` as installed (read from their metadata: importing Keras
    would import TensorFlow where that is installed)."""
    from importlib import metadata

    found = []
    for name in ("Keras", "keras-hub"):
        try:
            found.append(f"{name} {metadata.version(name.lower())}")
        except metadata.PackageNotFoundError:
            found.append(f"no {name}")
    return ", ".join(found)


def feed_or_check(arguments):
    """--feed and --check: plan the jobs, run them, print the tables."""
    platform, kind, count, version = default_platform()
    on_cpu = platform == "cpu"
    check = arguments.check
    if check:
        backbones = ["tiny"] if on_cpu else list(CHECK_BACKBONES)
    else:
        backbones = ["efficientnet_b0"] if on_cpu else ["densenet201", "efficientnet_b7"]
    settings = {
        "backbones": arguments.backbones or backbones,
        "size": arguments.size or (32 if check and on_cpu else 64 if on_cpu else 512),
        "batch": arguments.batch or (16 if on_cpu else 64),
        "steps": arguments.steps or 10,
        "epochs": arguments.epochs,
        "rounds": arguments.rounds,
        "policy": arguments.policy or ("float32" if on_cpu else "mixed_bfloat16"),
    }
    parallel = 1 if platform == "tpu" else arguments.parallel
    print(
        f"{'accelerator check' if check else 'feed'} on {count} × {kind} ({platform}), "
        f"JAX {version}, {versions()}, {time.strftime('%Y-%m-%d')}, "
        f"budget {arguments.budget:.0f} s, "
        f"{parallel} job(s) at a time: " + json.dumps(settings),
        flush=True,
    )
    run_feed_or_check(arguments, settings, parallel)


def run_feed_or_check(arguments, settings, parallel):
    """Plan the jobs, run them, print the tables."""
    check = arguments.check
    # The full models first, then the bare ones: what the budget leaves out is the least
    # needed. The first job also times the augmentation's gather (quick).
    jobs = [
        {"model": model, "backbone": backbone, "gather": False}
        for model in (("full", "bare") if check else ("full",))
        for backbone in settings["backbones"]
    ]
    jobs[0]["gather"] = True
    waves = [jobs[first : first + parallel] for first in range(0, len(jobs), parallel)]
    if check:
        # Last, as the budget allows, in waves of their own (after every first compile): each
        # full model again in a fresh process, loading what the first one compiled into the
        # shared compile cache: what a rerun on this image pays.
        cached = [
            {"model": "full", "backbone": backbone, "gather": False, "cached": True}
            for backbone in settings["backbones"]
        ]
        waves += [cached[first : first + parallel] for first in range(0, len(cached), parallel)]
    with tempfile.TemporaryDirectory(prefix="jax-cache-") as fresh_cache:
        settings = {
            **settings,
            "tfdata": not check and importlib.util.find_spec("tensorflow") is not None,
            "cache_dir": arguments.cache_dir or (fresh_cache if check else None),
        }
        results = run_jobs(waves, settings, arguments.budget)
    jobs = [job for wave in waves for job in wave]
    if check:
        print_check_table(settings["backbones"], jobs, results)
    else:
        print_feed_table(jobs, results)
    print_gather(results)
    if arguments.json:
        Path(arguments.json).write_text(
            json.dumps({"settings": settings, "jobs": jobs, "results": results}, indent=2)
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=None,
        help="default: densenet201 efficientnet_b7 on an accelerator, efficientnet_b0 on a CPU; "
        "--check: convnext_base hgnetv2_b6_ssld_stage2_ft_in1k, CPU tiny",
    )
    parser.add_argument("--size", type=int, default=None, help="default: 512, CPU 64")
    parser.add_argument("--batch", type=int, default=None, help="default: 64, CPU 8")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20, CPU 5)")
    parser.add_argument(
        "--policy",
        default=None,
        help="Keras dtype policy (default mixed_bfloat16, CPU float32: bfloat16 "
        "is emulated on CPUs)",
    )
    parser.add_argument("--json", help="also save the figures here")
    parser.add_argument(
        "--feed",
        action="store_true",
        help="fit fed from the host against the resident step (see above)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="the accelerator check: bare and full models, feeds, compile "
        "seconds; default backbones convnext_base hgnetv2_b6_ssld_stage2_ft_in1k "
        "(CPU: tiny)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="--feed/--check: timed fit epochs of --steps steps, after one "
        "warm-up epoch (default 3)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="--feed/--check: the fed runs take turns this many times (default 2)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=540,
        help="--feed/--check: seconds for all jobs; what runs past it is "
        "stopped and shown as not measured (default 540)",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="--feed/--check: jobs that compile side by side before taking "
        "turns for the timing (one GPU: several; a TPU: 1, it admits "
        "one process)",
    )
    parser.add_argument(
        "--cache-dir",
        help="--feed/--check: persistent XLA compilation cache, so a rerun "
        "skips the compiles (default: none)",
    )
    parser.add_argument("--child", metavar="BACKBONE", help=argparse.SUPPRESS)
    parser.add_argument("--augment", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        print(
            json.dumps(
                measure(
                    arguments.child,
                    arguments.size,
                    arguments.batch,
                    arguments.steps,
                    arguments.augment,
                    arguments.policy,
                    arguments.cache_dir,
                )
            )
        )
        return
    if arguments.job:
        job, settings = json.loads(arguments.job), json.loads(arguments.settings)
        run_model_job(job, settings)
        return
    if arguments.feed or arguments.check:
        feed_or_check(arguments)
        return

    os.environ["KERAS_BACKEND"] = "jax"
    import jax

    on_cpu = jax.devices()[0].platform == "cpu"
    settings = {
        "backbones": arguments.backbones
        or (["efficientnet_b0"] if on_cpu else ["densenet201", "efficientnet_b7"]),
        "size": arguments.size or (64 if on_cpu else 512),
        "batch": arguments.batch or (8 if on_cpu else 64),
        "steps": arguments.steps or (5 if on_cpu else 20),
        "policy": arguments.policy or ("float32" if on_cpu else "mixed_bfloat16"),
    }
    print(
        f"train step on {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), "
        f"JAX {jax.__version__}, {time.strftime('%Y-%m-%d')}: " + json.dumps(settings)
    )
    rows = []
    for backbone in settings["backbones"]:
        for augment in (False, True):
            with tempfile.TemporaryDirectory(prefix="jax-cache-") as cache_dir:
                common = {
                    "backbone": backbone,
                    "size": settings["size"],
                    "batch": settings["batch"],
                    "steps": settings["steps"],
                    "policy": settings["policy"],
                    "augment": augment,
                    "cache_dir": cache_dir,
                }
                cold = child(common)
                warm = child(common)
            rows.append(
                {
                    "backbone": backbone,
                    "model": "full" if augment else "bare",
                    "images_per_second": max(cold["images_per_second"], warm["images_per_second"]),
                    "compile_cold": cold["compile_seconds"],
                    "compile_warm": warm["compile_seconds"],
                    "tensorflow_imported": cold["tensorflow_imported"],
                }
            )
    print(
        f"\n{'backbone':18} {'model':5} {'images/s':>9} {'compile s':>10} "
        f"{'cached compile s':>17} {'TF imported':>12}"
    )
    for row in rows:
        print(
            f"{row['backbone']:18} {row['model']:5} {row['images_per_second']:9.1f} "
            f"{row['compile_cold']:10.1f} {row['compile_warm']:17.1f} "
            f"{str(row['tensorflow_imported']):>12}"
        )
    print()
    for backbone in settings["backbones"]:
        bare, full = (
            next(row for row in rows if row["backbone"] == backbone and row["model"] == model)
            for model in ("bare", "full")
        )
        ratio = full["images_per_second"] / bare["images_per_second"]
        print(
            f"{backbone}: full/bare images/s = {ratio:.3f} "
            f"(target ≥ 0.9: {'met' if ratio >= 0.9 else 'missed'}); compile "
            f"{bare['compile_cold']:.1f} s → {bare['compile_warm']:.1f} s with the cache"
        )
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
