"""Several JAX processes as one run: start-up, each process's share of the data, gathering.

A Cloud TPU slice bigger than one host (v5e-16, v5e-32, ...) runs one process per host;
`keras.distribution.initialize()` joins them and `DataParallel` then spans every chip. Locally,
`python -m kit.runner ... --processes N` starts N processes on one machine the same way
(gloo collectives on CPU, coordinator on 127.0.0.1) through the environment Keras reads.

What changes across processes, and is handled here so the notebook stays the same:
- start-up must run before anything queries the devices (JAX refuses it afterwards);
- each process reads its share of the data and feeds its share of every global batch;
- the mesh lists each process's devices together, in process order (`ordered_devices`), so each
  process's rows of a global batch sit together, and predictions come back interleaved by
  process and are put back in record order;
- only process 0 writes files (the others compute the same results and discard them), and every
  process learns whether process 0's write failed, so that all of them stop (`on_writer`).
"""

import hashlib
import importlib.util
import os
import sys
import urllib.error
import urllib.request
from typing import NamedTuple

import numpy as np

# What keras.distribution.initialize() reads when called without arguments (the launcher sets
# them): the coordinator's address, the number of processes and this process's number.
ADDRESS_VARIABLE = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
COUNT_VARIABLE = "KERAS_DISTRIBUTION_NUM_PROCESSES"
INDEX_VARIABLE = "KERAS_DISTRIBUTION_PROCESS_ID"
# Where a Cloud TPU VM names its slice's workers: environment variables (GKE, and Kaggle's
# single-host "local"), else the VM's metadata server (what JAX's own TPU detection reads).
TPU_HOST_VARIABLES = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")
TPU_WORKER_VARIABLE = "TPU_WORKER_ID"
TPU_METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/attributes/"


class Process(NamedTuple):
    """This process's number among `count` processes of one run."""

    index: int = 0
    count: int = 1


SINGLE = Process()


def current():
    """This process's Process: from JAX once the processes have joined, else the only one."""
    if "jax" not in sys.modules:
        return SINGLE
    import jax

    if not jax.distributed.is_initialized():
        return SINGLE
    return Process(jax.process_index(), jax.process_count())


def launched_process():
    """The Process the launcher's environment assigns, or None outside a local launch."""
    if COUNT_VARIABLE not in os.environ:
        return None
    names = (INDEX_VARIABLE, COUNT_VARIABLE)
    try:
        index, count = (int(os.environ[name]) for name in names)
    except (KeyError, ValueError):
        raise ValueError(
            f"{' and '.join(names)} must both be whole numbers (set by "
            "`python -m kit.runner ... --processes N`)"
        ) from None
    if not 0 <= index < count or not os.environ.get(ADDRESS_VARIABLE):
        raise ValueError(
            f"{INDEX_VARIABLE}={index} must be in 0..{COUNT_VARIABLE}-1 "
            f"(={count}) and {ADDRESS_VARIABLE} must name the coordinator host:port"
        )
    return Process(index, count)


def cloud_tpu_hosts(timeout=2.0):
    """How many hosts this Cloud TPU slice has (1 on a single-host TPU VM such as Kaggle's)."""
    for name in TPU_HOST_VARIABLES:
        value = os.environ.get(name)
        if value:
            return 1 if value == "local" else len(value.split(","))
    endpoints = _tpu_metadata("worker-network-endpoints", timeout)
    if endpoints is None:
        return 1
    return max(1, len([entry for entry in endpoints.split(",") if entry.strip()]))


def cloud_tpu_worker(timeout=2.0):
    """This host's number in a Cloud TPU slice of several hosts (0 anywhere else)."""
    if cloud_tpu_hosts(timeout) == 1:
        return 0
    value = os.environ.get(TPU_WORKER_VARIABLE) or _tpu_metadata("agent-worker-number", timeout)
    return int(value) if value else 0


