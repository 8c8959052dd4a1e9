"""Host input pipeline benchmark: the kit's tf.data stream against the CPU limit and 2020's recipe.

Three pipelines read the same competition-format TFRecords (made here from real photographs):

* kit: `petals.data.training_dataset` exactly as the notebook calls it (uint8 out; the random
  affine augmentation runs later, inside the model, on the accelerator);
* decode-only: parallel interleaved reads, parse, JPEG decode to uint8, batch, prefetch; no
  shuffle and no augmentation, so it is what the host's CPUs can deliver at best;
* 2020 reference: the way the 2020 Kaggle notebooks fed this competition: decode to float32,
  Chris Deotte's per-image rotation/shear/zoom/shift on the CPU inside tf.data, then
  `.repeat().shuffle(2048)` of decoded float32 images, batch, prefetch.

Each measurement runs in its own process (this script, re-invoked with --measure), so the peak
resident memory it reports belongs to one pipeline alone, and each repeat starts cold.

    .venv/bin/python benchmarks/input_pipeline.py [--sizes 512 192] [--images N] [--repeats R]
        [--batches B] [--batch-size 128] [--data-dir DIR] [--json PATH]
"""

import argparse
import datetime
import io
import json
import math
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The script runs as `python benchmarks/input_pipeline.py`, so the kit is not on sys.path yet.
if REPOSITORY_ROOT not in sys.path:
    sys.path.insert(0, REPOSITORY_ROOT)

PIPELINES = ("kit", "decode-only", "2020 reference")
PIPELINE_LABELS = {
    "kit": "(a) kit",
    "decode-only": "(b) decode-only",
    "2020 reference": "(c) 2020 reference",
}
DEFAULT_DATA_DIR = os.path.join(tempfile.gettempdir(), "petals-input-pipeline-benchmark")
NUM_CLASSES = 104
SHARDS = 16
# The notebook's default seed; the kit's pipeline is built exactly as the notebook builds it.
NOTEBOOK_SEED = 42
# The 2020 notebooks shuffled 2048 decoded images; the kit shuffles 2048 serialized records.
REFERENCE_SHUFFLE_IMAGES = 2048
# Targets: the kit within 10% of the CPU limit, 1.5x the 2020 recipe, a quarter of its memory.
TARGET_KIT_OVER_DECODE = 0.9
TARGET_KIT_OVER_REFERENCE = 1.5
TARGET_RSS_KIT_OVER_REFERENCE = 0.25
RESULT_MARKER = "BENCHMARK-RESULT "


# --- Data: competition-format shards made from real photographs --------------------------------


def default_image_count(image_size):
    """Enough images for a steady measurement, at about the same generation time per size."""
    return 2048 if image_size >= 384 else 4096


def default_timed_batches(image_size):
    """Timed batches per repeat: small images stream about 3x faster, so time more of them."""
    return 24 if image_size >= 384 else 128


def _photographs():
    """scikit-learn's two sample photographs (china.jpg, flower.jpg, 427x640) as PIL images."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(photo) for photo in load_sample_images().images]


def _random_view(photo, image_size, random):
    """A random crop of `photo`, flipped and colour-jittered, resized to S x S, as JPEG bytes.

    Crops cover 35-100% of the short side with a mild aspect change, so JPEG sizes and content
    vary like real photos of different framing rather than repeating two images.
    """
    from PIL import Image, ImageEnhance

    width, height = photo.size
    side = random.uniform(0.35, 1.0) * min(width, height)
    aspect = random.uniform(0.8, 1.25)
    crop_width = min(width, side * math.sqrt(aspect))
    crop_height = min(height, side / math.sqrt(aspect))
    left = random.uniform(0, width - crop_width)
    top = random.uniform(0, height - crop_height)
    image = photo.resize(
        (image_size, image_size),
        Image.BICUBIC,
        box=(left, top, left + crop_width, top + crop_height),
    )
    if random.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Brightness(image).enhance(random.uniform(0.7, 1.3))
    image = ImageEnhance.Color(image).enhance(random.uniform(0.6, 1.4))  # saturation
    # Hue: rotate the H channel (uint8 arithmetic wraps around the colour wheel).
    hsv = np.array(image.convert("HSV"))
    hsv[..., 0] += np.uint8(random.integers(-20, 21) % 256)
    image = Image.fromarray(hsv, "HSV").convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(random.integers(90, 96)))
    return buffer.getvalue()


def _silence_stderr():
    """Pool initializer: TensorFlow's start-up lines ignore TF_CPP_MIN_LOG_LEVEL in this version.

    A worker's exception still reaches the parent, which raises it from `pool.map`.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _write_shard(job):
    """Write one shard (run in a worker process): `job` is (path, image_size, labels, ids, seed)."""
    import tensorflow as tf

    from kit.demo_data import serialize

    path, image_size, labels, ids, seed = job
    random = np.random.default_rng(seed)
    photos = _photographs()
    with tf.io.TFRecordWriter(path) as writer:
        for label, record_id in zip(labels, ids, strict=True):
            jpeg = _random_view(photos[int(random.integers(len(photos)))], image_size, random)
            writer.write(serialize(jpeg, record_id, label))
    return os.path.getsize(path)


