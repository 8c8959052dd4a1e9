"""The notebook's figures: each built as a matplotlib Figure, then saved as a PNG in OUTPUT_DIR by
`save`, which returns what the notebook displays inline (the same PNG).

Every figure has a title, labelled axes and, where one model is shown, the model's name. Class
names are wrapped so that long flower names ("hard-leaved pocket orchid") do not run into each
other, and figures stay readable at the competition's 104 classes: above `MATRIX_LABEL_LIMIT`
classes the confusion matrix loses its tick labels and a ranked chart of the most-confused pairs
names the classes instead.
"""

import io
import math
import os
import textwrap

import matplotlib
import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from petals import CLASSES
from petals.files import write_atomically

# Figures are built with the object API (no pyplot state), so nothing depends on a display.
matplotlib.rcParams["figure.dpi"] = 80
# Above this many classes the matrix's tick labels would overlap: the ranked pairs name them.
MATRIX_LABEL_LIMIT = 20
# Characters per line of a class name under an image or on a chart.
NAME_WIDTH = 18
# Characters per line of a title under an image that starts with "predicted: " or "true: ".
TITLE_WIDTH = 26
# How the metrics Keras records read on an axis; other metrics keep their key.
METRIC_LABELS = {
    "loss": "loss (cross-entropy)",
    "accuracy": "accuracy",
    "sparse_categorical_accuracy": "accuracy",
    "f1": "macro F1",
    "f1_score": "macro F1",
    "macro_f1": "macro F1",
}
# Keys of a Keras history that are not metrics of the model.
NOT_METRICS = ("learning_rate", "lr")


def class_name(label, names=CLASSES):
    """The name of a class, or its number when `names` has none for it."""
    return names[label] if 0 <= label < len(names) else str(label)


def wrapped(text, width=NAME_WIDTH):
    """`text` broken into lines of at most `width` characters (words kept whole)."""
    return "\n".join(textwrap.wrap(text, width)) or text


def with_model(title, model_name):
    """`title — model_name`, or the title alone when there is no model to name."""
    return f"{title} — {model_name}" if model_name else title


class SavedFigure:
    """A figure written as a PNG, which Jupyter, nbconvert and Kaggle display inline.

    `_repr_png_` hands IPython the bytes written to disk, so the notebook shows exactly the file;
    a plain matplotlib Figure would only print its repr, since the notebook builds figures with
    the object API and registers no pyplot backend.
    """

    def __init__(self, figure, path, png):
        self.figure, self.path, self.png = figure, path, png

    def _repr_png_(self):
        return self.png

    def __repr__(self):
        return f"<figure saved as {os.path.basename(self.path)}>"


def save(figure, output_dir, name):
    """Write `figure` as OUTPUT_DIR/name.png (readable by all, 0644) and return it as a
    SavedFigure, which `display` shows inline.

    Written atomically (petals.files), so a failure leaves no truncated PNG. When several
    processes share a run (petals.hosts), every one calls this (it learns whether process 0's
    write failed) and process 0 alone writes.
    """
    path = os.path.join(output_dir, f"{name}.png")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    write_atomically(
        path, lambda handle: handle.write(buffer.getvalue()), overwrite=True, binary=True
    )
    return SavedFigure(figure, path, buffer.getvalue())


def integer_epochs(axes):
    """Epochs are whole numbers: no 2.5 on the epoch axis."""
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def schedule(rates, title="Learning-rate schedule"):
    """The learning rate of each epoch (1-based, as Keras prints them), peak marked."""
    rates = np.asarray(rates, dtype=float)
    epochs = np.arange(1, len(rates) + 1)
    figure = Figure(figsize=(7, 3.2), layout="constrained")
    axes = figure.subplots()
    axes.plot(epochs, rates, marker="o")
    peak = int(np.argmax(rates))
    axes.annotate(
        f"peak {rates[peak]:.2g} (epoch {peak + 1})",
        (epochs[peak], rates[peak]),
        textcoords="offset points",
        xytext=(8, -12),
        fontsize=9,
    )
    axes.set(xlabel="epoch", ylabel="learning rate", title=title)
    axes.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    axes.set_ylim(0, rates.max() * 1.15 if rates.size and rates.max() > 0 else 1)
    integer_epochs(axes)
    axes.grid(alpha=0.3)
    return figure


