"""The accelerator's out-of-memory error, told in one line with the parameters to lower."""

import contextlib
import sys


class OutOfMemoryError(ValueError):
    """The accelerator ran out of memory: told in one line with the parameters to lower."""


def _backend_errors():
    """The runtime error classes of the loaded backends (evaluated when an error is raised)."""
    types = []
    if "jax" in sys.modules:
        import jax

        types.append(jax.errors.JaxRuntimeError)
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        types.append(tf.errors.ResourceExhaustedError)
    return tuple(types)


@contextlib.contextmanager
def hint(stage):
    """Turn the compiler's or runtime's out-of-memory error during `stage` into one line.

    XLA reports it as a RESOURCE_EXHAUSTED runtime error (on JAX at compile or run time; on
    TensorFlow as ResourceExhaustedError), followed by pages of allocation details; what to do
    is always the same: a smaller batch or smaller images. Other errors pass through unchanged.
    """
    try:
        yield
    except _backend_errors() as error:
        exhausted = type(error).__name__ == "ResourceExhaustedError" or (
            "RESOURCE_EXHAUSTED" in str(error)
        )
        if not exhausted:
            raise
        raise OutOfMemoryError(
            f"the accelerator ran out of memory while {stage}; lower BATCH_SIZE_PER_REPLICA or "
            f"IMAGE_SIZE (or train a smaller backbone)"
        ) from error
