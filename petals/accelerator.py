"""Find the accelerator and set up data-parallel training on it, for the active Keras backend.

Kaggle's TPU v5e-8 image ships `jax[tpu]` and `tensorflow-cpu` but no `tensorflow-tpu`, so there
the kit trains with Keras 3 on JAX (`keras.distribution.DataParallel`); TensorFlow still reads the
TFRecords. With the TensorFlow backend: TPUStrategy where a TF TPU really exists (legacy images),
MirroredStrategy across several GPUs, the default strategy otherwise.
"""

import contextlib
import os
from dataclasses import dataclass, field

from petals.parameters import BACKENDS


def choose_backend(requested=None):
    """Set KERAS_BACKEND before Keras is imported; returns the backend that will be used.

    `requested` wins; else an existing KERAS_BACKEND; else JAX when it is installed (the only
    backend that reaches today's Kaggle TPU), else TensorFlow.
    """
    if requested is not None and requested not in BACKENDS:
        raise ValueError(
            f"KERAS_BACKEND must be one of {', '.join(BACKENDS)} or None, got {requested!r}"
        )
    backend = requested or os.environ.get("KERAS_BACKEND")
    if backend is None:
        try:
            import jax  # noqa: F401

            backend = "jax"
        except ImportError:  # No JAX here: TensorFlow is the backend that is installed.
            backend = "tensorflow"
    os.environ["KERAS_BACKEND"] = backend
    # TensorFlow's C++ start-up chatter buries the notebook's own output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return backend


def enable_compilation_cache(directory):
    """Keep compiled XLA programs on disk (JAX), so a rerun skips most of the compile.

    Big backbones take minutes to compile on a TPU; with the cache a second session (or a
    second kernel version reading the same attached folder) loads them instead. No-op for None.
    """
    if directory is None:
        return
    import jax

    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # Cache every program, not just the slow ones: the small ones add up over a sweep.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@dataclass
class Accelerator:
    """What was found: device kind, replica count, and the scope that models are built in."""

    kind: str  # "tpu", "gpu" or "cpu"
    backend: str
    replicas: int
    devices: list = field(default_factory=list)
    strategy: object = None  # tf.distribute.Strategy (TensorFlow backend)
    distribution: object = None  # keras.distribution.Distribution (JAX backend, several devices)
    # This process's number and how many processes (one per host) share the replicas.
    process_index: int = 0
    process_count: int = 1

    def scope(self):
        """Build and compile models in here, so their variables live on (every) replica."""
        if self.strategy is not None:
            return self.strategy.scope()
        if self.distribution is not None:
            return self.distribution.scope()
        return contextlib.nullcontext()

    @property
    def mixed_precision_policy(self):
        """bfloat16 compute on TPU (its native type, same range as float32); float32 elsewhere.

        The classifier head stays float32 either way (see petals.backbones), so the softmax and
        the loss do not lose precision.
        """
        return "mixed_bfloat16" if self.kind == "tpu" else "float32"

    def summary(self):
        """What metrics.json records of the accelerator."""
        return {
            "kind": self.kind,
            "backend": self.backend,
            "replicas": self.replicas,
            "processes": self.process_count,
        }

    def describe(self):
        hosts = f" on {self.process_count} hosts" if self.process_count > 1 else ""
        return (
            f"{self.kind.upper()} × {self.replicas} replica(s){hosts}, "
            f"Keras backend {self.backend}"
            + (f", {type(self.strategy).__name__}" if self.strategy is not None else "")
            + (f", {type(self.distribution).__name__}" if self.distribution else "")
        )


def detect(require=None):
    """Detect the accelerator for the active backend, set the global distribution and policy.

    Call it before anything else queries the devices: with JAX it first joins the run's other
    processes where there are any (petals.hosts.start: a Cloud TPU slice of several hosts, or
    `kit.runner --processes N`), and then sees the devices of every process.
    `require` ("tpu", "gpu") makes a missing accelerator an error instead of a silent CPU run.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        accelerator = _detect_jax()
    elif backend == "tensorflow":
        accelerator = _detect_tensorflow()
    else:
        raise ValueError(
            f"Keras backend {backend!r} is not supported; use one of " + ", ".join(BACKENDS)
        )
    if require is not None and accelerator.kind != require:
        raise RuntimeError(
            f"this run requires a {require.upper()} but found "
            f"{accelerator.describe()}; change the accelerator setting"
        )
    keras.mixed_precision.set_global_policy(accelerator.mixed_precision_policy)
    return accelerator


def _detect_jax():
    import jax
    import keras

    from petals import hosts

    process = hosts.start()  # Before the first device query: JAX refuses it afterwards.
    # Every process's devices (the default platform: TPU, GPU, CPU), each process's together.
    devices = hosts.ordered_devices(jax.devices())
    kind = devices[0].platform
    distribution = None
    if len(devices) > 1:
        # One model copy per chip; each global batch is split across them. Across processes
        # each one feeds its own share of the batch (petals.data reads it), so Keras must not
        # shard the dataset again.
        distribution = keras.distribution.DataParallel(
            devices=devices, auto_shard_dataset=process.count == 1
        )
        keras.distribution.set_distribution(distribution)
    return Accelerator(
        kind if kind in ("tpu", "gpu") else "cpu",
        "jax",
        len(devices),
        [str(device) for device in devices],
        distribution=distribution,
        process_index=process.index,
        process_count=process.count,
    )


def _detect_tensorflow():
    import tensorflow as tf

    tpu = _tensorflow_tpu(tf)
    if tpu is not None:
        strategy = tf.distribute.TPUStrategy(tpu)
        return Accelerator(
            "tpu",
            "tensorflow",
            strategy.num_replicas_in_sync,
            [device.name for device in tf.config.list_logical_devices("TPU")],
            strategy=strategy,
        )
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        return Accelerator(
            "gpu",
            "tensorflow",
            strategy.num_replicas_in_sync,
            [gpu.name for gpu in gpus],
            strategy=strategy,
        )
    strategy = tf.distribute.get_strategy()
    return Accelerator(
        "gpu" if gpus else "cpu",
        "tensorflow",
        1,
        [gpus[0].name] if gpus else ["CPU"],
        strategy=strategy,
    )


def _tensorflow_tpu(tf):
    """A connected TPUClusterResolver, or None when this machine has no TensorFlow TPU.

    TPU VMs answer to tpu="local"; legacy TPU nodes to the default (TPU_NAME). Only the errors
    that mean "no TPU here" are caught: NotFoundError from a local probe, ValueError when no TPU
    name is known.
    """
    for arguments in ({"tpu": "local"}, {}):
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(**arguments)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return resolver
        except (ValueError, tf.errors.NotFoundError):
            continue
    return None


def device_kind():
    """What the active Keras backend computes on, e.g. "TPU v5 lite", "NVIDIA H200", "cpu"."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].device_kind
    import tensorflow as tf

    if tf.config.list_logical_devices("TPU"):
        return "TPU"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return "cpu"
