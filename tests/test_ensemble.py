import numpy as np
import pytest

from petals import ensemble
from petals.evaluate import macro_f1


def test_simplex_grid_covers_the_simplex():
    grid = list(ensemble.simplex_grid(3, 0.25))
    assert len(grid) == 15  # C(4 + 2, 2)
    assert all(np.isclose(weights.sum(), 1) and (weights >= 0).all() for weights in grid)
    assert len({tuple(weights) for weights in grid}) == 15
    with pytest.raises(ValueError, match="divide 1"):
        list(ensemble.simplex_grid(2, 0.3))


def test_best_weights_finds_the_complementary_blend():
    truth = np.array([0, 1, 2, 3])
    # Model A is right on 0 and 1 only; model B right on 2 and 3 only, each unsure where wrong.
    model_a = np.array([[0.9, 0.1, 0, 0], [0.1, 0.9, 0, 0], [0.6, 0, 0.4, 0], [0.6, 0, 0, 0.4]])
    model_b = np.array([[0.4, 0.6, 0, 0], [0.6, 0.4, 0, 0], [0, 0, 0.9, 0.1], [0, 0, 0.1, 0.9]])
    assert macro_f1(truth, model_a) < 1 and macro_f1(truth, model_b) < 1
    weights, score = ensemble.best_weights([model_a, model_b], truth, step=0.1)
    assert score == 1.0
    np.testing.assert_allclose(ensemble.weighted_sum([model_a, model_b], weights).argmax(1), truth)
    assert 0 < weights[0] < 1


def test_a_useless_model_gets_no_weight():
    truth = np.array([0, 1, 0, 1])
    good = np.eye(2)[truth] * 0.8 + 0.1
    bad = np.eye(2)[1 - truth]
    weights, score = ensemble.best_weights([bad, good], truth, step=0.5)
    assert score == 1.0 and weights.tolist() == [0.0, 1.0]


def test_without_validation_weights_are_equal():
    assert np.allclose(ensemble.equal_weights(3), 1 / 3)


def test_one_model_is_a_blend_of_one():
    truth = np.array([0, 1, 1])
    weights, score = ensemble.best_weights([np.eye(2)[[0, 1, 0]]], truth)
    assert weights.tolist() == [1.0] and score == macro_f1(truth, np.eye(2)[[0, 1, 0]])


def test_halves_are_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(5), [7, 8, 9, 10, 11])
    first = ensemble.halves(labels, seed=3)
    for label in range(5):
        in_first = first[labels == label].sum()
        assert abs(2 * in_first - (labels == label).sum()) <= 1
    assert abs(2 * first.sum() - len(labels)) <= 1
    np.testing.assert_array_equal(first, ensemble.halves(labels, seed=3))
    assert not np.array_equal(first, ensemble.halves(labels, seed=4))


def test_honest_score_falls_below_the_in_sample_score_on_noise():
    """Models that know nothing: the weights searched on validation fit its noise, so scoring
    them on the images they were searched on flatters them; the other half does not."""
    random = np.random.default_rng(0)
    truth = random.integers(0, 10, size=80)
    noise = random.dirichlet(np.ones(10), size=(8, 80))
    result = ensemble.search_weights(noise, truth, step=0.25)
    weights, in_sample = ensemble.best_weights(noise, truth, step=0.25)
    assert result.weights == tuple(weights.tolist()) and result.f1_in_sample == in_sample
    assert result.f1 < result.f1_in_sample - 0.05


def test_honest_score_of_a_real_blend_stays_high():
    """Two complementary models on many images: the blend generalises across the halves."""
    random = np.random.default_rng(1)
    truth = np.tile(np.arange(4), 50)
    model_a = np.where(truth[:, None] < 2, np.eye(4)[truth] * 0.8 + 0.05, 0.25)
    model_b = np.where(truth[:, None] >= 2, np.eye(4)[truth] * 0.8 + 0.05, 0.25)
    model_a, model_b = (
        model + random.uniform(0, 0.01, model.shape) for model in (model_a, model_b)
    )
    weights, in_sample, honest = ensemble.search_weights([model_a, model_b], truth, step=0.1)
    assert in_sample == 1.0 and honest == 1.0 and 0 < weights[0] < 1


def test_one_model_has_nothing_to_tune():
    truth = np.array([0, 1, 1, 0])
    probabilities = np.eye(2)[[0, 1, 0, 0]]
    blend = ensemble.search_weights([probabilities], truth)
    assert blend.weights == (1.0,) and blend.f1 == blend.f1_in_sample == macro_f1(
        truth, probabilities
    )


def test_ties_in_f1_are_broken_by_validation_log_loss():
    """Both models are right on every image, each surer on its own half: every weight vector
    scores F1 1, and the blend of lowest log-loss is the even one, not the grid's first corner
    (all the weight on one model)."""
    truth = np.array([0, 1, 0, 1])
    sure, unsure = [0.9, 0.1], [0.6, 0.4]
    model_a = np.array([sure, sure[::-1], unsure, unsure[::-1]])
    model_b = np.array([unsure, unsure[::-1], sure, sure[::-1]])
    weights, score = ensemble.best_weights([model_a, model_b], truth, step=0.1)
    assert score == 1.0 and weights.tolist() == pytest.approx([0.5, 0.5])
