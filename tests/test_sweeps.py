import pytest
from slugify import slugify

from kit import sweeps


def write(tmp_path, text):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_competition_sweep_trains_each_model_once_then_the_recipe():
    """One kernel per backbone and size (blends come from `build.py blend`), then the recipe."""
    sweep = sweeps.load("sweeps/competition.toml")
    assert sweep.accelerator == "tpu" and len(sweep.variants) == 10
    slugs = [variant.slug for variant in sweep.variants]
    assert slugs[0] == "petals-flowers-512-efficientnet-b7"
    for variant in sweep.variants:
        assert slugify(variant.title) == variant.slug and 5 <= len(variant.slug) <= 50
    assert all(
        len(variant.parameters["BACKBONES"]) == 1 and variant.parameters["EPOCHS"] == 12
        for variant in sweep.variants[:6]
    )
    recipe = sweep.variants[-1]
    assert recipe.slug == "petals-flowers-recipe"
    assert recipe.parameters["WEIGHTS"] == {
        "efficientnet_b7": "noisy-student",
        "densenet201": "imagenet",
    }
    assert recipe.parameters["LABEL_SMOOTHING"] == 0.1 and recipe.parameters["TRAIN_ON_VALIDATION"]
    assert len(recipe.parameters["TTA_VIEWS"]) == 4 and recipe.parameters["EXTRA_DATA"]
    # Fixed parameters reach a named variant; the grid does not.
    assert recipe.parameters["BATCH_SIZE_PER_REPLICA"] == 16


def test_named_variants_without_a_grid(tmp_path):
    sweep = sweeps.load(
        write(
            tmp_path,
            """
name = "t"
[parameters]
EPOCHS = 3
[variants.smooth]
LABEL_SMOOTHING = 0.1
[variants.sharp]
LABEL_SMOOTHING = "None"
""",
        )
    )
    assert [(variant.slug, variant.parameters) for variant in sweep.variants] == [
        ("petals-t-smooth", {"EPOCHS": 3, "LABEL_SMOOTHING": 0.1}),
        ("petals-t-sharp", {"EPOCHS": 3, "LABEL_SMOOTHING": None}),
    ]


def test_grid_is_a_product_with_fixed_values_and_none(tmp_path):
    sweep = sweeps.load(
        write(
            tmp_path,
            """
name = "t"
[parameters]
WEIGHTS = "None"
[grid]
IMAGE_SIZE = [192, 512]
LR_MAX = [0.001, 0.002]
""",
        )
    )
    assert [variant.slug for variant in sweep.variants] == [
        "petals-t-192-lr-max-0-001",
        "petals-t-192-lr-max-0-002",
        "petals-t-512-lr-max-0-001",
        "petals-t-512-lr-max-0-002",
    ]
    assert all(variant.parameters["WEIGHTS"] is None for variant in sweep.variants)


@pytest.mark.parametrize(
    "text, message",
    [
        ("accelerator = 'tpuv3'\n", "accelerator 'tpuv3' is not one of tpu, gpu, cpu"),
        ("[grid]\nIMAGE_SIZE = 512\n", "grid.IMAGE_SIZE must be a non-empty list"),
        ("colour = 1\n", "unknown keys colour"),
        (
            "[parameters]\nEPOCHS = 1\n[grid]\nEPOCHS = [1, 2]\n",
            "EPOCHS both fixed and in the grid",
        ),
        ("name = 'x' \n[grid]\nBACKBONES = [['a'], ['a']]\n", "two variants share a name"),
        ("name = = 1", "not valid TOML"),
        ("[variants]\nrecipe = 1\n", "variants.recipe must be a table of parameters"),
        # The sentence is petals.parameters' (tests/test_parameters.py): its facts, in order.
        ("[variants.x]\nEPOCS = 1\n", "EPOCS .*'EPOCHS'"),
    ],
)
def test_bad_sweep_files(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        sweeps.load(write(tmp_path, text))


def test_missing_sweep_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        sweeps.load(tmp_path / "nope.toml")


def test_a_local_run_is_finished_only_when_its_metrics_say_complete(tmp_path):
    """A run killed between models left `"complete": false`: a new folder, nothing overwritten."""
    assert sweeps.local_run_dir(tmp_path) == (tmp_path / "local-1", False)
    (tmp_path / "local-1").mkdir()  # killed before its first model: no metrics.json
    assert sweeps.local_run_dir(tmp_path) == (tmp_path / "local-2", False)
    (tmp_path / "local-2").mkdir()
    metrics = tmp_path / "local-2" / "metrics.json"
    metrics.write_text('{"complete": false}')  # killed after its first model
    assert sweeps.local_run_dir(tmp_path) == (tmp_path / "local-3", False)
    metrics.write_text('{"complete": true}')
    assert sweeps.local_run_dir(tmp_path) == (tmp_path / "local-2", True)
    assert sweeps.local_run_dir(tmp_path, rerun=True) == (tmp_path / "local-3", False)
    metrics.write_text('{"blend_f1": 0.5}')  # from before the key existed: finished
    assert sweeps.local_run_dir(tmp_path) == (tmp_path / "local-2", True)
