"""What a run reports: seconds per stage, the metrics.json record (numpy values and all:
`submission.write_metrics` makes it JSON), and its one summary line."""

import contextlib
import time

# The stages a run times, in the order they first happen; metrics.json lists them all.
STAGES = ("import", "data", "build", "compile", "train", "evaluate", "predict")


class StageTimer:
    """Wall seconds per stage, summed over every time the stage runs (one per model)."""

    def __init__(self, stages=STAGES):
        self.seconds = dict.fromkeys(stages, 0.0)

    @contextlib.contextmanager
    def stage(self, name):
        """Time the block under `name` (added to earlier blocks of the same stage)."""
        if name not in self.seconds:
            raise ValueError(f"unknown stage {name!r}; stages are {', '.join(self.seconds)}")
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def add(self, name, seconds):
        """Move `seconds` measured inside another stage into `name` (e.g. compile out of train)."""
        self.seconds[name] += seconds

    def line(self):
        """`seconds per stage: import 4.1, data 0.3, …`."""
        return "seconds per stage: " + ", ".join(f"{name} {seconds:.1f}"
                                                 for name, seconds in self.seconds.items())


def scores_line(name, scores):
    """`name: f1 0.9412  precision 0.95  recall 0.94  accuracy 0.96`."""
    return f"{name}: " + "  ".join(f"{key} {value:.4f}" for key, value in scores.items())


def metrics(*, parameters, device, versions, fits, steps, global_batch, training, model_scores,
            blend, timer, validation_labels, test_ids):
    """The run's metrics.json record: what it was asked, what it ran on, what it measured.

    `fits` maps each model to its `train.Fitted` (history, synchronized training and validation
    seconds per epoch); `blend` is an `ensemble.Blend` whose `f1` is the cross-validated score
    and `f1_in_sample` the one tuned and scored on the same images.
    """
    from petals import train

    return {
        "parameters": parameters,
        "accelerator": device.summary(),
        "versions": versions,
        "history": {name: fit.history for name, fit in fits.items()},
        "epoch_seconds": {name: fit.seconds for name, fit in fits.items()},
        "validation_seconds": {name: fit.validation_seconds for name, fit in fits.items()},
        "weights_sha256": {name: fit.weights_sha256 for name, fit in fits.items()},
        "seconds_per_epoch": {name: train.steady_epoch_seconds(fit.seconds)
                              for name, fit in fits.items()},
        "images_per_second": {name: train.images_per_second(fit.seconds, steps, global_batch)
                              for name, fit in fits.items()},
        **training.summary(),
        "validation": model_scores,
        "blend_weights": dict(zip(fits, blend.weights, strict=True)),
        "blend_f1": blend.f1,
        "blend_f1_in_sample": blend.f1_in_sample,
        "stage_seconds": timer.seconds,
        "validation_images": None if validation_labels is None else len(validation_labels),
        "test_images": len(test_ids),
    }


def summary_line(backbones, image_size, epochs, device, blend_f1, test_images):
    """The run's last line, the one a sweep log is read for."""
    score = ("validation F1 (cross-validated blend) " + f"{blend_f1:.4f}"
             if blend_f1 is not None else "no validation (trained on val)")
    return (f"DONE {'+'.join(backbones)} {image_size}px {epochs} epochs on {device}: {score}, "
            f"{test_images} test predictions")
