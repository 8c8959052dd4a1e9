"""Accelerator-time estimates: the documented table, measured runs replacing it, the budget."""

import dataclasses
import json
import os

import pytest

from kit import estimate
from kit.sweeps import Variant


def variant(slug="petals-test", **parameters):
    defaults = {"IMAGE_SIZE": 512, "BACKBONES": ["densenet201"], "EPOCHS": 12, "TTA_VIEWS": []}
    return Variant(slug, slug, "notebooks/flowers.py", {**defaults, **parameters})


def seconds(accelerator="tpu", figures=None, **parameters):
    return estimate.estimate(variant(**parameters), accelerator, figures or {}).seconds


def test_table_scales_with_epochs_image_size_and_accelerator():
    epoch = seconds(EPOCHS=13) - seconds(EPOCHS=12)
    assert seconds(EPOCHS=20) - seconds(EPOCHS=10) == pytest.approx(10 * epoch)
    small_epoch = seconds(EPOCHS=13, IMAGE_SIZE=192) - seconds(EPOCHS=12, IMAGE_SIZE=192)
    assert epoch / small_epoch == pytest.approx((512 / 192) ** 2)
    gpu_epoch = seconds("gpu", EPOCHS=13) - seconds("gpu", EPOCHS=12)
    assert gpu_epoch / epoch == pytest.approx(
        estimate.ACCELERATOR_SPEED["tpu"] / estimate.ACCELERATOR_SPEED["gpu"]
    )
    # A TTA view adds one prediction pass; EfficientNetB7 is slower than DenseNet201.
    assert seconds(TTA_VIEWS=["flip_lr"]) > seconds()
    assert seconds(BACKBONES=["efficientnet_b7"]) > seconds()
    # A blend trains both models and starts up once.
    both = seconds(BACKBONES=["densenet201", "efficientnet_b7"])
    assert both == pytest.approx(
        seconds() + seconds(BACKBONES=["efficientnet_b7"]) - estimate.SETUP_SECONDS
    )
    # Training on validation: more images per epoch, nothing to predict on validation.
    merged_epoch = seconds(EPOCHS=13, TRAIN_ON_VALIDATION=True) - seconds(
        EPOCHS=12, TRAIN_ON_VALIDATION=True
    )
    assert merged_epoch > epoch


def test_unknown_backbones_have_no_estimate_and_are_refused_by_name():
    known = estimate.estimate(variant("petals-known"), "tpu", {})
    unknown = estimate.estimate(
        variant("petals-tiny", BACKBONES=["densenet201", "tiny"]), "tpu", {}
    )
    assert unknown.seconds is None and unknown.missing == ("tiny",)
    assert "no estimate" in unknown.text() and "tiny" in unknown.text()
    on_cpu = estimate.estimate(variant(), "cpu", {})  # no CPU figures
    assert on_cpu.seconds is None and on_cpu.missing == ("densenet201 on cpu",)
    line = estimate.summary([known, unknown])
    assert f"total {estimate.hours(known.seconds)}" in line
    assert "(1 without an estimate)" in line
    # Fails closed: never counted as zero, whatever the budget.
    for unknowns in ([known, unknown], [on_cpu]):
        with pytest.raises(estimate.BudgetError, match=r"^no estimate for petals-") as refusal:
            estimate.check_budget(unknowns, budget_hours=1000)
        assert "GFLOPS_224" in str(refusal.value) and "--yes" in str(refusal.value)
    with pytest.raises(estimate.BudgetError, match=r"petals-tiny \(tiny\)"):
        estimate.check_budget([unknown], budget_hours=1000)


# The keras.applications backbones of petals.backbones when the FLOPs table was added.
APPLICATIONS = ["densenet201", *(f"efficientnet_b{index}" for index in range(8))] + [
    f"efficientnetv2_{name}" for name in ("b0", "b1", "b2", "b3", "s", "m", "l")
]


@pytest.mark.parametrize("backbone", APPLICATIONS)
def test_every_imagenet_backbone_has_an_estimate_derived_ones_say_so(backbone):
    found = estimate.estimate(variant(BACKBONES=[backbone]), "tpu", {})
    assert found.seconds is not None and found.missing == ()
    if backbone in estimate.H200_512:
        assert found.sources == ("table",)
    else:
        assert found.sources == ("derived from efficientnet_b7 by FLOPs",)
        assert "derived" in found.text()