def training_curves(history, model_name=None):
    """Loss and every metric per epoch, training against validation, one panel each.

    `history` is a Keras `History.history`: {"loss": [...], "val_loss": [...], "accuracy": ...}.
    """
    metrics = ["loss"] + [
        key for key in history if not key.startswith("val_") and key not in ("loss", *NOT_METRICS)
    ]
    figure = Figure(figsize=(5 * len(metrics), 3.6), layout="constrained")
    for axes, metric in zip(
        figure.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True
    ):
        for prefix, label in (("", "training"), ("val_", "validation")):
            values = history.get(prefix + metric)
            if values:
                axes.plot(np.arange(1, len(values) + 1), values, marker="o", label=label)
        axes.set(
            xlabel="epoch",
            ylabel=METRIC_LABELS.get(metric, metric),
            title=METRIC_LABELS.get(metric, metric),
        )
        integer_epochs(axes)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(with_model("Training curves", model_name))
    return figure


def most_confused(matrix, classes, names=CLASSES, count=20):
    """The `count` largest off-diagonal cells of a confusion matrix, largest first.

    Returns (true name, predicted name, images) triples; ties keep matrix order.
    """
    matrix = np.asarray(matrix)
    off_diagonal = matrix * (1 - np.eye(len(matrix), dtype=matrix.dtype))
    order = np.argsort(-off_diagonal, axis=None, kind="stable")[:count]
    pairs = []
    for flat in order:
        true_index, predicted_index = np.unravel_index(flat, matrix.shape)
        if off_diagonal[true_index, predicted_index] == 0:
            break
        pairs.append(
            (
                class_name(int(classes[true_index]), names),
                class_name(int(classes[predicted_index]), names),
                int(off_diagonal[true_index, predicted_index]),
            )
        )
    return pairs


def score_line(scores):
    """`macro F1 0.987 · precision 0.988 · recall 0.986`, or '' without scores."""
    if not scores:
        return ""
    return "macro F1 {f1:.3f} · precision {precision:.3f} · recall {recall:.3f}".format(**scores)


