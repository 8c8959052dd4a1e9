"""Compile, fit and release models: loss options, true epoch times, one model at a time."""

import math
import time
import weakref
from typing import NamedTuple

import keras
import numpy as np

from petals import hosts, mixing, out_of_memory, parameters


def compile_model(model, learning_rate=1e-3, label_smoothing=0.0, mixup=0.0, cutmix=0.0, seed=None):
    """Adam, cross-entropy and accuracy; returns the model to train (call in the accelerator scope).

    All three options 0: sparse labels and sparse categorical cross-entropy (the fast path).
    `label_smoothing` alone: the same model, its sparse labels one-hot inside the loss
    (`mixing.SparseSmoothedCrossentropy`). `mixup` or `cutmix` (per-image probabilities, at most
    1 together): a `mixing.MixingModel` around `model`, trained on mixed images with soft
    targets, predicting like `model`; use the returned model from then on.
    """
    parameters.check_value("LABEL_SMOOTHING", label_smoothing)
    if mixup or cutmix:
        model = mixing.MixingModel(model, mixup, cutmix, seed=seed)
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    elif label_smoothing:
        loss = mixing.SparseSmoothedCrossentropy(label_smoothing)
    else:
        loss = "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    return model


def steps_per_epoch(records, global_batch, cap=None):
    """Full batches per epoch from the record count, at least one, at most `cap`."""
    if records < global_batch:
        raise ValueError(
            f"only {records} training records for a global batch of "
            f"{global_batch}; lower BATCH_SIZE_PER_REPLICA"
        )
    steps = records // global_batch
    return min(steps, cap) if cap else steps


def wait_for_device(model):
    """Block until the accelerator has finished every step dispatched so far.

    JAX dispatches steps asynchronously: the Python loop can end an epoch long before the chips
    do. Reading a value back to the host waits for the computation that produces it: the
    optimizer's step counter (written by the last training step) and the metric totals (written
    by the last training or validation step).
    """
    for variable in [model.optimizer.iterations, *model.metrics_variables]:
        keras.ops.convert_to_numpy(variable)


class EpochTimer(keras.callbacks.Callback):
    """Training and validation seconds per epoch, each read once the device has finished.

    The clock is read at the start of an epoch, when validation starts and when the epoch ends,
    each time after `wait_for_device`, so compute dispatched in one window is not counted in the
    next. The first epoch's training time includes compiling the step.
    """

    def __init__(self):
        super().__init__()
        self.seconds = []
        self.validation_seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        wait_for_device(self.model)
        self.started = time.perf_counter()
        self.validation_started = None

    def on_test_begin(self, logs=None):
        wait_for_device(self.model)
        self.validation_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        wait_for_device(self.model)
        ended = time.perf_counter()
        training_ended = self.validation_started or ended
        self.seconds.append(training_ended - self.started)
        self.validation_seconds.append(ended - training_ended)


class StopWhenNonFinite(keras.callbacks.Callback):
    """Stop training at the end of the first epoch whose loss or metrics are not finite.

    A diverged model predicts nothing useful and every later epoch would be wasted accelerator
    time. Checked once per epoch, on the values Keras already logs (and `EpochTimer` has waited
    for): a check after every step would wait for the device at every step. `reason` says what
    happened, or is None.
    """

    def __init__(self):
        super().__init__()
        self.reason = None

    def on_epoch_end(self, epoch, logs=None):
        values = {key: float(value) for key, value in (logs or {}).items()}  # scalars
        broken = {key: value for key, value in values.items() if not math.isfinite(value)}
        if broken:
            self.reason = (
                f"{', '.join(f'{key} {value}' for key, value in broken.items())} "
                f"in epoch {epoch + 1}"
            )
            self.model.stop_training = True


class Fitted(NamedTuple):
    """What `fit` returns."""

    history: dict  # per-epoch values of each metric, as floats
    seconds: list  # training seconds per epoch, validation excluded
    validation_seconds: list  # validation seconds per epoch (0.0 without validation)
    weights_sha256: list  # each process's copy of the trained weights (petals.hosts)
    stopped: str | None = None  # why training stopped early: a non-finite loss (see fit)


def fit(
    model, training, epochs, steps, schedule, validation=None, validation_steps=None, verbose=2
):
    """Train `steps` batches per epoch, validating on `validation_steps` full batches.

    `training` is an endless dataset (it is shuffled when built, so Keras is told not to);
    validation needs its step count because a TFRecord dataset's length is unknown to Keras,
    which would otherwise run it dry and warn that the input ran out of data. verbose=2 prints
    one line per epoch. An out-of-memory error becomes one line (`out_of_memory.OutOfMemoryError`).
    A model whose loss (or a metric) becomes non-finite stops after that epoch, and `stopped`
    says why: its predictions must not be used.
    The trained weights' checksum in each process is gathered: every process holds a copy of
    the same model, and a RuntimeError says so if they drifted apart.
    """
    if validation is not None and validation_steps is None:
        raise ValueError("fit: give validation_steps (full validation batches) with validation")
    timer, guard = EpochTimer(), StopWhenNonFinite()
    with out_of_memory.hint(f"training {model.name}"):
        history = model.fit(
            training,
            epochs=epochs,
            steps_per_epoch=steps,
            shuffle=False,
            validation_data=validation,
            validation_steps=validation_steps,
            callbacks=[schedule.callback(), timer, guard],
            verbose=verbose,
        )
    history = {key: [float(value) for value in values] for key, values in history.history.items()}
    checksums = hosts.gather_strings(hosts.weights_checksum(model))
    if len(set(checksums)) > 1:
        raise RuntimeError(
            f"{model.name}'s weights differ across the {len(checksums)} processes "
            "after training; every process must build the model with the same SEED"
        )
    return Fitted(history, timer.seconds, timer.validation_seconds, checksums, guard.reason)


def members(names, build):
    """Yield (name, model) for each name, building each model only after releasing the last.

    `build(name)` returns a compiled model (build it inside the accelerator's scope). What is
    yielded is a weak proxy: the model lives while the loop body runs, and when the loop moves
    on it is deleted, Keras's global state cleared and the garbage collected before the next one
    is built, so an ensemble needs the memory of its largest member only. Predict everything a
    member is needed for inside the loop body; a member kept past its turn raises ReferenceError.
    """
    for name in names:
        model = build(name)
        yield name, weakref.proxy(model)
        del model
        clear_keras_state()


def clear_keras_state():
    """keras.backend.clear_session() and garbage collection, keeping the run's settings.

    clear_session also forgets the global distribution (data parallelism on every chip) and the
    mixed-precision policy; both are put back, so the next model trains like the first.
    """
    distribution = keras.distribution.distribution()
    policy = keras.mixed_precision.dtype_policy()
    keras.backend.clear_session(free_memory=True)
    if distribution is not None:
        keras.distribution.set_distribution(distribution)
    keras.mixed_precision.set_dtype_policy(policy)


def compile_seconds(seconds):
    """Compilation time, estimated as the first epoch's excess over the later ones' median."""
    if len(seconds) < 2:
        return 0.0
    return max(0.0, seconds[0] - float(np.median(seconds[1:])))


def steady_epoch_seconds(seconds):
    """Mean seconds of the epochs after the first (which pays for compilation)."""
    steady = seconds[1:] or seconds
    return sum(steady) / len(steady) if steady else math.nan


def images_per_second(seconds, steps, global_batch):
    """Training throughput of the steady epochs."""
    return steps * global_batch / steady_epoch_seconds(seconds)