def test_every_backbone_has_an_estimate_or_is_refused_by_name():
    """A backbone added to petals.backbones without a GFLOPS_224 row is refused, never free."""
    from petals.backbones import BACKBONES

    for backbone in BACKBONES:
        found = estimate.estimate(variant(BACKBONES=[backbone]), "tpu", {})
        if found.seconds is None:
            with pytest.raises(estimate.BudgetError, match=backbone):
                estimate.check_budget([found], budget_hours=1000)
        else:
            assert found.seconds > 0


def test_every_backbone_with_imagenet_weights_has_a_flops_row():
    """Only the smoke models, which never run on Kaggle, go without an estimate."""
    from petals.backbones import BACKBONES

    without = [name for name in BACKBONES if name not in estimate.GFLOPS_224]
    assert without == [name for name, spec in BACKBONES.items() if not spec.has_imagenet_weights]


def test_derived_figures_are_upper_bounds_of_the_flops_scaling():
    """A heavier backbone is as much slower as its FLOPs say; a lighter one gains only the
    square root of its FLOPs advantage; the reference giving the most time is used."""
    reference_images = estimate.H200_512["efficientnet_b7"][0]
    heavy = estimate.reference_speed("efficientnetv2_l")[0]
    assert heavy <= reference_images * (
        estimate.GFLOPS_224["efficientnet_b7"] / estimate.GFLOPS_224["efficientnetv2_l"]
    )
    light = estimate.reference_speed("efficientnet_b0")[0]
    ratio = estimate.GFLOPS_224["efficientnet_b7"] / estimate.GFLOPS_224["efficientnet_b0"]
    assert light <= reference_images * ratio**0.5 < reference_images * ratio
    # Slower, so more time than the heavier measured one per FLOP: B3 takes longer than B7 / 5.
    b3 = seconds(BACKBONES=["efficientnet_b3"], EPOCHS=13) - seconds(
        BACKBONES=["efficientnet_b3"], EPOCHS=12
    )
    b7 = seconds(BACKBONES=["efficientnet_b7"], EPOCHS=13) - seconds(
        BACKBONES=["efficientnet_b7"], EPOCHS=12
    )
    assert b3 > b7 * estimate.GFLOPS_224["efficientnet_b3"] / estimate.GFLOPS_224["efficientnet_b7"]


def write_metrics(folder, accelerator="tpu", size=512, per_epoch=None, epochs=2, views=()):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(
        json.dumps(
            {
                "parameters": {
                    "IMAGE_SIZE": size,
                    "BACKBONES": list(per_epoch or {"densenet201": 1}),
                    "EPOCHS": epochs,
                    "TTA_VIEWS": list(views),
                },
                "accelerator": {"kind": accelerator},
                "seconds_per_epoch": per_epoch or {"densenet201": 40.0},
                "stage_seconds": {
                    "import": 10.0,
                    "data": 5.0,
                    "build": 20.0,
                    "compile": 100.0,
                    "train": 90.0,
                    "evaluate": 10.0,
                    "predict": 20.0,
                },
            }
        )
    )


def test_measured_runs_replace_the_table(tmp_path):
    runs = tmp_path / "runs"
    write_metrics(runs / "petals-a" / "v1")
    figures = estimate.measured(runs)
    found = estimate.estimate(variant(EPOCHS=4, TTA_VIEWS=["flip_lr"]), "tpu", figures)
    # setup 35 + compile 100 + 4 epochs × 90 / 2 + 2 views × (10 + 20) / 1 view.
    assert found.seconds == pytest.approx(35 + 100 + 4 * 45 + 2 * 30)
    assert found.sources == (f"measured {runs / 'petals-a' / 'v1'}",)
    # Another size, another accelerator: the table, not this run.
    assert estimate.estimate(variant(IMAGE_SIZE=331), "tpu", figures).sources == ("table",)
    assert estimate.estimate(variant(), "gpu", figures).sources == ("table",)


def test_a_blend_run_is_shared_among_its_backbones(tmp_path):
    runs = tmp_path / "runs"
    write_metrics(
        runs / "demo-1", per_epoch={"densenet201": 30.0, "efficientnet_b7": 10.0}, epochs=3
    )
    figures = estimate.measured(runs)
    densenet = figures[("tpu", "densenet201", 512)]
    efficientnet = figures[("tpu", "efficientnet_b7", 512)]
    assert densenet.epoch == pytest.approx(90.0 / 3 * 0.75)
    assert efficientnet.compile == pytest.approx(100.0 * 0.25)
    assert densenet.setup + efficientnet.setup == pytest.approx(35.0)


