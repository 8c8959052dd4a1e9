"""metrics.json: a run's record (parameters, history, scores, timings) as plain JSON, written
atomically, with non-finite numbers refused."""

import json
import math

import numpy as np

from petals.files import write_atomically


def _plain(value):
    """numpy scalars/arrays to JSON types; non-finite floats refused (they hide a broken run)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item) for item in value]
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"metric value {value} is not finite; the run diverged")
    return value


def write(path, metrics, overwrite=False):
    """Write metrics.json (parameters, history, scores, timings) for sweeps to collect."""
    document = _plain(metrics)
    return write_atomically(path, lambda handle: json.dump(document, handle, indent=2), overwrite)
