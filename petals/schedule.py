"""Learning-rate schedule: linear ramp-up, sustain, then exponential decay toward a floor.

Fine-tuning a pretrained backbone with a large rate at once wrecks its weights; the ramp lets the
new head settle first (the schedule of the 2020 flowers notebooks).
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Schedule:
    """Per-epoch learning rate; `maximum` is usually scaled by the replica count."""

    start: float
    maximum: float
    minimum: float
    ramp_up_epochs: int
    sustain_epochs: int
    decay: float

    def __post_init__(self):
        if not 0 < self.decay <= 1:
            raise ValueError(f"schedule decay must be in (0, 1], got {self.decay}")
        if min(self.start, self.maximum, self.minimum) < 0:
            raise ValueError("learning rates must be ≥ 0")
        if self.ramp_up_epochs < 0 or self.sustain_epochs < 0:
            raise ValueError("ramp-up and sustain epochs must be ≥ 0")

    def __call__(self, epoch):
        """Learning rate for a 0-based epoch."""
        if epoch < self.ramp_up_epochs:
            return self.start + (self.maximum - self.start) * epoch / self.ramp_up_epochs
        if epoch < self.ramp_up_epochs + self.sustain_epochs:
            return self.maximum
        decay_epochs = epoch - self.ramp_up_epochs - self.sustain_epochs
        return self.minimum + (self.maximum - self.minimum) * self.decay**decay_epochs

    def values(self, epochs):
        """The rates of epochs 0..epochs-1, for plotting and for metrics.json."""
        return np.array([self(epoch) for epoch in range(epochs)], dtype=np.float64)

    def callback(self):
        """A Keras callback applying the schedule at the start of every epoch."""
        import keras

        return keras.callbacks.LearningRateScheduler(lambda epoch: float(self(epoch)))
