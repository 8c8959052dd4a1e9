"""Tests for petals.hosts: each process's share of the data, the record order of gathered
predictions, and two real processes of 4 virtual devices against one process of 8."""

import json
import os
import subprocess
import sys
from typing import NamedTuple

import numpy as np
import pytest

from kit import launcher
from petals import data, hosts
from tests.conftest import TINY_SIZE, assert_names, xla_flags

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Device(NamedTuple):
    """What the mesh order reads of a JAX device."""

    process_index: int
    id: int


def test_the_mesh_is_built_from_each_process_devices_together():
    """A TPU slice numbers its chips by place, not host: sorted ids interleave the hosts. The
    mesh is built from devices sorted by (process, id), and an interleaved mesh is refused
    before anything is gathered."""
    interleaved = [Device(index % 2, index) for index in range(8)]
    with pytest.raises(RuntimeError, match=r"interleaves the 2 processes.*\[0, 1, 0, 1"):
        hosts.check_device_order(interleaved, 2)
    ordered = hosts.ordered_devices(reversed(interleaved))
    assert ordered == [Device(0, 0), Device(0, 2), Device(0, 4), Device(0, 6)] + [
        Device(1, 1),
        Device(1, 3),
        Device(1, 5),
        Device(1, 7),
    ]
    hosts.check_device_order(ordered, 2)
    with pytest.raises(RuntimeError, match="interleaves"):  # process 1's devices first
        hosts.check_device_order(ordered[4:] + ordered[:4], 2)
    with pytest.raises(RuntimeError, match="interleaves"):  # unequal shares of the batch
        hosts.check_device_order(ordered[:3] + ordered[4:], 2)


def test_the_global_batch_must_split_over_the_processes():
    assert hosts.process_batch(32, hosts.Process(1, 4)) == 8
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        hosts.process_batch(32, hosts.Process(0, 3))


def test_launch_environment_is_checked(monkeypatch):
    monkeypatch.delenv(hosts.COUNT_VARIABLE, raising=False)
    assert hosts.launched_process() is None
    monkeypatch.setenv(hosts.ADDRESS_VARIABLE, "127.0.0.1:1234")
    monkeypatch.setenv(hosts.COUNT_VARIABLE, "2")
    monkeypatch.setenv(hosts.INDEX_VARIABLE, "1")
    assert hosts.launched_process() == hosts.Process(1, 2)
    monkeypatch.setenv(hosts.INDEX_VARIABLE, "2")
    with pytest.raises(ValueError, match="must be in 0"):
        hosts.launched_process()
    monkeypatch.setenv(hosts.INDEX_VARIABLE, "one")
    with pytest.raises(ValueError, match="whole numbers"):
        hosts.launched_process()


def test_cloud_tpu_hosts_from_the_tpu_environment(monkeypatch):
    monkeypatch.setenv("TPU_PROCESS_ADDRESSES", "local")  # Kaggle's single-host TPU VM
    assert hosts.cloud_tpu_hosts() == 1
    assert hosts.cloud_tpu_worker() == 0 and hosts.prints_progress()
    monkeypatch.delenv("TPU_PROCESS_ADDRESSES")
    monkeypatch.delenv(hosts.COUNT_VARIABLE, raising=False)
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t1k-0,t1k-1,t1k-2,t1k-3")
    monkeypatch.setenv("TPU_WORKER_ID", "2")
    assert hosts.cloud_tpu_hosts() == 4
    # Worker 2's runner keeps quiet: worker 0 shows the run's progress.
    assert hosts.cloud_tpu_worker() == 2 and not hosts.prints_progress()


