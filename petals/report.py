"""What a run reports: seconds per stage, the metrics.json record of the models so far (numpy
values and all: `metrics.write` makes it JSON), its provisional results written after
each model, and its one summary line."""

import contextlib
import math
import os
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

    def move(self, seconds, source, destination):
        """Count `seconds` measured inside `source` under `destination` instead (the compile
        time hidden in the first training epoch)."""
        self.seconds[source] -= seconds
        self.seconds[destination] += seconds

    def line(self):
        """`seconds per stage: import 4.1, data 0.3, …`."""
        return "seconds per stage: " + ", ".join(
            f"{name} {seconds:.1f}" for name, seconds in self.seconds.items()
        )


def scores_line(name, scores):
    """`name: f1 0.9412  precision 0.95  recall 0.94  accuracy 0.96`."""
    return f"{name}: " + "  ".join(f"{key} {value:.4f}" for key, value in scores.items())


def _finite_or_none(values):
    """A history's values with non-finite ones as None (JSON has no NaN; a dropped model's
    history may hold them, and its record still shows when it diverged)."""
    return [value if math.isfinite(value) else None for value in values]


class RunRecord:
    """What a run has done so far, for metrics.json, updated as each model finishes.

    Fixed at the start: the parameters, the device, package versions, the training data and its
    steps. Then per model: its fit (`add_fit`), its validation scores (`add_scores`) or why it
    was dropped (`drop`). `metrics(blend)` is the record of the models so far.
    """

    def __init__(
        self,
        parameters,
        device,
        versions,
        training,
        steps,
        global_batch,
        timer,
        validation_images,
        test_images,
        image=None,
        compile_cache=None,
    ):
        self.parameters, self.device, self.versions = parameters, device, versions
        # The image on record (petals.image) and the compile cache's counter (its summary is
        # read each time metrics.json is written: hits and misses grow with every model).
        self.image, self.compile_cache = image, compile_cache
        self.training, self.steps, self.global_batch = training, steps, global_batch
        self.timer = timer
        self.validation_images, self.test_images = validation_images, test_images
        self.fits, self.scores, self.dropped = {}, {}, {}

    def add_fit(self, name, fit):
        """Record a model's `train.Fitted`; its compile time, measured inside its first
        training epoch, moves from the `train` stage to `compile`."""
        from petals import train

        self.fits[name] = fit
        self.timer.move(train.compile_seconds(fit.seconds), "train", "compile")

    def add_scores(self, name, scores):
        self.scores[name] = scores

    def drop(self, name, reason):
        """The model's predictions are not used (e.g. its loss became non-finite)."""
        self.dropped[name] = reason

    def metrics(self, blend, members):
        """The metrics.json record: what the run was asked, what it ran on, what it measured.

        `members` names the models in `blend` (an `ensemble.Blend`, whose `f1` is the
        cross-validated score and `f1_in_sample` the one tuned and scored on the same images).
        `complete` is false while models the run was asked for have not finished training.
        """
        from petals import train

        fits = self.fits
        planned = self.parameters["BACKBONES"]
        return {
            "parameters": self.parameters,
            "accelerator": self.device.summary(),
            "versions": self.versions,
            "complete": set(fits) == set(planned),
            "members": list(members),
            "dropped": self.dropped,
            "history": {
                name: {key: _finite_or_none(values) for key, values in fit.history.items()}
                for name, fit in fits.items()
            },
            "epoch_seconds": {name: fit.seconds for name, fit in fits.items()},
            "validation_seconds": {name: fit.validation_seconds for name, fit in fits.items()},
            "weights_sha256": {name: fit.weights_sha256 for name, fit in fits.items()},
            "seconds_per_epoch": {
                name: train.steady_epoch_seconds(fit.seconds) for name, fit in fits.items()
            },
            "images_per_second": {
                name: train.images_per_second(fit.seconds, self.steps, self.global_batch)
                for name, fit in fits.items()
            },
            **self.training.summary(self.device.process_count),
            "validation": self.scores,
            "blend_weights": dict(zip(members, blend.weights, strict=True)),
            "blend_f1": blend.f1,
            "blend_f1_in_sample": blend.f1_in_sample,
            "stage_seconds": self.timer.seconds,
            "validation_images": self.validation_images,
            "test_images": self.test_images,
            **({"image": self.image} if self.image is not None else {}),
            **(
                {"compile_cache": self.compile_cache.summary()}
                if self.compile_cache is not None
                else {}
            ),
        }


def write_results(output_dir, members, blend, record):
    """submission.csv (the blend of `members`, `probabilities.Member`s, with `blend`'s weights),
    then metrics.json (`record`'s), each replacing the run's earlier one atomically; returns
    the submitted labels.

    Called after every model, so a run stopped at any point after its first model leaves a
    valid submission of the models finished so far (`output_folder.prepare` made sure no earlier
    run's results are in `output_dir`).
    """
    from petals import probabilities, submission

    labels = probabilities.weighted_sum(members, blend.weights).argmax(axis=-1)
    submission.write_submission(
        os.path.join(output_dir, "submission.csv"),
        members[0].test_ids.tolist(),
        labels,
        overwrite=True,
    )
    write_record(output_dir, [member.name for member in members], blend, record)
    return labels


def write_record(output_dir, names, blend, record):
    """metrics.json: `record` of the blend of the models `names`, replacing the earlier one."""
    from petals import metrics

    metrics.write(
        os.path.join(output_dir, "metrics.json"), record.metrics(blend, names), overwrite=True
    )


def summary_line(backbones, image_size, epochs, device, blend_f1, test_images):
    """The run's last line, the one a sweep log is read for."""
    score = (
        "validation F1 (cross-validated blend) " + f"{blend_f1:.4f}"
        if blend_f1 is not None
        else "no validation (trained on val)"
    )
    return (
        f"DONE {'+'.join(backbones)} {image_size}px {epochs} epochs on {device}: {score}, "
        f"{test_images} test predictions"
    )
