import pytest
from slugify import slugify

from kit import sweeps


def write(tmp_path, text):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_competition_sweep_has_nine_named_variants():
    sweep = sweeps.load("sweeps/competition.toml")
    assert sweep.accelerator == "tpu" and len(sweep.variants) == 9
    slugs = [variant.slug for variant in sweep.variants]
    assert "petals-flowers-512-densenet201-efficientnet-b7" in slugs
    for variant in sweep.variants:
        assert slugify(variant.title) == variant.slug and 5 <= len(variant.slug) <= 50
        assert variant.parameters["EPOCHS"] == 12


def test_grid_is_a_product_with_fixed_values_and_none(tmp_path):
    sweep = sweeps.load(write(tmp_path, """
name = "t"
[parameters]
WEIGHTS = "None"
[grid]
IMAGE_SIZE = [192, 512]
LR_MAX = [0.001, 0.002]
"""))
    assert [variant.slug for variant in sweep.variants] == [
        "petals-t-192-lr-max-0-001", "petals-t-192-lr-max-0-002",
        "petals-t-512-lr-max-0-001", "petals-t-512-lr-max-0-002"]
    assert all(variant.parameters["WEIGHTS"] is None for variant in sweep.variants)


@pytest.mark.parametrize("text, message", [
    ("accelerator = 'tpuv3'\n", "accelerator 'tpuv3' is not one of tpu, gpu, cpu"),
    ("[grid]\nIMAGE_SIZE = 512\n", "grid.IMAGE_SIZE must be a non-empty list"),
    ("colour = 1\n", "unknown keys colour"),
    ("[parameters]\nEPOCHS = 1\n[grid]\nEPOCHS = [1, 2]\n", "EPOCHS both fixed and in the grid"),
    ("name = 'x' \n[grid]\nBACKBONES = [['a'], ['a']]\n", "two variants share a name"),
    ("name = = 1", "not valid TOML"),
])
def test_bad_sweep_files(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        sweeps.load(write(tmp_path, text))


def test_missing_sweep_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        sweeps.load(tmp_path / "nope.toml")
