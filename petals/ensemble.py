"""Blend several models' class probabilities with the weights that maximise validation F1."""

import itertools

import numpy as np

from petals.evaluate import macro_f1


def simplex_grid(models, step):
    """Every weight vector of `models` non-negative entries summing to 1, in multiples of step."""
    parts = round(1 / step)
    if models < 1 or parts < 1 or not np.isclose(parts * step, 1):
        raise ValueError(f"blend grid step must divide 1 (e.g. 0.1, 0.05), got {step}")
    for cut in itertools.combinations(range(parts + models - 1), models - 1):
        bounds = (-1, *cut, parts + models - 1)
        yield np.array([bounds[i + 1] - bounds[i] - 1 for i in range(models)]) / parts


def blend(probabilities, weights):
    """Weighted sum of per-model probabilities: [models, N, classes] · [models] → [N, classes]."""
    return np.tensordot(np.asarray(weights, np.float64), np.asarray(probabilities), axes=1)


def equal_weights(models):
    """The blend without validation to search on: every model counts the same."""
    return np.full(models, 1 / models)


def best_weights(probabilities, true_labels, step=0.05):
    """Blend weights maximising macro F1 on validation; returns (weights, blended F1).

    Among tied weight vectors the first one of the grid is kept, so the result is deterministic.
    """
    best, best_score = None, -1.0
    for weights in simplex_grid(len(probabilities), step):
        score = macro_f1(true_labels, blend(probabilities, weights))
        if score > best_score:
            best, best_score = weights, score
    return best, best_score


def flip_tta(probabilities, flipped_probabilities):
    """Average predictions on the images and their mirrors (flowers have no handedness)."""
    return (np.asarray(probabilities) + np.asarray(flipped_probabilities)) / 2
