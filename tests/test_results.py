"""The results table: every run under runs/, honest and in-sample blend F1, plain numbers."""

import json

from kit import results


def write(folder, **metrics):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_every_run_at_any_depth_is_a_row(tmp_path):
    runs = tmp_path / "runs"
    write(runs / "petals-flowers-512" / "v1", parameters={"IMAGE_SIZE": 512})
    write(runs / "demo-20261129-120000", parameters={"IMAGE_SIZE": 32})  # make demo
    write(runs / "my-run", parameters={"IMAGE_SIZE": 64})  # the runner
    write(runs / "team" / "week-1" / "local-2", parameters={"IMAGE_SIZE": 192})
    write(runs / "petals-flowers-512" / ".v2-partial", parameters={"IMAGE_SIZE": 512})
    table = results.rows(runs)
    assert [(row["variant"], row["run"], row["IMAGE_SIZE"]) for row in table] == [
        ("demo-20261129-120000", ".", 32),
        ("my-run", ".", 64),
        ("petals-flowers-512", "v1", 512),
        ("team", "week-1/local-2", 192),
    ]


def test_validation_f1_is_the_honest_one(tmp_path):
    runs = tmp_path / "runs"
    weights = {"densenet201": 0.65, "efficientnet_b7": 0.35}
    write(runs / "new" / "v1", blend_f1=0.9012, blend_f1_in_sample=0.9254, blend_weights=weights)
    # Before blend_f1_in_sample existed, blend_f1 was tuned and scored on the same images: for
    # an ensemble that is no validation figure; with one model nothing was tuned.
    write(runs / "old-blend" / "v1", blend_f1=0.93, blend_weights=weights)
    write(runs / "old-single" / "v1", blend_f1=0.88, blend_weights={"densenet201": 1.0})
    write(
        runs / "on-validation" / "v1",
        blend_f1=None,
        blend_f1_in_sample=None,
        blend_weights={"densenet201": 1.0},
    )
    table = {row["variant"]: row for row in results.rows(runs)}
    assert (table["new"]["validation F1"], table["new"]["in-sample F1"]) == ("0.9012", "0.9254")
    assert (table["old-blend"]["validation F1"], table["old-blend"]["in-sample F1"]) == (
        "",
        "0.9300",
    )
    assert table["old-single"]["validation F1"] == table["old-single"]["in-sample F1"] == "0.8800"
    assert table["on-validation"]["validation F1"] == table["on-validation"]["in-sample F1"] == ""
    assert table["new"]["blend weights"] == "densenet201:0.65 efficientnet_b7:0.35"


def test_markdown_and_csv_have_the_same_columns(tmp_path):
    write(
        tmp_path / "runs" / "a" / "v1",
        blend_f1=0.5,
        blend_f1_in_sample=0.5,
        parameters={"IMAGE_SIZE": 32, "BACKBONES": ["tiny", "tiny_wide"], "EPOCHS": 4},
        seconds_per_epoch={"tiny": 1.0, "tiny_wide": 2.0},
        images_per_second={"tiny": 100.0, "tiny_wide": 50.0},
        blend_weights={"tiny": 0.7, "tiny_wide": 0.3},
    )
    table = results.rows(tmp_path / "runs")
    markdown = results.markdown(table).splitlines()
    assert markdown[0] == "| " + " | ".join(results.COLUMNS) + " |"
    assert markdown[2].startswith(
        "| a | v1 | 32 | tiny+tiny_wide | 4 |  | 0.5000 | 0.5000 | "
        "tiny:0.70 tiny_wide:0.30 | 1.5 | 75 |"
    )
    lines = results.csv_text(table).splitlines()
    assert lines[0] == ",".join(results.COLUMNS) and len(lines) == 2


def test_each_run_shows_the_image_it_ran_on(tmp_path):
    runs = tmp_path / "runs"
    write(runs / "petals-a" / "v1", image={"jax": "0.7.2", "fingerprint": "3f2a9c1b0d4e"})
    write(runs / "petals-b" / "v1", parameters={})  # from before the image was on record
    assert [row["image"] for row in results.rows(runs)] == ["3f2a9c1b0d4e", ""]
    assert "| 3f2a9c1b0d4e |" in results.markdown(results.rows(runs))


def test_a_partial_run_shows_the_models_it_finished(tmp_path):
    """A run stopped before its last model (`complete` false, or collected from a version that
    ended in ERROR) is shown as partial, N of M models."""
    runs = tmp_path / "runs"
    planned = {"BACKBONES": ["densenet201", "efficientnet_b7"]}
    write(runs / "whole" / "v1", parameters=planned, complete=True, members=planned["BACKBONES"])
    write(runs / "stopped" / "local-1", parameters=planned, complete=False, members=["densenet201"])
    # Collected from Kaggle after an ERROR in its last cells: all models, still partial.
    write(runs / "errored" / "v2", parameters=planned, complete=True, members=planned["BACKBONES"])
    (runs / "errored" / "v2" / "collected.json").write_text(
        json.dumps({"status": "ERROR", "problem": None, "partial": {"ended": "ERROR"}})
    )
    table = {row["variant"]: row["models"] for row in results.rows(runs)}
    assert table == {"whole": "2 of 2", "stopped": "1 of 2 partial", "errored": "2 of 2 partial"}
    assert results.models_text(["densenet201"], planned["BACKBONES"]) == (
        "1 of 2 models, efficientnet_b7 missing"
    )
