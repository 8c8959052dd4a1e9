"""Each model's saved probabilities: written compact and atomically, read back checked."""

import numpy as np
import pytest

from petals import probabilities
from petals.probabilities import Member, ProbabilitiesError


def member(name="tiny", test=5, validation=4, classes=3, seed=0):
    random = np.random.default_rng(seed)

    def table(rows):
        values = random.random((rows, classes))
        return values / values.sum(axis=1, keepdims=True)

    test_ids = [f"t{index}" for index in range(test)]
    if not validation:
        return Member(name, test_ids, table(test))
    return Member(
        name,
        test_ids,
        table(test),
        [f"v{index}" for index in range(validation)],
        random.integers(0, classes, validation),
        table(validation),
    )


def test_saved_and_read_back_as_float32(tmp_path):
    original = member()
    stored = probabilities.save(tmp_path, original)
    (path,) = probabilities.paths(tmp_path)
    assert path.endswith("probabilities-tiny.npz")
    read = probabilities.read(path, original.test_ids)
    assert read.name == "tiny" and read.test.dtype == read.validation.dtype == np.float32
    assert read.test_ids.tolist() == original.test_ids
    assert np.array_equal(read.validation, original.validation.astype(np.float32))
    assert np.array_equal(read.validation_labels, original.validation_labels)
    assert np.array_equal(read.test, stored.test)
    # The same run replaces its own file (a rerun of the member), atomically.
    probabilities.save(tmp_path, member(seed=1))
    assert not np.array_equal(probabilities.read(path).test, read.test)


def test_close_classes_keep_their_order(tmp_path):
    """Two classes 2e-4 apart round to the same float16: the saved model would then predict
    the first of them, not the one it predicted, and its blend would score otherwise than it."""
    close = np.array([[0.4999, 0.5001, 0.0], [0.3, 0.2, 0.5]], np.float32)
    original = member(test=2)._replace(test=close)
    probabilities.save(tmp_path, original)
    read = probabilities.read(probabilities.paths(tmp_path)[0])
    assert read.test.argmax(axis=1).tolist() == [1, 2]


def test_older_float16_files_are_read_as_float32(tmp_path):
    """Runs before float32 saved float16: they still blend with the newer ones."""
    original = member()
    np.savez_compressed(
        tmp_path / "probabilities-tiny.npz",
        name=np.array("tiny"),
        test_ids=np.asarray(original.test_ids, str),
        test=original.test.astype(np.float16),
        validation_ids=np.asarray(original.validation_ids, str),
        validation_labels=np.asarray(original.validation_labels, np.int64),
        validation=original.validation.astype(np.float16),
    )
    read = probabilities.read(tmp_path / "probabilities-tiny.npz", original.test_ids)
    assert read.test.dtype == read.validation.dtype == np.float32
    assert np.allclose(read.test, original.test, atol=1e-3)
    assert np.allclose(read.validation, original.validation, atol=1e-3)


def test_trained_on_validation_has_test_probabilities_only(tmp_path):
    probabilities.save(tmp_path, member(validation=0))
    read = probabilities.read(probabilities.paths(tmp_path)[0])
    assert read.validation is None and read.validation_ids is None


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m._replace(test=np.full((5, 3), np.nan)), "test probabilities hold non-finite"),
        (lambda m: m._replace(test=m.test[:4]), r"shape \(4, 3\) for 5 ids"),
        (lambda m: m._replace(test_ids=["t0"] * 5), "test ids appear more than once"),
        (
            lambda m: m._replace(validation=m.validation * 2),
            "validation rows are not probabilities",
        ),
        (lambda m: m._replace(validation_labels=np.array([0, 1, 2, 3])), "one class in 0..2"),
        (lambda m: m._replace(validation=None), "come together"),
    ],
)
def test_a_broken_member_is_refused_with_one_line(tmp_path, change, message):
    with pytest.raises(ProbabilitiesError, match=message):
        probabilities.save(tmp_path, change(member()))
    assert probabilities.paths(tmp_path) == []


def test_reading_checks_the_test_ids_and_the_file(tmp_path):
    probabilities.save(tmp_path, member())
    (path,) = probabilities.paths(tmp_path)
    with pytest.raises(ProbabilitiesError, match="its 5 test ids are not the 6 test ids"):
        probabilities.read(path, [f"t{index}" for index in range(6)])
    broken = tmp_path / "probabilities-broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ProbabilitiesError, match="is not a probabilities file"):
        probabilities.read(broken)


def test_blend_of_validated_and_of_unvalidated_members():
    # "a" is right on every validation image, "b" confidently wrong: the weights searched on
    # validation must give "a" all of the blend, and its honest score is then perfect.
    right = member("a", validation=40, seed=1)
    right = right._replace(validation=np.eye(3)[right.validation_labels])
    wrong = right._replace(name="b", validation=np.eye(3)[(right.validation_labels + 1) % 3])
    blend = probabilities.search_weights([right, wrong], step=0.5)
    assert blend.weights == (1.0, 0.0) and blend.f1 == pytest.approx(1.0)
    unvalidated = [member("a", validation=0), member("b", validation=0, seed=3)]
    blend = probabilities.search_weights(unvalidated)
    assert blend.weights == (0.5, 0.5) and blend.f1 is None
    mixed = probabilities.weighted_sum(unvalidated, blend.weights)
    assert np.allclose(mixed, (unvalidated[0].test + unvalidated[1].test) / 2)
