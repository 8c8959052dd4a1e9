"""How long each variant will hold an accelerator, before anything is pushed.

A variant's estimate is, per backbone: setup + compile + EPOCHS × seconds per epoch + prediction.
Figures come from earlier collected runs (`metrics.json` anywhere under the runs folder) of the
same accelerator, backbone and image size; else from the table below: measured for the few
backbones this project has timed, derived from their speed and each backbone's FLOPs for the
others (an upper bound of the time, labelled "derived"). A backbone with neither has no estimate,
and the check refuses it rather than count it as zero. The sweep's total, plus what the sweep's
running sessions still need, is checked against the hours left of the week's quota, as Kaggle
reports it (`Quota`), capped by `--budget-hours`, and each variant against Kaggle's per-session
limit.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from kit import results
from petals import TEST_IMAGES, TRAIN_IMAGES, VALIDATION_IMAGES

# Kaggle stops a batch session after a time limit: 9 h for TPU sessions (CPU and GPU sessions
# have been given 12 h, so 9 h is the safe side for every accelerator).
SESSION_LIMIT_HOURS = 9.0
# The budget when Kaggle's quota endpoint does not answer and --budget-hours is not given: the
# weekly TPU quota has been published as 20 to 30 hours.
DEFAULT_BUDGET_HOURS = 20.0

# Measured for this project on one H200 (docs/performance.md): bare train step, Keras 3 on JAX,
# bf16, batch 64, 512 px: images/s and seconds of the first step's compilation.
H200_512 = {"densenet201": (281.7, 191.0), "efficientnet_b7": (173.2, 146.0)}
# Billions of multiply-adds of one forward pass at 224 × 224 px, per backbone: how the figures of
# a backbone this project has not timed are derived from those above. Each published figure is
# at the model's own resolution, so it is scaled to 224 px by (224 / resolution)². Sources:
# - DenseNet201: torchvision's model table (4.29 GFLOPS at 224 px).
# - EfficientNetB0–B7: Tan & Le, "EfficientNet" (ICML 2019), Table 2.
# - EfficientNetV2-B0–B3: the official repository's table (google/automl, efficientnetv2);
#   V2-S, M, L: Tan & Le, "EfficientNetV2" (ICML 2021), Table 7.
# - ConvNeXt Tiny–XLarge: Liu et al., "A ConvNet for the 2020s" (CVPR 2022), Table 1 and the
#   ImageNet-22k table, at 224 px.
# - HGNetV2-B4, B5, B6 (KerasHub presets; their stage-1 and stage-2 weights share the network):
#   XLA's cost analysis of the kit's own build at 224 px, halved to multiply-adds (it counts a
#   multiply-add as two); it gives ConvNeXt-Tiny 4.75 against the paper's 4.5.
# Adding a backbone is adding its row. A backbone without one (the smoke models `tiny` and
# `tiny_wide` among them) has no estimate, and `run` and `push` refuse it unless --yes.
GFLOPS_224 = {
    "densenet201": 4.29,
    "efficientnet_b0": 0.39,
    "efficientnet_b1": 0.70 * (224 / 240) ** 2,
    "efficientnet_b2": 1.0 * (224 / 260) ** 2,
    "efficientnet_b3": 1.8 * (224 / 300) ** 2,
    "efficientnet_b4": 4.2 * (224 / 380) ** 2,
    "efficientnet_b5": 9.9 * (224 / 456) ** 2,
    "efficientnet_b6": 19.0 * (224 / 528) ** 2,
    "efficientnet_b7": 37.0 * (224 / 600) ** 2,
    "efficientnetv2_b0": 0.72,
    "efficientnetv2_b1": 1.2 * (224 / 240) ** 2,
    "efficientnetv2_b2": 1.7 * (224 / 260) ** 2,
    "efficientnetv2_b3": 3.0 * (224 / 300) ** 2,
    "efficientnetv2_s": 8.8 * (224 / 384) ** 2,
    "efficientnetv2_m": 24.0 * (224 / 480) ** 2,
    "efficientnetv2_l": 53.0 * (224 / 480) ** 2,
    "convnext_tiny": 4.5,
    "convnext_small": 8.7,
    "convnext_base": 15.4,
    "convnext_large": 34.4,
    "convnext_xlarge": 60.9,
    "hgnetv2_b4_ssld_stage2_ft_in1k": 2.74,
    "hgnetv2_b5_ssld_stage1_in22k_in1k": 6.55,
    "hgnetv2_b5_ssld_stage2_ft_in1k": 6.55,
    "hgnetv2_b6_ssld_stage1_in22k_in1k": 16.87,
    "hgnetv2_b6_ssld_stage2_ft_in1k": 16.87,
}
# Throughput of each Kaggle accelerator relative to that H200. Not measured (no TPU or T4 was
# available); derived from memory bandwidth, because these CNNs are memory bound on the H200
# (EfficientNetB7 at 173 images/s does about 14 TFLOP/s, under 2 % of the H200's bf16 peak):
# - tpu, a v5e-8: 8 × 819 GB/s = 6.6 TB/s against the H200's 4.8 TB/s would be 1.36×; per-chip
#   batches of 16 and the gradient all-reduce over 8 chips take part of that back, so 1.0 is
#   assumed. Treat TPU estimates as ±50 % until one variant has run: its metrics.json then
#   replaces this table for its backbone and size.
# - gpu, two T4s: 2 × 320 GB/s is 0.13 of 4.8 TB/s, halved because the notebook trains in
#   float32 on GPUs (bf16 only on TPUs): 0.07.
ACCELERATOR_SPEED = {"tpu": 1.0, "gpu": 0.07}
# A forward pass costs about a third of a training step (the backward pass is about twice the
# forward), so prediction runs at 3× the training throughput.
PREDICTION_SPEEDUP = 3.0
# Guesses, not measurements: compiling the prediction function, and per variant the imports,
# reading the data and downloading the ImageNet weights.
PREDICTION_COMPILE_SECONDS = 60.0
SETUP_SECONDS = 120.0
# EXTRA_DATA's size is unknown before a run reads it. Until a run of the same backbone and size
# has measured its `training_images`, each entry is assumed to add as many images as the
# competition's training split (the public flower TFRecord sets made for this competition are
# of that order); the estimate says so.
EXTRA_IMAGES_ASSUMED = TRAIN_IMAGES
# Compute and activation traffic grow with the pixel count, so the table scales throughput by
# (512 / size)²; small images use the chips less well, so this is optimistic at 192 px.
REFERENCE_SIZE = 512


class BudgetError(ValueError):
    """The sweep would spend more accelerator time than allowed."""


@dataclass(frozen=True)
class Figures:
    """Seconds one backbone takes at one size: fixed costs, one epoch, one prediction view."""

    setup: float
    compile: float
    epoch: float
    prediction_view: float  # validation + test, one view (TTA adds views)
    source: str
    images: int  # training images per epoch when `epoch` was measured (epochs scale with it)
    # Compile seconds with a compile cache of the image (None: not measured); `compile` is then
    # without one (None: only measured with one).
    compile_cached: float | None = None


@dataclass(frozen=True)
class Estimate:
    slug: str
    seconds: float | None  # None: a backbone has neither a measurement nor a table row
    sources: tuple
    missing: tuple  # backbones without figures

    def text(self):
        if self.seconds is None:
            return f"no estimate (nothing measured or tabled for {', '.join(self.missing)})"
        return f"{hours(self.seconds)} ({', '.join(sorted(set(self.sources)))})"


@dataclass(frozen=True)
class Quota:
    """The week's quota of one accelerator as Kaggle reports it (GetAcceleratorQuotaStatistics)."""

    accelerator: str  # "tpu" or "gpu"
    used: float  # seconds used this week
    allowed: float  # seconds allowed this week
    refresh: object = None  # datetime (UTC) when the week's hours come back, or None

    @property
    def left(self):
        return max(0.0, self.allowed - self.used)

    def refresh_text(self):
        if self.refresh is None:
            return "at an unknown time"
        return self.refresh.strftime("%a %d %b %H:%M UTC")

    def text(self):
        """`TPU quota: 29.0 h of 30.0 h used this week, 1.0 h left (refreshes Sat 05 Dec
        00:00 UTC)`."""
        return (
            f"{self.accelerator.upper()} quota: {hours(self.used)} of {hours(self.allowed)} "
            f"used this week, {hours(self.left)} left (refreshes {self.refresh_text()})"
        )


