import numpy as np
import pytest

from petals import evaluate


def test_scores_on_known_predictions():
    truth = np.array([0, 0, 1, 1, 2, 2])
    guess = np.array([0, 1, 1, 1, 2, 0])
    # class 0: P 1/2 R 1/2 F1 1/2; class 1: P 2/3 R 1 F1 0.8; class 2: P 1 R 1/2 F1 2/3
    result = evaluate.scores(truth, guess)
    assert result["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert result["precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert result["recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert result["accuracy"] == pytest.approx(4 / 6)


def test_absent_classes_do_not_count():
    # 104 classes exist, only 2 appear: a perfect prediction is F1 1, not 2/104.
    assert evaluate.scores([3, 7, 7], [3, 7, 7])["f1"] == 1.0
    probabilities = np.eye(104)[[3, 7, 7]]
    assert evaluate.macro_f1([3, 7, 7], probabilities) == 1.0


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="as many predictions as labels"):
        evaluate.scores([1, 2], [1])


def test_confusion_rows_are_truth():
    matrix, classes = evaluate.confusion([5, 5, 9], [5, 9, 9])
    assert list(classes) == [5, 9]
    assert matrix.tolist() == [[1, 1], [0, 1]]


def test_macro_f1_counts_as_scores_does():
    random = np.random.default_rng(0)
    truth = random.integers(0, 12, size=300)
    probabilities = random.random((300, 104))
    probabilities[np.arange(150), truth[:150]] += 1  # half right, the rest noise
    assert evaluate.macro_f1(truth, probabilities) == pytest.approx(
        evaluate.scores(truth, probabilities.argmax(1))["f1"], abs=1e-12
    )
    with pytest.raises(ValueError, match="as many predictions as labels"):
        evaluate.macro_f1([1, 2], np.eye(3)[[1]])


def test_per_class_f1_lowest_first_with_support():
    truth = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    predicted = [0, 0, 1, 1, 1, 2, 2, 2, 0]
    rows = evaluate.per_class_f1(truth, predicted)
    # F1: class 0 = 2·2/(3+3) = 0.667, class 1 = 2·2/(2+3) = 0.8, class 2 = 2·3/(4+3) = 0.857.
    assert [(label, round(f1, 3), support) for label, f1, support in rows] == [
        (0, 0.667, 3),
        (1, 0.8, 2),
        (2, 0.857, 4),
    ]
    # A class only predicted, never true, is listed with no images and F1 0.
    assert evaluate.per_class_f1([0, 0], [0, 5])[0] == (5, 0.0, 0)
