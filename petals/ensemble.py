"""Blend several models' class probabilities with the weights that maximise validation F1.

Weights searched on the validation images and scored on the same images flatter the blend; the
honest figure scores weights searched on one half of validation on the other half.
"""

import itertools
from typing import NamedTuple

import numpy as np

# The two functions that score import petals.evaluate themselves: scikit-learn takes about 1 s to
# import, which the local verbs that only read or add probabilities need not pay.


def simplex_grid(models, step):
    """Every weight vector of `models` non-negative entries summing to 1, in multiples of step."""
    parts = round(1 / step)
    if models < 1 or parts < 1 or not np.isclose(parts * step, 1):
        raise ValueError(f"blend grid step must divide 1 (e.g. 0.1, 0.05), got {step}")
    for cut in itertools.combinations(range(parts + models - 1), models - 1):
        bounds = (-1, *cut, parts + models - 1)
        yield np.array([bounds[i + 1] - bounds[i] - 1 for i in range(models)]) / parts


def weighted_sum(probabilities, weights):
    """Weighted sum of per-model probabilities: [models, N, classes] · [models] → [N, classes]."""
    return np.tensordot(np.asarray(weights, np.float64), np.asarray(probabilities), axes=1)


def equal_weights(models):
    """The blend without validation to search on: every model counts the same."""
    return np.full(models, 1 / models)


def best_weights(probabilities, true_labels, step=0.05):
    """Blend weights maximising macro F1 on validation; returns (weights, blended F1).

    Macro F1 counts arg-maxes, so it is flat over stretches of the grid: among the weight vectors
    tied for the best F1, the one whose blend has the lowest validation log-loss is kept (the
    first of the grid only when that ties too), rather than the grid's first corner, which would
    put all the weight on one model.
    """
    from petals.evaluate import macro_f1

    probabilities, true_labels = np.asarray(probabilities), np.asarray(true_labels)
    tied, best_score = [], -1.0
    for weights in simplex_grid(len(probabilities), step):
        score = macro_f1(true_labels, weighted_sum(probabilities, weights))
        # The same arg-maxes counted again give the same float; 1e-12 absorbs summation order.
        if score > best_score + 1e-12:
            tied, best_score = [weights], score
        elif score >= best_score - 1e-12:
            tied.append(weights)
    # Each model's probability of the true class [models, images]: a blend's log-loss is then
    # one small product per tied vector (probabilities floored at 1e-15, as log-loss is usually).
    true_class = probabilities[:, np.arange(len(true_labels)), true_labels].astype(np.float64)
    losses = [-np.mean(np.log(np.maximum(weights @ true_class, 1e-15))) for weights in tied]
    return tied[int(np.argmin(losses))], best_score


class Blend(NamedTuple):
    """Blend weights tuned on all of validation (for the submission) and two F1 figures.

    `f1_in_sample`: those weights scored on the images they were tuned on (optimistic).
    `f1`: the honest figure, weights tuned on one half of validation and scored on the other,
    both ways, averaged.
    """

    weights: tuple
    f1_in_sample: float
    f1: float


def halves(true_labels, seed=0):
    """A boolean mask splitting validation in two halves, stratified by class and seeded.

    Each class's images are shuffled, then all classes' images are dealt alternately to the two
    halves, so every class is split evenly (within one image) and the halves differ by at most
    one image.
    """
    true_labels = np.asarray(true_labels)
    random = np.random.default_rng(seed)
    dealt = np.concatenate(
        [
            random.permutation(np.flatnonzero(true_labels == label))
            for label in np.unique(true_labels)
        ]
    )
    first = np.zeros(len(true_labels), bool)
    first[dealt[::2]] = True
    return first


def search_weights(probabilities, true_labels, step=0.05, seed=0):
    """Search blend weights and report them with an in-sample and an honest F1 (see Blend).

    One model has nothing to tune: its honest F1 is its in-sample F1.
    """
    from petals.evaluate import macro_f1

    probabilities = np.asarray(probabilities)
    true_labels = np.asarray(true_labels)
    weights, in_sample = best_weights(probabilities, true_labels, step)
    honest = in_sample
    if len(probabilities) > 1:
        first = halves(true_labels, seed)
        scores = []
        for tune, score in ((first, ~first), (~first, first)):
            half_weights, _ = best_weights(probabilities[:, tune], true_labels[tune], step)
            scores.append(
                macro_f1(true_labels[score], weighted_sum(probabilities[:, score], half_weights))
            )
        honest = float(np.mean(scores))
    return Blend(tuple(float(weight) for weight in weights), float(in_sample), honest)