def test_staging_folders_and_unreadable_records_are_ignored(tmp_path):
    runs = tmp_path / "runs"
    write_metrics(runs / "petals-a" / ".v1-partial", accelerator="tpu")
    (runs / "broken").mkdir(parents=True)
    (runs / "broken" / "metrics.json").write_text("{not json")
    (runs / "old").mkdir()
    (runs / "old" / "metrics.json").write_text(json.dumps({"blend_f1": 0.5}))
    assert estimate.measured(runs) == {}
    assert estimate.estimate_sweep([variant()], "tpu", tmp_path / "missing")[0].sources == (
        "table",
    )


def test_budget_and_session_limit():
    short = estimate.Estimate("petals-short", 3600.0, ("table",), ())
    long = estimate.Estimate("petals-long", 10 * 3600.0, ("table",), ())
    estimate.check_budget([short], budget_hours=2)
    with pytest.raises(estimate.BudgetError, match=r"more than --budget-hours 0\.5"):
        estimate.check_budget([short], budget_hours=0.5)
    with pytest.raises(
        estimate.BudgetError,
        match=r"petals-long \(10\.0 h\) would pass Kaggle's "
        r"9 h session limit",
    ):
        estimate.check_budget([short, long], budget_hours=100)


def test_durations_read_naturally():
    assert estimate.duration(45) == "45 s"
    assert estimate.duration(12 * 60) == "12 min"
    assert estimate.duration(3 * 3600) == "3.0 h"


def test_extra_data_lengthens_epochs_by_the_assumed_images_and_says_so(tmp_path):
    epoch = seconds(EPOCHS=13) - seconds(EPOCHS=12)
    extra = {"EXTRA_DATA": ["someone/flowers", "someone/more-flowers"]}
    extra_epoch = seconds(EPOCHS=13, **extra) - seconds(EPOCHS=12, **extra)
    images = estimate.TRAIN_IMAGES + 2 * estimate.EXTRA_IMAGES_ASSUMED
    # The table's epoch also validates; only its training part grows with the images.
    speed = estimate.H200_512["densenet201"][0] * estimate.ACCELERATOR_SPEED["tpu"]
    assert extra_epoch - epoch == pytest.approx(2 * estimate.EXTRA_IMAGES_ASSUMED / speed)
    assert estimate.training_images(variant(**extra).parameters) == images
    assert "assumed" in estimate.estimate(variant(**extra), "tpu", {}).text()


def test_the_quota_left_caps_the_sweep_and_budget_hours_caps_it_further():
    from datetime import UTC, datetime

    sweep = [estimate.Estimate(f"petals-{index}", 1800.0, ("table",), ()) for index in range(4)]
    quota = estimate.Quota("tpu", 29 * 3600.0, 30 * 3600.0, datetime(2026, 12, 5, tzinfo=UTC))
    assert quota.text() == (
        "TPU quota: 29.0 h of 30.0 h used this week, 1.0 h left (refreshes Sat 05 Dec 00:00 UTC)"
    )
    with pytest.raises(
        estimate.BudgetError,
        match=(
            r"^the 4 variant\(s\) to push need about 2\.0 h of TPU time, but 1\.0 h of this "
            r"week's quota is left \(29\.0 h of 30\.0 h used; it refreshes Sat 05 Dec 00:00 "
            r"UTC\); push fewer with --only, or pass --yes to push anyway$"
        ),
    ):
        estimate.check_budget(sweep, quota=quota)
    estimate.check_budget(sweep[:2], quota=quota)
    with pytest.raises(estimate.BudgetError, match=r"more than --budget-hours 0\.5"):
        estimate.check_budget(sweep[:2], budget_hours=0.5, quota=quota)
    used_up = estimate.Quota("gpu", 31 * 3600.0, 30 * 3600.0)
    assert used_up.left == 0 and "refreshes at an unknown time" in used_up.text()
    with pytest.raises(estimate.BudgetError, match="0.0 h of this week's quota is left"):
        estimate.check_budget(sweep[:1], budget_hours=5, quota=used_up)
    # Without Kaggle's answer, --budget-hours alone, by default 20 h.
    estimate.check_budget(sweep * 10)
    with pytest.raises(estimate.BudgetError, match=r"more than --budget-hours 20"):
        estimate.check_budget(sweep * 11)