def confusion(matrix, classes, names=CLASSES, scores=None, model_name=None, pairs=20):
    """Row-normalised confusion matrix with a colour bar; F1, precision and recall in the title.

    Up to MATRIX_LABEL_LIMIT classes the rows and columns carry the class names. Above that, 104
    names on each axis cannot be read: the matrix keeps its overall picture (a clean diagonal or
    not, with class numbers on the axes) and a second panel ranks the `pairs` most-confused
    pairs by name, "true → predicted", which is what a reader wants from it.
    """
    matrix = np.asarray(matrix)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    labelled = len(classes) <= MATRIX_LABEL_LIMIT
    if labelled:
        size = max(5.0, 0.42 * len(classes) + 2.5)
        figure = Figure(figsize=(size + 1.2, size), layout="constrained")
        matrix_axes = figure.subplots()
    else:
        figure = Figure(figsize=(16, 8), layout="constrained")
        matrix_axes, pairs_axes = figure.subplots(1, 2, width_ratios=[1, 1.1])
    # A square-root colour scale: a 5 % confusion is still visible beside a 95 % diagonal.
    image = matrix_axes.imshow(normalised, cmap="Reds", norm=PowerNorm(0.5, vmin=0, vmax=1))
    figure.colorbar(image, ax=matrix_axes, shrink=0.8, label="share of the true class's images")
    if labelled:
        ticks = np.arange(len(classes))
        labels = [wrapped(class_name(int(label), names), 16) for label in classes]
        matrix_axes.set_xticks(ticks, labels, rotation=90, fontsize=8)
        matrix_axes.set_yticks(ticks, labels, fontsize=8)
        for row, column in zip(*np.nonzero(matrix), strict=True):
            matrix_axes.text(
                column,
                row,
                int(matrix[row, column]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if normalised[row, column] > 0.5 else "black",
            )
        matrix_axes.set(xlabel="predicted class", ylabel="true class")
    else:
        matrix_axes.set(
            xlabel="predicted class (index in the class list)",
            ylabel="true class (index in the class list)",
            title=f"{len(classes)} classes",
        )
        _confused_pairs_chart(pairs_axes, most_confused(matrix, classes, names, pairs))
    figure.suptitle(
        "\n".join(
            line
            for line in (with_model("Confusion matrix", model_name), score_line(scores))
            if line
        )
    )
    return figure


def _confused_pairs_chart(axes, pairs):
    """Horizontal bars, the most-confused pair on top, labelled 'true → predicted'."""
    axes.set(
        title=f"The {len(pairs)} most-confused pairs" if pairs else "No confusions",
        xlabel="validation images predicted wrongly",
    )
    if not pairs:
        axes.set_yticks([])
        return
    positions = np.arange(len(pairs))[::-1]
    counts = [count for _, _, count in pairs]
    axes.barh(positions, counts, color="tab:red")
    axes.set_yticks(
        positions, [f"{true} → {predicted}" for true, predicted, _ in pairs], fontsize=9
    )
    axes.set_ylabel("true → predicted")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for position, count in zip(positions, counts, strict=True):
        axes.text(count, position, f" {count}", va="center", fontsize=8)


def _ranked_bars(axes, values, labels, colors, value_format):
    """Horizontal bars, the first value on top, each labelled and its value written at its end.

    Every class keeps its name: above MATRIX_LABEL_LIMIT bars the font shrinks and the figure
    grows (`ranked_height`), so that 104 flower names stay legible.
    """
    positions = np.arange(len(values))[::-1]
    axes.barh(positions, values, color=colors)
    small = len(values) > MATRIX_LABEL_LIMIT
    axes.set_yticks(positions, labels, fontsize=7 if small else 9)
    axes.set_ylim(-0.6, len(values) - 0.4)
    for position, value in zip(positions, values, strict=True):
        axes.text(
            value,
            position,
            " " + value_format.format(value),
            va="center",
            fontsize=6 if small else 8,
        )
    axes.grid(axis="x", alpha=0.3)


def ranked_height(bars):
    """Inches for a chart of `bars` labelled bars: about 0.14 inch a bar, at least 3."""
    return max(3.0, 0.14 * bars + 1.2)


def class_histogram(labels, names=CLASSES, title="Training images per class"):
    """Images per class, most frequent first, every class named; the mean marked.

    Classes with no image (the demo uses 10 of the 104 flower names) are left out.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(names))
    classes = [label for label in np.argsort(-counts, kind="stable") if counts[label]]
    values = counts[classes]
    figure = Figure(figsize=(8, ranked_height(len(classes))), layout="constrained")
    axes = figure.subplots()
    _ranked_bars(
        axes, values, [class_name(int(label), names) for label in classes], "tab:blue", "{:d}"
    )
    axes.axvline(
        values.mean(), color="black", linestyle="--", linewidth=1, label=f"mean {values.mean():.0f}"
    )
    axes.legend(loc="lower right")
    axes.set(xlabel="images", ylabel="class")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(
        f"{title}: {values.sum():,} images in {len(classes)} classes, "
        f"{values.min()} to {values.max()} per class"
    )
    return figure


def per_class_f1(rows, names=CLASSES, model_name=None, worst=10):
    """F1 of every class, worst first; the `worst` lowest in red.

    `rows` are (class, F1, validation images) triples, lowest F1 first, as
    petals.evaluate.per_class_f1 returns them. Each bar is labelled with the class name and its
    number of validation images: a low F1 on three images says less than on thirty.
    """
    figure = Figure(figsize=(8, ranked_height(len(rows))), layout="constrained")
    axes = figure.subplots()
    labels = [f"{class_name(int(label), names)} ({support})" for label, _, support in rows]
    colors = ["tab:red" if index < worst else "tab:green" for index in range(len(rows))]
    _ranked_bars(axes, [f1 for _, f1, _ in rows], labels, colors, "{:.2f}")
    axes.set(xlabel="F1 on validation", ylabel="class (validation images)", xlim=(0, 1.12))
    figure.suptitle(
        with_model("F1 per class, worst first", model_name)
        + f"\nthe {min(worst, len(rows))} worst in red"
    )
    return figure


def image_grid(images, titles, colors=None, columns=6, title=None):
    """Images in a grid with a (wrapped, multi-line) title each; `colors` colour the titles."""
    rows = max(1, math.ceil(len(images) / columns))
    lines = max((title_text.count("\n") + 1 for title_text in titles), default=1)
    figure = Figure(
        figsize=(2.2 * columns, (2.0 + 0.18 * lines) * rows + 0.5), layout="constrained"
    )
    for index, axes in enumerate(figure.subplots(rows, columns, squeeze=False).ravel()):
        axes.axis("off")
        if index < len(images):
            axes.imshow(np.asarray(images[index]).astype(np.uint8))
            axes.set_title(
                titles[index], fontsize=9, color=colors[index] if colors is not None else "black"
            )
    if title:
        figure.suptitle(title)
    return figure


def batch(images, labels, names=CLASSES, count=18, title="A training batch"):
    """The first `count` images of a batch, each titled with its (wrapped) class name."""
    count = min(count, len(images))
    return image_grid(
        images[:count],
        [wrapped(class_name(int(label), names)) for label in labels[:count]],
        title=title,
    )


def samples(validation_images, validation_labels, test_images, test_ids, names=CLASSES, count=6):
    """The first `count` validation images (with their class) above the first test images (with
    their id): what the model is scored on and what it predicts for the submission."""
    count = min(count, len(validation_images), len(test_images))
    images = [*validation_images[:count], *test_images[:count]]
    titles = [
        wrapped("val: " + class_name(int(label), names), TITLE_WIDTH)
        for label in validation_labels[:count]
    ]
    titles += [f"test id {record_id}" for record_id in test_ids[:count]]
    return image_grid(
        images, titles, columns=count, title="Validation images (top) and test images (bottom)"
    )


def mistakes_first(true_labels, predicted_labels):
    """Indices of the wrong predictions, then of the right ones, each in their original order."""
    wrong = np.asarray(true_labels) != np.asarray(predicted_labels)
    return np.concatenate([np.flatnonzero(wrong), np.flatnonzero(~wrong)])


def predictions(images, true_labels, predicted_labels, names=CLASSES, count=18, model_name=None):
    """Validation images with prediction and truth, the mistakes first (red), then right ones.

    Pass more images than `count` (a few hundred): the mistakes among them are shown first.
    """
    order = mistakes_first(true_labels, predicted_labels)[:count]
    titles, colors = [], []
    for index in order:
        truth, guess = int(true_labels[index]), int(predicted_labels[index])
        if truth == guess:
            titles.append(wrapped("right: " + class_name(guess, names), TITLE_WIDTH))
            colors.append("green")
        else:
            titles.append(
                wrapped("predicted: " + class_name(guess, names), TITLE_WIDTH)
                + "\n"
                + wrapped("true: " + class_name(truth, names), TITLE_WIDTH)
            )
            colors.append("red")
    mistakes = int(np.sum(np.asarray(true_labels) != np.asarray(predicted_labels)))
    title = with_model("Validation predictions", model_name) + (
        f": {mistakes} wrong of {len(true_labels)}, mistakes first (red)"
    )
    return image_grid([images[index] for index in order], titles, colors, title=title)


def augmentation(image, augment, draws=11, columns=6):
    """One image, then `draws` random draws of the augmentation applied to it.

    `augment` takes a float32 batch and `training=True` and returns the augmented batch (a Keras
    augmentation layer, such as petals.augment.RandomAffine, does).
    """
    image = np.asarray(image)
    repeated = np.repeat(image[None].astype(np.float32), draws, axis=0)
    augmented = np.clip(np.asarray(augment(repeated, training=True)), 0, 255)
    images = [image, *augmented]
    titles = ["original"] + [f"draw {number}" for number in range(1, draws + 1)]
    return image_grid(
        images, titles, columns=columns, title=f"Augmentation: one image under {draws} random draws"
    )
