"""Compile and fit a model, timing epochs and counting images per second."""

import math
import time

import keras
import numpy as np


def compile_model(model, learning_rate=1e-3):
    """Adam, sparse categorical cross-entropy, accuracy (call inside the accelerator scope)."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def steps_per_epoch(records, global_batch, cap=None):
    """Full batches per epoch from the record count, at least one, at most `cap`."""
    if records < global_batch:
        raise ValueError(f"only {records} training records for a global batch of "
                         f"{global_batch}; lower BATCH_SIZE_PER_REPLICA")
    steps = records // global_batch
    return min(steps, cap) if cap else steps


class EpochTimer(keras.callbacks.Callback):
    """Training seconds per epoch, validation excluded, so metrics.json reports training speed
    (the first epoch includes compilation)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        self.validating = 0.0

    def on_test_begin(self, logs=None):
        self.validation_started = time.perf_counter()

    def on_test_end(self, logs=None):
        self.validating += time.perf_counter() - self.validation_started

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started - self.validating)


def fit(model, training, epochs, steps, schedule, validation=None, verbose=2):
    """Train; returns (history dict, training seconds per epoch)."""
    timer = EpochTimer()
    history = model.fit(training, epochs=epochs, steps_per_epoch=steps,
                        validation_data=validation, callbacks=[schedule.callback(), timer],
                        verbose=verbose)
    return {key: [float(value) for value in values] for key, values in history.history.items()}, \
        timer.seconds


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
