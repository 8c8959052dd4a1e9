"""`build.py blend`: the saved probabilities of several runs, aligned by id, blended with
weights searched on validation; a local sweep of the real notebook, then synthetic runs."""

import json

import numpy as np
import pytest

import build
from kit import blend
from petals import data, probabilities, submission
from petals.probabilities import Member
from tests.conftest import PAIR_SIZES, build_py, copy_of, pair_sweep_file


@pytest.mark.slow
@pytest.mark.xdist_group("local_sweep")
def test_a_local_sweep_at_two_sizes_blends_into_one_submission(local_sweep, tmp_path):
    """The real notebook at 32 and 64 px on the demo digits (the same ids at both sizes),
    then `build.py blend`: a submission for exactly the test ids, naming both runs."""
    copy_of(local_sweep.folder, tmp_path)
    result = build_py(tmp_path, "blend", "--sweep", "pair.toml", "--step", "0.25")
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "runs" / "pair-blend" / "blend-1"
    test_ids = data.record_ids(data.find_split(local_sweep.dataset, 32, "test").files)
    ids, labels = submission.read_submission(folder / "submission.csv")
    assert sorted(ids) == sorted(test_ids) and len(ids) == len(test_ids)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["blend_weights"]) == {
        "petals-pair-32/local-1:tiny",
        "petals-pair-64/local-1:tiny",
    }
    assert sum(metrics["blend_weights"].values()) == pytest.approx(1)
    assert 0 <= metrics["blend_f1"] <= 1
    lines = result.stdout.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("run "))
    assert lines[header].split() == [
        "run",
        "backbone",
        "size",
        "weights",
        "validation",
        "F1",
        "weight",
    ]
    rows = [line.split() for line in lines[header + 1 : header + 3]]
    assert [row[:4] for row in rows] == [
        ["petals-pair-32/local-1", "tiny", "32", "none"],
        ["petals-pair-64/local-1", "tiny", "64", "none"],
    ]
    assert [float(row[5]) for row in rows] == [
        pytest.approx(weight)
        for weight in (
            metrics["blend_weights"]["petals-pair-32/local-1:tiny"],
            metrics["blend_weights"]["petals-pair-64/local-1:tiny"],
        )
    ]
    assert lines[header + 3].startswith("blend: honest validation F1 ")
    assert "best single run petals-pair-" in lines[header + 3]
    # `build.py results` lists the blend as a run of its own.
    listed = build_py(tmp_path, "results").stdout
    assert "| pair-blend | blend-1 | 32+64 | tiny |" in listed


def probabilities_table(rows, classes, random, right=None):
    values = random.random((rows, classes))
    if right is not None:
        values[np.arange(rows), right] += 2.0
    return values / values.sum(axis=1, keepdims=True)


def synthetic_run(runs, slug, size, validation_ids, labels, test_ids, seed, validated=True):
    """runs/<slug>/v1 as a collected kernel leaves it: metrics.json and one model's file."""
    random = np.random.default_rng(seed)
    folder = runs / slug / "v1"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(
        json.dumps(
            {"parameters": {"IMAGE_SIZE": size, "WEIGHTS": "imagenet", "BACKBONES": ["tiny"]}}
        )
    )
    order = random.permutation(len(test_ids))  # each run may list the ids in its own order
    member = Member(
        "tiny", np.asarray(test_ids)[order], probabilities_table(len(test_ids), 4, random)
    )
    if validated:
        member = member._replace(
            validation_ids=validation_ids,
            validation_labels=labels,
            validation=probabilities_table(len(labels), 4, random, right=labels),
        )
    probabilities.save(folder, member)


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """Two validated runs of the pair sweep, as collected from Kaggle."""
    monkeypatch.chdir(tmp_path)
    labels = np.arange(40) % 4
    validation_ids = [f"v{index}" for index in range(40)]
    test_ids = [f"t{index}" for index in range(30)]
    for seed, size in enumerate(PAIR_SIZES):
        synthetic_run(
            tmp_path / "runs", f"petals-pair-{size}", size, validation_ids, labels, test_ids, seed
        )
    return tmp_path / "runs"


def test_runs_are_aligned_by_id(runs):
    entries = blend.align(blend.gather(runs, ["petals-pair-32", "petals-pair-64"]))
    first, second = (entry.member for entry in entries)
    assert first.test_ids.tolist() == second.test_ids.tolist()
    original = probabilities.read(probabilities.paths(runs / "petals-pair-64" / "v1")[0])
    row = original.test_ids.tolist().index(first.test_ids[0])
    assert np.array_equal(second.test[0], original.test[row])