def rounded_hours(seconds):
    """Hours to one decimal: each estimate is rounded once, and totals add the rounded figures,
    so that the printed 0.1 h + 0.1 h make 0.2 h."""
    return round(seconds / 3600, 1)


def hours(seconds):
    return f"{rounded_hours(seconds):.1f} h"


def total_hours(estimates):
    """`1.4 h`: the sum of the estimates' rounded hours (those without an estimate left out)."""
    known = [rounded_hours(item.seconds) for item in estimates if item.seconds is not None]
    return f"{sum(known):.1f} h"


def duration(seconds):
    """`45 s`, `12 min` or `3.4 h`."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else hours(seconds)


def training_images(parameters):
    """Images a variant trains on per epoch: train (+ val) + EXTRA_IMAGES_ASSUMED per extra."""
    return (
        TRAIN_IMAGES
        + (VALIDATION_IMAGES if parameters.get("TRAIN_ON_VALIDATION") else 0)
        + EXTRA_IMAGES_ASSUMED * len(parameters.get("EXTRA_DATA") or [])
    )


def views(parameters):
    """Forward passes per image at prediction: the image itself and each TTA view."""
    return 1 + len(parameters.get("TTA_VIEWS") or [])


def measured(runs_dir):
    """{(accelerator, backbone, image size): Figures} from every metrics.json under runs_dir,
    the newest run winning. A run's fixed stages are shared among its backbones in proportion
    to their epoch times."""
    found = {}
    paths = sorted(
        (folder / "metrics.json" for folder, _ in results.run_folders(runs_dir)),
        key=lambda path: path.stat().st_mtime,
    )
    for path in paths:
        try:
            metrics = json.loads(path.read_text())
            parameters = metrics["parameters"]
            accelerator = metrics["accelerator"]["kind"]
            per_epoch = metrics["seconds_per_epoch"]
            stages = metrics["stage_seconds"]
            epochs = parameters["EPOCHS"]
            size = parameters["IMAGE_SIZE"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # an older or partial record: not usable for estimates
        total = sum(per_epoch.values())
        if not total or not epochs:
            continue
        setup = sum(
            seconds
            for stage, seconds in stages.items()
            if stage not in ("compile", "train", "evaluate", "predict")
        )
        prediction = stages.get("evaluate", 0.0) + stages.get("predict", 0.0)
        for backbone, seconds in per_epoch.items():
            share = seconds / total
            # The train stage includes each epoch's validation pass; seconds_per_epoch does not.
            epoch = stages["train"] / epochs * share if "train" in stages else seconds
            compile_seconds, compile_cached = compile_figures(
                found.get((accelerator, backbone, size)),
                stages.get("compile", 0.0) * share,
                bool((metrics.get("compile_cache") or {}).get("hits")),
            )
            found[(accelerator, backbone, size)] = Figures(
                setup * share,
                compile_seconds,
                epoch,
                prediction * share / views(parameters),
                f"measured {path.parent}",
                metrics.get("training_images") or training_images(parameters),
                compile_cached,
            )
    return found


def compile_figures(earlier, seconds, cached):
    """(compile seconds without a cache, with one) after a run that took `seconds` to compile,
    loading from a cache (`cached`) or not; the other figure is the `earlier` run's (None if
    none measured it)."""
    if cached:
        return (earlier.compile if earlier else None), seconds
    return seconds, (earlier.compile_cached if earlier else None)


def compile_for(found, cached, table):
    """The compile seconds to expect: with a cache of the image (`cached`) its measured figure,
    else the figure without one; `table` (Figures or None) where a run measured neither."""
    if cached and found.compile_cached is not None:
        return found.compile_cached
    if found.compile is not None:
        return found.compile
    return table.compile if table is not None else found.compile_cached


def derived_speed(reference, backbone):
    """H200 images/s at 512 px of `backbone`, derived from the measured `reference` by FLOPs.

    Rounded toward more time: a heavier backbone is as much slower as its FLOPs say; a lighter
    one is assumed only the square root of its FLOPs advantage faster, because its depthwise
    convolutions and activations are memory bound and its per-layer costs stay (EfficientNetB7
    already does fewer images/s per FLOP than DenseNet201 above).
    """
    ratio = GFLOPS_224[reference] / GFLOPS_224[backbone]
    return H200_512[reference][0] * (math.sqrt(ratio) if ratio > 1 else ratio)


def reference_speed(backbone):
    """(H200 images/s at 512 px, compile seconds, source) of a backbone: measured (H200_512),
    else derived by FLOPs (`derived_speed`) from the measured backbone that gives it the most
    time, rounded down to whole images/s, with the longest measured compile; None without a
    GFLOPS_224 row."""
    if backbone in H200_512:
        return (*H200_512[backbone], "table")
    if backbone not in GFLOPS_224:
        return None
    reference = min(
        (name for name in H200_512 if name in GFLOPS_224),
        key=lambda name: derived_speed(name, backbone),
    )
    compile_seconds = max(seconds for _, seconds in H200_512.values())
    return (
        math.floor(derived_speed(reference, backbone)),
        compile_seconds,
        f"derived from {reference} by FLOPs",
    )


def tabled(accelerator, backbone, size, parameters):
    """Figures from the table (measured or derived: reference_speed), or None when it has
    nothing for them."""
    reference = reference_speed(backbone)
    if reference is None or accelerator not in ACCELERATOR_SPEED:
        return None
    reference_speed_512, compile_seconds, source = reference
    speed = reference_speed_512 * ACCELERATOR_SPEED[accelerator] * (REFERENCE_SIZE / size) ** 2
    validation = 0 if parameters.get("TRAIN_ON_VALIDATION") else VALIDATION_IMAGES
    training = training_images(parameters)
    epoch = (training + validation / PREDICTION_SPEEDUP) / speed
    prediction_view = (validation + TEST_IMAGES) / (PREDICTION_SPEEDUP * speed)
    return Figures(
        SETUP_SECONDS / len(parameters.get("BACKBONES") or [backbone]),
        compile_seconds + PREDICTION_COMPILE_SECONDS,
        epoch,
        prediction_view,
        source,
        training,
    )


def estimate(variant, accelerator, figures, cached=False):
    """The variant's accelerator seconds from `figures` (see measured), else the table; with
    `cached` (a compile cache of the image will be attached), the compile seconds measured
    with one where a run measured them."""
    parameters = variant.parameters
    seconds, sources, missing = 0.0, [], []
    for backbone in parameters.get("BACKBONES") or []:
        table = tabled(accelerator, backbone, parameters.get("IMAGE_SIZE"), parameters)
        found = figures.get((accelerator, backbone, parameters.get("IMAGE_SIZE"))) or table
        if found is None:
            missing.append(
                backbone if accelerator in ACCELERATOR_SPEED else f"{backbone} on {accelerator}"
            )
            continue
        sources.append(found.source)
        if cached and found.compile_cached is not None:
            sources.append("compile with the cache")
        epoch = found.epoch * training_images(parameters) / found.images
        seconds += (
            found.setup
            + compile_for(found, cached, table)
            + parameters.get("EPOCHS", 0) * epoch
            + views(parameters) * found.prediction_view
        )
    if parameters.get("EXTRA_DATA"):
        sources.append(f"EXTRA_DATA assumed {EXTRA_IMAGES_ASSUMED:,} images per entry")
    return Estimate(variant.slug, None if missing else seconds, tuple(sources), tuple(missing))


def estimate_sweep(variants, accelerator, runs_dir, cached=False):
    figures = measured(runs_dir) if Path(runs_dir).is_dir() else {}
    return [estimate(variant, accelerator, figures, cached) for variant in variants]


def summary(estimates):
    """`total 14.2 h of accelerator time for 9 variant(s)` (+ how many have no estimate)."""
    unknown = sum(item.seconds is None for item in estimates)
    return (
        f"estimated total {total_hours(estimates)} of accelerator time for {len(estimates)} "
        "variant(s)" + (f" ({unknown} without an estimate)" if unknown else "")
    )


def still_needed(item, elapsed):
    """Seconds a session queued or running on Kaggle still needs: its estimate less the seconds
    since its push (`elapsed`; None when pushed elsewhere: the whole estimate)."""
    return max(0.0, item.seconds - (elapsed or 0.0))


def check_budget(
    estimates,
    budget_hours=None,
    session_limit_hours=SESSION_LIMIT_HOURS,
    quota=None,
    running=(),
):
    """Raise BudgetError (one line) when a variant to push has no estimate, would pass Kaggle's
    session limit, or the sweep would pass the hours left of `quota` (Kaggle's) or
    `budget_hours` (--budget-hours), whichever is less; with neither, DEFAULT_BUDGET_HOURS.

    `running`: (Estimate, seconds since its push or None) of the sweep's sessions queued or
    running on Kaggle; what they still need (`still_needed`) counts against the hours left too.
    Nothing to push: nothing to check.
    """
    if not estimates:
        return
    unknown = [
        item for item in [*estimates, *(item for item, _ in running)] if item.seconds is None
    ]
    if unknown:
        names = ", ".join(f"{item.slug} ({', '.join(item.missing)})" for item in unknown)
        raise BudgetError(
            f"no estimate for {names}: nothing measured, tabled or derivable, so the time it "
            "needs is unknown; add the backbone's row to GFLOPS_224 in kit/estimate.py, or "
            "pass --yes to push anyway"
        )
    too_long = [item for item in estimates if item.seconds > session_limit_hours * 3600]
    if too_long:
        names = ", ".join(f"{item.slug} ({hours(item.seconds)})" for item in too_long)
        raise BudgetError(
            f"{names} would pass Kaggle's {session_limit_hours:g} h session limit "
            "and be stopped; lower EPOCHS or IMAGE_SIZE, or pass --yes to push "
            "anyway"
        )
    left_to_run = [rounded_hours(still_needed(item, elapsed)) for item, elapsed in running]
    total = (sum(rounded_hours(item.seconds) for item in estimates) + sum(left_to_run)) * 3600
    need = f"the {len(estimates)} variant(s) to push need about {total_hours(estimates)}" + (
        f" and the {len(running)} session(s) running on Kaggle about {sum(left_to_run):.1f} h more"
        if running
        else ""
    )
    if (
        quota is not None
        and total > quota.left
        and (budget_hours is None or quota.left <= budget_hours * 3600)
    ):
        raise BudgetError(
            f"{need} of {quota.accelerator.upper()} time, but {hours(quota.left)} "
            f"of this week's quota is left ({hours(quota.used)} of "
            f"{hours(quota.allowed)} used; it refreshes {quota.refresh_text()}); "
            "push fewer with --only, or pass --yes to push anyway"
        )
    if quota is None and budget_hours is None:
        budget_hours = DEFAULT_BUDGET_HOURS
    if budget_hours is not None and total > budget_hours * 3600:
        raise BudgetError(
            f"{need} of accelerator time, more than --budget-hours "
            f"{budget_hours:g}; run fewer (--only), raise --budget-hours, or pass "
            "--yes"
        )