def _tpu_metadata(attribute, timeout):
    """An attribute of this Cloud TPU VM from its metadata server; None off a TPU VM."""
    if importlib.util.find_spec("libtpu") is None:
        return None  # Not a TPU VM: nothing to ask.
    request = urllib.request.Request(
        TPU_METADATA + attribute, headers={"Metadata-Flavor": "Google"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError):  # No metadata server: a TPU outside Google Cloud.
        return None


def prints_progress():
    """Whether this host's runner shows the notebook's output: every process of a local launch
    (process I > 0 into its own log file), and worker 0 alone of a Cloud TPU slice."""
    return launched_process() is not None or cloud_tpu_worker() == 0


def start():
    """Join the run's other processes (JAX backend), before anything queries the devices.

    A local launch (the launcher's environment) joins over gloo CPU collectives; a multi-host
    Cloud TPU slice joins with keras.distribution.initialize() and no arguments, the TPU
    environment providing the rest. Anything else is one process and nothing happens.
    """
    import jax

    if jax.distributed.is_initialized():
        return current()
    launched = launched_process()
    if launched == SINGLE or (launched is None and cloud_tpu_hosts() == 1):
        return SINGLE
    import keras

    if launched is not None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        keras.distribution.initialize()
    except RuntimeError as error:
        if "before" not in str(error):
            raise
        raise RuntimeError(
            "the processes must join before anything queries the devices: call "
            "accelerator.detect() before versions.installed() or jax.devices()"
        ) from error
    return current()


def process_batch(global_batch, process):
    """The share of each global batch that `process` feeds; ValueError if it does not divide."""
    if global_batch % process.count:
        raise ValueError(
            f"a global batch of {global_batch} does not split over {process.count} "
            "processes; make BATCH_SIZE_PER_REPLICA × replicas a multiple of it"
        )
    return global_batch // process.count


def record_share_size(count, process):
    """How many of `count` records `process` keeps when each keeps every count-th one."""
    return len(range(process.index, count, process.count))


def ordered_devices(devices):
    """`devices` sorted by (process, id): the order the mesh is built in, so that each process's
    devices are adjacent and in process order (what `in_record_order` relies on). A TPU slice
    numbers its chips by their place in the slice, not by host, so sorted ids alone may
    interleave the hosts."""
    return sorted(devices, key=lambda device: (device.process_index, device.id))


def check_device_order(devices, process_count):
    """Raise RuntimeError unless the mesh's `devices` (flattened, in mesh order) hold each
    process's devices together, process 0's first, as many for every process: then each
    process's share of a global batch is one block of rows, in process order."""
    owners = [device.process_index for device in devices]
    per_process, remainder = divmod(len(owners), process_count)
    expected = [index // per_process for index in range(len(owners))] if per_process else []
    if remainder or owners != expected:
        raise RuntimeError(
            f"the device mesh interleaves the {process_count} processes (processes by mesh "
            f"position: {owners}); build it from hosts.ordered_devices(jax.devices()), as "
            "accelerator.detect() does, or predictions come back in the wrong order"
        )


def in_record_order(outputs, count, process_count, process_batch):
    """Predictions of record-interleaved shares, put back in record order.

    `outputs` [steps × global batch, ...] as gathered: each step's global batch holds process
    0's `process_batch` predictions, then process 1's, .... Process p predicted records p,
    p + P, p + 2P, ..., so record i is the (i // P)-th prediction of process i % P.
    """
    outputs = np.asarray(outputs)
    rest = outputs.shape[1:]
    # [step, process, row] → [step, row, process]: consecutive records alternate processes.
    by_step = outputs.reshape(-1, process_count, process_batch, *rest)
    return by_step.swapaxes(1, 2).reshape(-1, *rest)[:count]


class WriterError(RuntimeError):
    """Process 0 failed to write (disk full, results already there): told to every other
    process, which stops too instead of waiting for process 0 in the next collective."""


def on_writer(action, what):
    """Run `action()` on process 0 alone and tell every process whether it failed.

    Every process calls this at the same point: process 0's outcome is one flag broadcast to
    all (a collective, so also a barrier). If `action` raised, every process raises: process 0
    its own error, the others a WriterError naming `what` and process 0's error (one more
    collective, on that path only). One process: `action()`.
    """
    process = current()
    if process.count == 1:
        action()
        return
    from jax.experimental import multihost_utils

    failure = None
    if process.index == 0:
        try:
            action()
        except Exception as error:  # whatever stops process 0, the others must hear of it
            failure = error
    if not multihost_utils.broadcast_one_to_all(np.int32(failure is not None)):
        return
    reason = gather_strings("" if failure is None else f"{type(failure).__name__}: {failure}")[0]
    if failure is not None:
        raise failure
    raise WriterError(
        f"process 0 of {process.count} failed {what} ({reason}); process {process.index} "
        "stops with it (process 0's output says more)"
    )


def weights_checksum(model):
    """SHA-256 (hex) of this process's copy of the model's weights."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def gather_strings(text):
    """`text` of every process, in process order (one collective; [text] for one process)."""
    process = current()
    if process.count == 1:
        return [text]
    from jax.experimental import multihost_utils

    encoded = np.frombuffer(text.encode(), dtype=np.uint8)
    lengths = multihost_utils.process_allgather(np.array([len(encoded)]))
    padded = np.zeros(int(np.max(lengths)), np.uint8)
    padded[: len(encoded)] = encoded
    gathered = multihost_utils.process_allgather(padded)
    return [
        bytes(row[: int(length)]).decode()
        for row, length in zip(gathered, np.ravel(lengths), strict=True)
    ]