def test_different_ids_give_one_line(runs, capsys):
    member = probabilities.read(probabilities.paths(runs / "petals-pair-64" / "v1")[0])
    probabilities.save(
        runs / "petals-pair-64" / "v1",
        member._replace(validation_ids=np.array(["other", *member.validation_ids[1:]])),
    )
    assert build.main(["blend", "--sweep", str(pair_sweep_file(runs.parent))]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert error.startswith(
        "error: petals-pair-64/v1 tiny saw other validation ids than "
        "petals-pair-32/v1 tiny: 1 missing, 1 extra (e.g. "
    )
    assert not (runs / "pair-blend").exists()


def test_runs_trained_on_validation_join_only_with_a_fixed_share(runs, capsys, tmp_path):
    member = probabilities.read(probabilities.paths(runs / "petals-pair-32" / "v1")[0])
    synthetic_run(
        runs, "petals-pair-recipe", 32, None, None, member.test_ids.tolist(), 7, validated=False
    )
    sweep = tmp_path / "with-recipe.toml"
    sweep.write_text(
        pair_sweep_file(tmp_path).read_text() + "[variants.recipe]\nTRAIN_ON_VALIDATION = true\n"
    )
    assert build.main(["blend", "--sweep", str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "trained on val  left out" in printed
    left_out = json.loads((runs / "pair-blend" / "blend-1" / "metrics.json").read_text())
    assert left_out["left_out"] == ["petals-pair-recipe/v1:tiny"]
    assert build.main(["blend", "--sweep", str(sweep), "--trained-on-validation-share", "0.3"]) == 0
    joined = json.loads((runs / "pair-blend" / "blend-2" / "metrics.json").read_text())
    assert joined["blend_weights"]["petals-pair-recipe/v1:tiny"] == pytest.approx(0.3)
    assert sum(joined["blend_weights"].values()) == pytest.approx(1)
    # The validated runs' honest score is the same with or without the fixed share.
    assert joined["blend_f1"] == left_out["blend_f1"]


def test_submitting_a_blend_checks_the_client_first(runs, capsys, monkeypatch):
    """`blend --submit` talks to Kaggle as `submit` does: an old client is refused in one line
    before any blend is written."""
    import importlib.metadata

    installed = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "2.2.3" if name == "kaggle" else installed(name),
    )
    assert build.main(["blend", "--sweep", str(pair_sweep_file(runs.parent)), "--submit"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "the kaggle client 2.2.3 is older than" in error
    assert not (runs / "pair-blend").exists()


def test_members_of_different_images_are_named(runs, capsys):
    """One line when the members ran on more than one image; none while they share one."""

    def set_images(*fingerprints):
        for slug, fingerprint in zip(
            ("petals-pair-32", "petals-pair-64"), fingerprints, strict=True
        ):
            path = runs / slug / "v1" / "metrics.json"
            metrics = json.loads(path.read_text())
            path.write_text(json.dumps({**metrics, "image": {"fingerprint": fingerprint}}))

    def image_lines():
        assert build.main(["blend", "--sweep", str(pair_sweep_file(runs.parent))]) == 0
        return [line for line in capsys.readouterr().out.splitlines() if "images" in line]

    set_images("aaaaaaaaaaaa", "aaaaaaaaaaaa")
    assert image_lines() == []
    set_images("aaaaaaaaaaaa", "bbbbbbbbbbbb")
    assert image_lines() == [
        "the members come from different images: aaaaaaaaaaaa: petals-pair-32/v1; "
        "bbbbbbbbbbbb: petals-pair-64/v1"
    ]


def test_the_newest_run_is_the_highest_version_and_a_partial_one_names_what_is_missing(
    runs, capsys
):
    """v10 is newer than v9 whatever the files' times say; a version collected with a problem
    is passed over; a partial run's finished models join and the missing one is named."""
    import os

    variant = runs / "petals-pair-64"
    (variant / "v1").rename(variant / "v10")
    member = probabilities.read(probabilities.paths(variant / "v10")[0])
    for name in ("v9", "v11"):
        (variant / name).mkdir()
        probabilities.save(variant / name, member)
    old = os.path.getmtime(variant / "v9" / "probabilities-tiny.npz") - 3600
    for path in (variant / "v10").iterdir():
        os.utime(path, (old, old))  # older files than v9's: a copy or a restore does that
    (variant / "v11" / "collected.json").write_text(
        json.dumps({"status": "COMPLETE", "problem": "invalid submission.csv: 3 rows"})
    )
    assert blend.newest_run(variant) == variant / "v10"
    # Stopped after its first model: tiny finished, tiny_wide did not.
    (variant / "v10" / "metrics.json").write_text(
        json.dumps(
            {
                "parameters": {"IMAGE_SIZE": 64, "BACKBONES": ["tiny", "tiny_wide"]},
                "complete": False,
                "members": ["tiny"],
            }
        )
    )
    entries = blend.gather(runs, ["petals-pair-32", "petals-pair-64"])
    assert [entry.run for entry in entries] == ["petals-pair-32/v1", "petals-pair-64/v10"]
    assert (
        "petals-pair-64/v10: partial, 1 of 2 models, tiny_wide missing; its finished models join"
        in capsys.readouterr().out
    )