def ensure_dataset(data_dir, image_size, image_count, seed=0):
    """Training shards at `data_dir/tfrecords-jpeg-SxS/train/`, made once and then reused.

    The folder is built beside its destination and renamed into place, so an interrupted run
    never leaves a half-written dataset that a later run would take as complete.
    """
    from kit.demo_data import unique_ids

    size_name = f"tfrecords-jpeg-{image_size}x{image_size}"
    train_folder = os.path.join(data_dir, f"{image_count}-images", size_name, "train")
    if os.path.isdir(train_folder):
        return sorted(os.path.join(train_folder, name) for name in os.listdir(train_folder))
    random = np.random.default_rng(seed)
    labels = random.integers(0, NUM_CLASSES, size=image_count)
    ids = unique_ids(image_count, random)
    os.makedirs(os.path.dirname(os.path.dirname(train_folder)), exist_ok=True)
    staging = tempfile.mkdtemp(
        prefix=".staging-", dir=os.path.dirname(os.path.dirname(train_folder))
    )
    jobs = []
    for index, rows in enumerate(np.array_split(np.arange(image_count), SHARDS)):
        name = f"{index:02d}-{image_size}x{image_size}-{len(rows)}.tfrec"
        jobs.append(
            (
                os.path.join(staging, name),
                image_size,
                labels[rows].tolist(),
                [ids[row] for row in rows],
                seed * 1000 + index,
            )
        )
    started = time.perf_counter()
    try:
        # JPEG encoding dominates; one worker per core. Spawn, not fork: TensorFlow is not
        # fork-safe once imported.
        with multiprocessing.get_context("spawn").Pool(
            os.cpu_count(), initializer=_silence_stderr
        ) as pool:
            total_bytes = sum(pool.map(_write_shard, jobs))
        os.makedirs(os.path.dirname(train_folder), exist_ok=True)
        os.rename(staging, train_folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(
        f"generated {image_count} images at {image_size}x{image_size} in {SHARDS} shards "
        f"({total_bytes / image_count / 1024:.0f} KB per JPEG record) "
        f"in {time.perf_counter() - started:.1f} s -> {train_folder}",
        flush=True,
    )
    return sorted(os.path.join(train_folder, name) for name in os.listdir(train_folder))


# --- The pipelines ----------------------------------------------------------------------------


def kit_pipeline(files, image_size, batch_size):
    """(a) The kit's training stream, called as the notebook calls it."""
    from petals import data

    return data.training_dataset(files, image_size, batch_size, (), seed=NOTEBOOK_SEED)


def decode_only_pipeline(files, image_size, batch_size):
    """(b) The host's ceiling: the kit's reads and decode with nothing else (no shuffle)."""
    import tensorflow as tf

    from petals import data

    dataset = tf.data.Dataset.from_tensor_slices(list(files)).interleave(
        tf.data.TFRecordDataset,
        cycle_length=tf.data.AUTOTUNE,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    )

    def parse_and_decode(serialized):
        jpeg, label, _ = data.parse_labeled(serialized)
        return data.decode_image(jpeg, image_size), label

    dataset = dataset.repeat().map(
        parse_and_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False
    )
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def reference_affine_transform(image, image_size):
    """Chris Deotte's 2020 per-image random rotation/shear/zoom/shift, on the CPU in tf.data.

    Written as the 2020 notebook wrote it: one 3x3 matrix per image from tf ops, the source
    pixel of every one of the S*S destination pixels by a matrix product, truncation to integers,
    clipping to the image, then `tf.gather_nd`.
    """
    import tensorflow as tf

    odd_size = image_size % 2  # The notebook's fix for odd sizes such as 331.
    rotation = 15.0 * tf.random.normal([1]) * math.pi / 180.0
    shear = 5.0 * tf.random.normal([1]) * math.pi / 180.0
    zoom_height = 1.0 + tf.random.normal([1]) / 10.0
    zoom_width = 1.0 + tf.random.normal([1]) / 10.0
    shift_height = 16.0 * tf.random.normal([1])
    shift_width = 16.0 * tf.random.normal([1])
    one = tf.constant([1.0])
    zero = tf.constant([0.0])

    def matrix(*entries):
        return tf.reshape(tf.concat(entries, axis=0), [3, 3])

    rotation_matrix = matrix(
        tf.cos(rotation),
        tf.sin(rotation),
        zero,
        -tf.sin(rotation),
        tf.cos(rotation),
        zero,
        zero,
        zero,
        one,
    )
    shear_matrix = matrix(one, tf.sin(shear), zero, zero, tf.cos(shear), zero, zero, zero, one)
    zoom_matrix = matrix(
        one / zoom_height, zero, zero, zero, one / zoom_width, zero, zero, zero, one
    )
    shift_matrix = matrix(one, zero, shift_height, zero, one, shift_width, zero, zero, one)
    transform = tf.matmul(
        tf.matmul(rotation_matrix, shear_matrix), tf.matmul(zoom_matrix, shift_matrix)
    )

    # Destination pixels as [up, right, 1] columns, rebuilt for every image as in 2020.
    half = image_size // 2
    up = tf.repeat(tf.range(half, -half, -1), image_size)
    right = tf.tile(tf.range(-half, half), [image_size])
    destination = tf.stack([up, right, tf.ones([image_size * image_size], tf.int32)])
    source = tf.cast(tf.matmul(transform, tf.cast(destination, tf.float32)), tf.int32)
    source = tf.clip_by_value(source, -half + odd_size + 1, half)
    rows_and_columns = tf.stack([half - source[0], half - 1 + source[1]])
    pixels = tf.gather_nd(image, tf.transpose(rows_and_columns))
    return tf.reshape(pixels, [image_size, image_size, 3])


def reference_pipeline(files, image_size, batch_size):
    """(c) The 2020 recipe: float32 decode, CPU affine + flip, shuffle of decoded images."""
    import tensorflow as tf

    from petals import data

    options = tf.data.Options()
    options.deterministic = False  # 2020: `ignore_order.experimental_deterministic = False`.
    dataset = tf.data.TFRecordDataset(list(files), num_parallel_reads=tf.data.AUTOTUNE)
    dataset = dataset.with_options(options)

    def read_and_decode(serialized):
        jpeg, label, _ = data.parse_labeled(serialized)
        image = tf.cast(tf.io.decode_jpeg(jpeg, channels=3), tf.float32) / 255.0
        return tf.reshape(image, [image_size, image_size, 3]), label

    def augment(image, label):
        image = tf.image.random_flip_left_right(image)
        return reference_affine_transform(image, image_size), label

    dataset = dataset.map(read_and_decode, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    # repeat() before shuffle(): the buffer fills to 2048 images even from a smaller dataset,
    # as it did on the competition's 12,753 training images.
    dataset = dataset.repeat().shuffle(REFERENCE_SHUFFLE_IMAGES)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


PIPELINE_BUILDERS = {
    "kit": kit_pipeline,
    "decode-only": decode_only_pipeline,
    "2020 reference": reference_pipeline,
}


# --- One measurement (child process) -----------------------------------------------------------


def peak_rss_megabytes():
    """This process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(pipeline, files, image_size, batch_size, batches, warmup_batches):
    """Pull `warmup_batches` then time `batches` batches; return the figures as a dict."""
    import tensorflow as tf

    rss_after_import = peak_rss_megabytes()
    dataset = PIPELINE_BUILDERS[pipeline](files, image_size, batch_size)
    iterator = iter(dataset)
    started = time.perf_counter()
    # Touching one value of each batch proves it was produced on the host (the eager iterator
    # hands back finished tensors) without adding a reduction over the whole batch to the cost.
    checksum = 0.0
    images, labels = next(iterator)
    checksum += float(images[0, 0, 0, 0]) + int(labels[0])
    first_batch_seconds = time.perf_counter() - started
    for _ in range(warmup_batches - 1):
        images, labels = next(iterator)
        checksum += float(images[0, 0, 0, 0]) + int(labels[0])
    started = time.perf_counter()
    for _ in range(batches):
        images, labels = next(iterator)
        checksum += float(images[-1, -1, -1, -1]) + int(labels[-1])
    elapsed = time.perf_counter() - started
    if tuple(images.shape) != (batch_size, image_size, image_size, 3):
        raise RuntimeError(f"{pipeline} produced batches of shape {tuple(images.shape)}")
    return {
        "pipeline": pipeline,
        "image_size": image_size,
        "batch_size": batch_size,
        "batches": batches,
        "seconds": elapsed,
        "images_per_second": batches * batch_size / elapsed,
        "first_batch_seconds": first_batch_seconds,
        "peak_rss_mb": peak_rss_megabytes(),
        "rss_after_import_mb": rss_after_import,
        "dtype": images.dtype.name,
        "checksum": checksum,
        "tensorflow": tf.__version__,
    }


def run_child(arguments):
    """Entry point of a --measure process: print one result line for the parent to read."""
    files = sorted(
        os.path.join(arguments.files_dir, name) for name in os.listdir(arguments.files_dir)
    )
    result = measure(
        arguments.measure,
        files,
        arguments.image_size,
        arguments.batch_size,
        arguments.batches,
        arguments.warmup,
    )
    print(RESULT_MARKER + json.dumps(result), flush=True)


# --- Orchestration (parent process) ------------------------------------------------------------


def available_memory_megabytes():
    """MemAvailable from /proc/meminfo, or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reference_buffer_megabytes(image_size):
    """What the 2020 recipe's shuffle buffer of decoded float32 images holds."""
    return REFERENCE_SHUFFLE_IMAGES * image_size * image_size * 3 * 4 / 2**20


def measure_in_child(pipeline, files_dir, image_size, batches, arguments):
    """Run one measurement in a fresh process and return its result dict."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--measure",
        pipeline,
        "--files-dir",
        files_dir,
        "--image-size",
        str(image_size),
        "--batch-size",
        str(arguments.batch_size),
        "--batches",
        str(batches),
        "--warmup",
        str(arguments.warmup),
    ]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # The parent never imports TensorFlow, so a child cannot start with an inflated peak RSS.
    completed = subprocess.run(
        command, capture_output=True, text=True, env=environment, cwd=REPOSITORY_ROOT
    )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    # A negative return code is a signal: -9 is most often the kernel's out-of-memory killer.
    raise RuntimeError(
        f"{pipeline} at {image_size} px failed (return code "
        f"{completed.returncode}):\n{completed.stderr[-3000:]}"
    )


def summarize(results):
    """Median and range of images/s and the largest peak RSS over the repeats of one case."""
    rates = [result["images_per_second"] for result in results]
    return {
        "images_per_second_median": statistics.median(rates),
        "images_per_second_min": min(rates),
        "images_per_second_max": max(rates),
        "peak_rss_mb": max(result["peak_rss_mb"] for result in results),
        "batches": results[0]["batches"],
        "rss_after_import_mb": statistics.median(r["rss_after_import_mb"] for r in results),
        "first_batch_seconds_median": statistics.median(r["first_batch_seconds"] for r in results),
        "repeats": results,
    }


def ratios_and_targets(summaries, image_size):
    """The three targeted ratios at one size: (name, value, direction, target, met)."""
    kit, decode, reference = (summaries[(pipeline, image_size)] for pipeline in PIPELINES)
    rate = "images_per_second_median"
    ratios = [
        ("a/b images/s", kit[rate] / decode[rate], ">=", TARGET_KIT_OVER_DECODE),
        ("a/c images/s", kit[rate] / reference[rate], ">=", TARGET_KIT_OVER_REFERENCE),
        (
            "RSS a/c",
            kit["peak_rss_mb"] / reference["peak_rss_mb"],
            "<=",
            TARGET_RSS_KIT_OVER_REFERENCE,
        ),
    ]
    return [
        (name, value, direction, target, value >= target if direction == ">=" else value <= target)
        for name, value, direction, target in ratios
    ]


def pipeline_memory_ratio(summaries, image_size):
    """RSS a/c counting only what each pipeline adds above the TensorFlow import (not a target).

    Importing TensorFlow alone takes several hundred MB, which dominates at small image sizes.
    """
    kit, reference = summaries[("kit", image_size)], summaries[("2020 reference", image_size)]
    return (kit["peak_rss_mb"] - kit["rss_after_import_mb"]) / (
        reference["peak_rss_mb"] - reference["rss_after_import_mb"]
    )


def machine_info():
    """Where and when the figures were taken (TensorFlow's version comes from the children)."""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "memory_available_mb": available_memory_megabytes(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def print_report(info, arguments, summaries, sizes, total_seconds):
    print()
    print(
        f"machine: {info['cpu_count']} CPUs ({info['usable_cpus']} usable), "
        f"{info['processor']}, {info['platform']}"
    )
    print(
        f"python {info['python']}, tensorflow {info['tensorflow']}, {info['date']}, "
        f"load average at start {', '.join(f'{load:.2f}' for load in info['load_average'])}"
    )
    timed = ", ".join(f"{summaries[('kit', size)]['batches']} at {size} px" for size in sizes)
    print(
        f"global batch {arguments.batch_size}, {arguments.warmup} warm-up batches then timed "
        f"batches ({timed}); median of {arguments.repeats} repeats, each in a fresh process"
    )
    print()
    header = (
        f"{'pipeline':<20} {'size':>5} {'images/s':>9} {'(min-max)':>15} "
        f"{'peak RSS MB':>12} {'after import':>13} {'1st batch s':>12}"
    )
    print(header)
    print("-" * len(header))
    for image_size in sizes:
        for pipeline in PIPELINES:
            summary = summaries[(pipeline, image_size)]
            spread = (
                f"({summary['images_per_second_min']:.0f}-{summary['images_per_second_max']:.0f})"
            )
            print(
                f"{PIPELINE_LABELS[pipeline]:<20} {image_size:>5} "
                f"{summary['images_per_second_median']:>9.0f} {spread:>15} "
                f"{summary['peak_rss_mb']:>12.0f} {summary['rss_after_import_mb']:>13.0f} "
                f"{summary['first_batch_seconds_median']:>12.1f}"
            )
    print()
    for image_size in sizes:
        for name, value, direction, target, met in ratios_and_targets(summaries, image_size):
            print(
                f"{image_size:>4} px  {name:<13} {value:6.2f}   target {direction} {target:.2f}"
                f"   {'met' if met else 'MISSED'}"
            )
        above_import = pipeline_memory_ratio(summaries, image_size)
        print(
            f"{image_size:>4} px  {'(RSS a/c':<13} {above_import:6.2f}   counting only memory "
            "above the TensorFlow import: context, not a target)"
        )
    print()
    print(f"total run time {total_seconds / 60:.1f} min")


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 192])
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="training images per size (default 2048 at 512 px, 4096 below 384)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per case")
    parser.add_argument(
        "--batches",
        type=int,
        default=None,
        help="timed batches per repeat (default 24 at 384 px and above, 128 below)",
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first (>= 1)")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch")
    parser.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, help="where the generated TFRecords are cached"
    )
    parser.add_argument("--json", help="also save the figures to this JSON file")
    # Internal: one measurement in this process (the parent re-invokes the script with these).
    parser.add_argument("--measure", choices=PIPELINES, help=argparse.SUPPRESS)
    parser.add_argument("--files-dir", help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.warmup < 1 or (arguments.batches or 1) < 1 or arguments.repeats < 1:
        parser.error("--warmup, --batches and --repeats must be at least 1")
    return arguments


def main(argv=None):
    arguments = parse_arguments(argv)
    if arguments.measure:
        run_child(arguments)
        return
    started = time.perf_counter()
    info = machine_info()
    print(
        f"{info['cpu_count']} CPUs, {info['memory_available_mb'] / 1024:.1f} GB available, "
        f"load average {info['load_average'][0]:.2f}",
        flush=True,
    )
    files_dirs = {}
    for image_size in arguments.sizes:
        image_count = arguments.images or default_image_count(image_size)
        files = ensure_dataset(arguments.data_dir, image_size, image_count)
        files_dirs[image_size] = os.path.dirname(files[0])
        print(
            f"{image_size} px: {image_count} images in {len(files)} shards at "
            f"{files_dirs[image_size]}",
            flush=True,
        )

    results = {}
    for image_size in arguments.sizes:
        buffer_megabytes = reference_buffer_megabytes(image_size)
        available = available_memory_megabytes()
        # The 2020 buffer plus TensorFlow needs headroom; a child killed by the kernel would
        # only report a signal, so say why beforehand.
        if available is not None and buffer_megabytes * 1.3 + 1024 > available:
            print(
                f"warning: the 2020 reference at {image_size} px buffers "
                f"{buffer_megabytes / 1024:.1f} GB of float32 images but only "
                f"{available / 1024:.1f} GB is available; it may be killed",
                flush=True,
            )
        batches = arguments.batches or default_timed_batches(image_size)
        # Repeats outside, pipelines inside: a change in background load hits all three alike.
        for repeat in range(arguments.repeats):
            for pipeline in PIPELINES:
                result = measure_in_child(
                    pipeline, files_dirs[image_size], image_size, batches, arguments
                )
                results.setdefault((pipeline, image_size), []).append(result)
                print(
                    f"  {image_size} px repeat {repeat + 1}/{arguments.repeats} "
                    f"{pipeline:<15} {result['images_per_second']:7.0f} images/s  "
                    f"peak RSS {result['peak_rss_mb']:6.0f} MB  "
                    f"first batch {result['first_batch_seconds']:5.1f} s",
                    flush=True,
                )

    summaries = {key: summarize(value) for key, value in results.items()}
    info["tensorflow"] = next(iter(results.values()))[0]["tensorflow"]
    total_seconds = time.perf_counter() - started
    print_report(info, arguments, summaries, arguments.sizes, total_seconds)
    if arguments.json:
        document = {
            "machine": info,
            "settings": {
                key: getattr(arguments, key)
                for key in (
                    "sizes",
                    "images",
                    "repeats",
                    "batches",
                    "warmup",
                    "batch_size",
                    "data_dir",
                )
            },
            "results": [
                dict(pipeline=pipeline, image_size=image_size, **summary)
                for (pipeline, image_size), summary in summaries.items()
            ],
            "ratios": [
                dict(
                    image_size=image_size,
                    name=name,
                    value=value,
                    direction=direction,
                    target=target,
                    met=met,
                )
                for image_size in arguments.sizes
                for name, value, direction, target, met in ratios_and_targets(summaries, image_size)
            ],
            "rss_kit_over_reference_above_import": {
                str(image_size): pipeline_memory_ratio(summaries, image_size)
                for image_size in arguments.sizes
            },
            "total_seconds": total_seconds,
        }
        with open(arguments.json, "w") as output:
            json.dump(document, output, indent=2)
        print(f"figures saved to {arguments.json}")


if __name__ == "__main__":
    main()
