"""Validation metrics: macro F1 (the competition's metric), precision, recall, confusion."""

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score


def scores(true_labels, predicted_labels):
    """Macro F1, precision and recall over the classes present in truth or prediction.

    Classes absent from both are left out: counting them as 0 would punish a split that simply
    does not contain them (the demo has 10 of the 104 classes).
    """
    true_labels = np.asarray(true_labels)
    predicted_labels = np.asarray(predicted_labels)
    if true_labels.shape != predicted_labels.shape or true_labels.size == 0:
        raise ValueError(
            f"need as many predictions as labels, got {predicted_labels.shape} "
            f"predictions for {true_labels.shape} labels"
        )
    arguments = {"average": "macro", "zero_division": 0}
    return {
        "f1": float(f1_score(true_labels, predicted_labels, **arguments)),
        "precision": float(precision_score(true_labels, predicted_labels, **arguments)),
        "recall": float(recall_score(true_labels, predicted_labels, **arguments)),
        "accuracy": float(np.mean(true_labels == predicted_labels)),
    }


def macro_f1(true_labels, probabilities):
    """Macro F1 of the arg-max of class probabilities, as `scores` computes it.

    Counted with numpy (F1 = 2·TP / (support + predicted) per class present), because the blend
    search calls it hundreds of times.
    """
    true_labels = np.asarray(true_labels)
    predicted_labels = np.argmax(probabilities, axis=-1)
    if true_labels.shape != predicted_labels.shape or true_labels.size == 0:
        raise ValueError(
            f"need as many predictions as labels, got {predicted_labels.shape} "
            f"predictions for {true_labels.shape} labels"
        )
    classes, indices = np.unique(
        np.concatenate([true_labels, predicted_labels]), return_inverse=True
    )
    truth, predicted = np.split(indices, 2)
    true_positives = np.bincount(truth[truth == predicted], minlength=len(classes))
    counts = np.bincount(truth, minlength=len(classes)) + np.bincount(
        predicted, minlength=len(classes)
    )
    return float(np.mean(2 * true_positives / counts))


def confusion(true_labels, predicted_labels):
    """Confusion matrix over the classes present, and those classes (rows = truth)."""
    classes = np.union1d(true_labels, predicted_labels)
    return confusion_matrix(true_labels, predicted_labels, labels=classes), classes


def per_class_f1(true_labels, predicted_labels):
    """[(class, F1, images of that class)] for every class in truth or prediction, lowest F1
    first (ties: the class with more images first, its failure is the bigger one)."""
    classes = np.union1d(true_labels, predicted_labels)
    values = f1_score(true_labels, predicted_labels, labels=classes, average=None, zero_division=0)
    support = np.array([np.sum(np.asarray(true_labels) == label) for label in classes])
    order = np.lexsort((-support, values))
    return [(int(classes[index]), float(values[index]), int(support[index])) for index in order]
