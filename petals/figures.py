"""The notebook's figures: each returned for inline display and saved as a PNG in OUTPUT_DIR."""

import math
import os

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from petals import CLASSES

# Figures are built with the object API (no pyplot state), so nothing depends on a display.
matplotlib.rcParams["figure.dpi"] = 80


def class_name(label, names=CLASSES):
    """The name of a class, or its number when `names` has none for it."""
    return names[label] if 0 <= label < len(names) else str(label)


def save(figure, output_dir, name):
    """Write `figure` as OUTPUT_DIR/name.png and return the figure for inline display."""
    path = os.path.join(output_dir, f"{name}.png")
    figure.savefig(path, bbox_inches="tight")
    return figure


def schedule(rates):
    """Learning rate per epoch."""
    figure = Figure(figsize=(6, 3))
    axes = figure.subplots()
    axes.plot(np.arange(1, len(rates) + 1), rates, marker="o")
    axes.set(xlabel="epoch", ylabel="learning rate", title="Learning-rate schedule")
    axes.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    return figure


def image_grid(images, titles, colors=None, columns=6):
    """Images in a grid with a title each (colour marks right/wrong predictions)."""
    rows = math.ceil(len(images) / columns)
    figure = Figure(figsize=(2 * columns, 2.2 * rows))
    for index, axes in enumerate(figure.subplots(rows, columns, squeeze=False).ravel()):
        axes.axis("off")
        if index < len(images):
            axes.imshow(images[index])
            axes.set_title(titles[index], fontsize=8,
                           color=colors[index] if colors is not None else "black")
    return figure


def batch(images, labels, names=CLASSES, count=18):
    """A batch of training images titled with their class."""
    count = min(count, len(images))
    return image_grid(images[:count], [class_name(int(label), names) for label in labels[:count]])


def predictions(images, true_labels, predicted_labels, names=CLASSES, count=18):
    """Validation images titled 'predicted OK' or 'predicted NO → true'."""
    count = min(count, len(images))
    titles, colors = [], []
    for truth, guess in zip(true_labels[:count], predicted_labels[:count], strict=True):
        correct = truth == guess
        title = class_name(int(guess), names) + (" [OK]" if correct else " [NO→"
                                                 + class_name(int(truth), names) + "]")
        titles.append(title)
        colors.append("green" if correct else "red")
    return image_grid(images[:count], titles, colors)


def training_curves(history):
    """Loss and accuracy per epoch, training and validation, from a Keras History.history."""
    figure = Figure(figsize=(10, 3.5))
    for axes, metric in zip(figure.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + metric)
            if values:
                axes.plot(np.arange(1, len(values) + 1), values, marker="o", label=label)
        axes.set(xlabel="epoch", title=metric)
        axes.legend()
    return figure


def confusion(matrix, classes, names=CLASSES, scores=None):
    """Row-normalised confusion matrix; the title carries F1/precision/recall."""
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(5, 0.12 * len(classes) + 3)
    figure = Figure(figsize=(size, size))
    axes = figure.subplots()
    axes.matshow(normalised, cmap="Reds")
    ticks = np.arange(len(classes))
    labels = [class_name(int(label), names) for label in classes]
    fontsize = 7 if len(classes) <= 30 else 4
    axes.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
    axes.set_yticks(ticks, labels, fontsize=fontsize)
    axes.set(xlabel="predicted", ylabel="true")
    if scores:
        axes.set_title("F1 {f1:.3f}  precision {precision:.3f}  recall {recall:.3f}"
                       .format(**scores))
    return figure