@pytest.mark.parametrize("count, processes, process_batch", [(10, 2, 3), (7, 3, 2), (5, 1, 4)])
def test_gathered_predictions_return_to_record_order(count, processes, process_batch):
    """Simulate the gather: process p predicts records p, p + P, ... (padded to the same
    number of steps), and each step's global batch stacks the processes' shares."""
    steps = -(-count // (processes * process_batch))
    streams = []
    for index in range(processes):
        records = list(range(index, count, processes))
        streams.append(records + [-1] * (steps * process_batch - len(records)))
    gathered = np.concatenate(
        [
            np.concatenate(
                [
                    streams[index][step * process_batch : (step + 1) * process_batch]
                    for index in range(processes)
                ]
            )
            for step in range(steps)
        ]
    )
    np.testing.assert_array_equal(
        hosts.in_record_order(gathered[:, None], count, processes, process_batch)[:, 0],
        np.arange(count),
    )


def gather(streams, process_batch):
    """What predict gathers from per-process streams: each step, every process's batch."""
    steps = len(streams[0]) // process_batch
    return np.concatenate(
        [
            stream[step * process_batch : (step + 1) * process_batch]
            for step in range(steps)
            for stream in streams
        ]
    )


@pytest.mark.slow
def test_each_process_reads_its_share_of_every_split(tiny_dataset):
    """Evaluation and test shares, put back in record order, are the whole split (exclusions
    dropped first), with as many batches in every process; training reads its block of files."""
    val = data.find_split(tiny_dataset, TINY_SIZE, "val").files
    excluded = data.record_ids(val, labeled=True)[1:2]
    labels = data.labels(val, excluded)
    processes, batch = 2, 8
    streams = [
        np.concatenate(
            [
                element[1]
                for element in data.evaluation_dataset(
                    val,
                    TINY_SIZE,
                    batch,
                    excluded,
                    count=len(labels),
                    process=hosts.Process(index, processes),
                ).as_numpy_iterator()
            ]
        )
        for index in range(processes)
    ]
    assert len(streams[0]) == len(streams[1])
    np.testing.assert_array_equal(
        hosts.in_record_order(
            gather(streams, batch // processes), len(labels), processes, batch // processes
        ),
        labels,
    )

    test = data.find_split(tiny_dataset, TINY_SIZE, "test")
    whole = np.concatenate(
        list(
            data.test_dataset(
                test.files, TINY_SIZE, batch, test.count, process=hosts.SINGLE
            ).as_numpy_iterator()
        )
    )
    streams = [
        np.concatenate(
            list(
                data.test_dataset(
                    test.files,
                    TINY_SIZE,
                    batch,
                    test.count,
                    process=hosts.Process(index, processes),
                ).as_numpy_iterator()
            )
        )
        for index in range(processes)
    ]
    np.testing.assert_array_equal(
        hosts.in_record_order(
            gather(streams, batch // processes), test.count, processes, batch // processes
        ),
        whole[: test.count],
    )

    train = data.find_split(tiny_dataset, TINY_SIZE, "train")
    training = data.training_data({"train": train, "val": None, "test": None}, TINY_SIZE)
    first = data.training_records(training, seed=0, process=hosts.Process(0, 2))
    assert sum(1 for _ in first) == data.count_records(train.files[:1])


SCRIPT = """
import json, sys
import jax
import numpy as np
import keras
from petals import accelerator, backbones, data, hosts, predict, train

val, excluded, out = sys.argv[1], sys.argv[2:3], sys.argv[3]
device = accelerator.detect()
process = hosts.current()
keras.utils.set_random_seed(0)
with device.scope():
    model = train.compile_model(backbones.build_model("tiny", 32, num_classes=10), 1e-2)
# The same global batches in both runs; each process feeds its share of every batch.
steps, global_batch = 3, 16
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (steps, global_batch, 32, 32, 3), dtype=np.uint8)
labels = rng.integers(0, 10, (steps, global_batch))
share = global_batch // process.count
rows = slice(process.index * share, (process.index + 1) * share)
model.fit(images[:, rows].reshape(-1, 32, 32, 3), labels[:, rows].reshape(-1),
          batch_size=share, epochs=1, shuffle=False, verbose=0)
files = sorted(__import__("glob").glob(val + "/*.tfrec"))
count = len(data.labels(files, excluded))
probabilities = predict.predict(
    model, data.evaluation_dataset(files, 32, global_batch, excluded, count=count), count,
    ["flip_lr"])
np.save(f"{out}-{process.index}.npy", probabilities)
refused = None
if process.count > 1:  # A mesh that interleaves the processes is refused before any gather.
    ordered = hosts.ordered_devices(jax.devices())
    interleaved = [device for pair in zip(*np.split(np.array(ordered), 2)) for device in pair]
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=interleaved, auto_shard_dataset=False))
    try:
        predict.predict(model, data.evaluation_dataset(files, 32, global_batch, count=count), count)
    except RuntimeError as error:
        refused = str(error)
print(json.dumps({"weights": hosts.weights_checksum(model), "replicas": device.replicas,
                  "describe": device.describe(), "refused": refused}))
"""


def start_processes(script, count, devices, arguments):
    """Start `script` as `count` coordinated processes (one: alone) of `devices` virtual CPU
    devices each, as the hosts of a slice start them: no launcher watches them. Process I gets
    `arguments(I)`."""
    address = f"127.0.0.1:{launcher.free_port()}"
    children = []
    for index in range(count):
        environment = {
            **os.environ,
            "KERAS_BACKEND": "jax",
            "PYTHONPATH": REPOSITORY,
            "XLA_FLAGS": xla_flags(devices),
        }
        if count > 1:
            environment.update(
                {
                    hosts.ADDRESS_VARIABLE: address,
                    hosts.COUNT_VARIABLE: str(count),
                    hosts.INDEX_VARIABLE: str(index),
                }
            )
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", script, *arguments(index)],
                env=environment,
                cwd=REPOSITORY,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return children


def run_processes(runs, timeout=900):
    """Run SCRIPT for each (processes, devices, arguments) of `runs` at once: `processes`
    coordinated processes of `devices` virtual CPU devices each. Their JSON lines, per run."""
    children = []
    for count, devices, arguments in runs:
        children += start_processes(SCRIPT, count, devices, lambda index, given=arguments: given)
    results = []
    try:
        for child in children:
            stdout, stderr = child.communicate(timeout=timeout)
            assert child.returncode == 0, stderr[-3000:]
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    grouped, start = [], 0
    for count, _, _ in runs:
        grouped.append(results[start : start + count])
        start += count
    return grouped


@pytest.mark.slow
def test_two_processes_of_four_devices_train_and_predict_as_one_of_eight(tiny_dataset, tmp_path):
    """Same global batches, same seed: the weights agree across the two processes and the
    gathered validation probabilities (one id excluded, flip TTA) equal a 1 × 8 run's."""
    val = os.path.join(tiny_dataset, f"tfrecords-jpeg-{TINY_SIZE}x{TINY_SIZE}", "val")
    excluded = data.record_ids(data.find_split(tiny_dataset, TINY_SIZE, "val").files, labeled=True)[
        3
    ]
    two, one = run_processes(
        [
            (2, 4, [val, excluded, str(tmp_path / "two")]),
            (1, 8, [val, excluded, str(tmp_path / "one")]),
        ]
    )
    assert [result["replicas"] for result in two + one] == [8, 8, 8]
    assert "on 2 hosts" in two[0]["describe"] and "hosts" not in one[0]["describe"]
    assert two[0]["weights"] == two[1]["weights"]
    assert all("interleaves the 2 processes" in result["refused"] for result in two)
    single = np.load(tmp_path / "one-0.npy")
    assert single.shape == (
        len(data.labels(data.find_split(tiny_dataset, TINY_SIZE, "val").files, [excluded])),
        10,
    )
    # Equal up to the order of floating-point sums (gloo's across processes, XLA's within
    # one), which Adam's first steps amplify; a row out of order would differ far more.
    difference = max(
        np.abs(np.load(tmp_path / f"two-{index}.npy") - single).max() for index in range(2)
    )
    assert difference < 1e-3
    assert np.abs(np.roll(single, 1, axis=0) - single).max() > 10 * difference


@pytest.mark.slow
def test_joining_after_the_devices_were_queried_fails_with_one_line():
    """JAX refuses to join other processes once its backend has started: the error says what
    to call first."""
    script = f"""
import json, os
os.environ.update({{"{hosts.ADDRESS_VARIABLE}": "127.0.0.1:1", "{hosts.COUNT_VARIABLE}": "2",
                   "{hosts.INDEX_VARIABLE}": "0"}})
import jax
from petals import accelerator
jax.devices()
try:
    accelerator.detect()
except RuntimeError as error:
    print(json.dumps(str(error)))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": REPOSITORY},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    message = json.loads(result.stdout.strip().splitlines()[-1])
    assert "\n" not in message
    assert_names(message, "accelerator.detect()", "versions.installed()", "jax.devices()")


WRITE_FAILURE = """
import errno, sys
from petals import accelerator, files, hosts, output_folder

failing, output_dir = sys.argv[1:]
accelerator.detect()
if failing == "prepare":  # the run's first write: results already there (process 0's disk)
    output_folder.prepare(output_dir, replace=False)
else:  # a write that fails half-way: the disk is full

    def write(handle):
        handle.write("{")
        raise OSError(errno.ENOSPC, "No space left on device")

    files.write_atomically(f"{output_dir}/metrics.json", write, overwrite=True)
hosts.gather_strings("the next collective")
print("went on")
"""


@pytest.mark.slow
@pytest.mark.parametrize("failing", ["prepare", "write"])
def test_a_failed_write_on_process_0_stops_every_process(tmp_path, failing):
    """As on a slice, each host's process started alone, each with its own disk: process 0's
    write fails, and every process exits non-zero, naming it, within a minute of process 0
    (before, process 1 went on into the next collective and waited for process 0 there)."""
    output_dirs = [tmp_path / f"host-{index}" / "run" for index in range(2)]
    for output_dir in output_dirs:
        output_dir.mkdir(parents=True)
    if failing == "prepare":
        (output_dirs[0] / "submission.csv").write_text("id,label\n")
    children = start_processes(
        WRITE_FAILURE, 2, 1, lambda index: [failing, str(output_dirs[index])]
    )
    try:
        _, first = children[0].communicate(timeout=600)
        try:
            _, second = children[1].communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("process 1 still runs a minute after process 0 failed: hung")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    reason = "FileExistsError" if failing == "prepare" else "No space left on device"
    assert children[0].returncode != 0 and reason in first, first[-3000:]
    assert children[1].returncode != 0, second[-3000:]
    assert "WriterError: process 0 of 2 failed to" in second and reason in second, second[-3000:]
    assert not list(output_dirs[0].glob(".partial-*"))


# The notebook as two processes, each reading its share of every training source, is executed
# once in tests/test_notebook.py (two_process_run), where its other results are inspected too.