def test_a_total_adds_the_rounded_figures_it_follows():
    """Two variants printed as 0.1 h each make 0.2 h, not the 0.3 h of their raw seconds."""
    items = [estimate.Estimate(f"petals-{index}", 0.14 * 3600, ("table",), ()) for index in (1, 2)]
    assert [item.text() for item in items] == ["0.1 h (table)"] * 2
    assert estimate.summary(items).startswith("estimated total 0.2 h of accelerator time")


def test_compile_seconds_with_and_without_a_cache_each_from_their_runs(tmp_path):
    runs = tmp_path / "runs"
    write_metrics(runs / "petals-a" / "v1")  # compiled everything: 100 s
    warm = runs / "petals-a" / "v2"
    write_metrics(warm)
    metrics = json.loads((warm / "metrics.json").read_text())
    metrics["stage_seconds"]["compile"] = 10.0
    metrics["compile_cache"] = {"hits": 40, "misses": 0}
    (warm / "metrics.json").write_text(json.dumps(metrics))
    os.utime(warm / "metrics.json", (2e9, 2e9))  # the newer run
    figures = estimate.measured(runs)
    found = figures[("tpu", "densenet201", 512)]
    assert (found.compile, found.compile_cached) == (100.0, 10.0)
    without = estimate.estimate(variant(EPOCHS=4), "tpu", figures)
    with_cache = estimate.estimate(variant(EPOCHS=4), "tpu", figures, cached=True)
    assert without.seconds - with_cache.seconds == pytest.approx(90.0)
    assert "compile with the cache" in with_cache.sources
    # Measured only with a cache: a run without one is expected to compile as the table says.
    only_warm = {("tpu", "densenet201", 512): dataclasses.replace(found, compile=None)}
    table = estimate.tabled("tpu", "densenet201", 512, variant(EPOCHS=4).parameters)
    assert estimate.estimate(variant(EPOCHS=4), "tpu", only_warm).seconds == pytest.approx(
        with_cache.seconds - 10.0 + table.compile
    )


def test_what_running_sessions_still_need_counts_against_the_quota():
    from datetime import UTC, datetime

    quota = estimate.Quota("tpu", 28 * 3600.0, 30 * 3600.0, datetime(2026, 12, 5, tzinfo=UTC))
    to_push = [estimate.Estimate("petals-next", 3600.0, ("table",), ())]
    estimate.check_budget(to_push, quota=quota)  # 1 h of the 2 h left
    running = estimate.Estimate("petals-running", 3 * 3600.0, ("table",), ())
    # Pushed 2.5 h ago: 0.5 h to go, which still fits; pushed elsewhere (time unknown): 3 h.
    estimate.check_budget(to_push, quota=quota, running=[(running, 2.5 * 3600)])
    with pytest.raises(
        estimate.BudgetError,
        match=r"^the 1 variant\(s\) to push need about 1\.0 h and the 1 session\(s\) running "
        r"on Kaggle about 3\.0 h more of TPU time, but 2\.0 h of this week's quota is left",
    ):
        estimate.check_budget(to_push, quota=quota, running=[(running, None)])
    with pytest.raises(estimate.BudgetError, match=r"about 2\.0 h more"):
        estimate.check_budget(to_push, quota=quota, running=[(running, 3600.0)])
    # Nothing to push spends nothing: no refusal for what already runs.
    estimate.check_budget([], quota=quota, running=[(running, None)])


def test_the_session_limit_is_checked_with_derived_estimates_too():
    """EfficientNetV2-L was never timed: its derived estimate still meets the 9 h limit."""
    long = estimate.estimate(
        variant("petals-long", BACKBONES=["efficientnetv2_l"], EPOCHS=200), "tpu", {}
    )
    assert long.seconds > estimate.SESSION_LIMIT_HOURS * 3600
    with pytest.raises(
        estimate.BudgetError, match=r"^petals-long \(\d+\.\d h\) would pass Kaggle's 9 h"
    ):
        estimate.check_budget([long], budget_hours=1000)
