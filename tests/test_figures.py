import numpy as np
import pytest
from matplotlib.figure import Figure

from petals import CLASSES, figures

HISTORY = {
    "loss": [2.0, 1.2, 0.8, 0.6, 0.5],
    "val_loss": [2.1, 1.4, 1.0, 0.9, 0.9],
    "accuracy": [0.3, 0.6, 0.7, 0.8, 0.85],
    "val_accuracy": [0.3, 0.5, 0.6, 0.7, 0.7],
    "learning_rate": [1e-4] * 5,
}


def drawn(figure):
    """Draw the figure (tick locators and layout run at draw time) and return it."""
    figure.canvas.draw()
    return figure


def image_axes(figure):
    """The axes that show an image, in grid order."""
    return [axes for axes in figure.axes if axes.images]


def tick_labels(axes, axis):
    return [label.get_text() for label in getattr(axes, f"get_{axis}ticklabels")()]


def test_save_writes_a_png_readable_by_all_and_displays_the_same_png(tmp_path):
    figure = figures.schedule([1e-5, 2e-5, 1e-5])
    saved = figures.save(figure, tmp_path, "schedule")
    assert saved.figure is figure
    assert [path.name for path in tmp_path.iterdir()] == ["schedule.png"]
    written = (tmp_path / "schedule.png").read_bytes()
    assert written[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "schedule.png").stat().st_mode & 0o777 == 0o644
    # What IPython's display() finds: an image/png representation, the bytes on disk.
    from IPython.core.formatters import DisplayFormatter

    shown, _ = DisplayFormatter().format(saved)
    assert shown["image/png"] == written and "schedule.png" in shown["text/plain"]


def test_class_histogram_names_every_class_most_frequent_first():
    labels = np.repeat(np.arange(104), np.arange(104) % 7 + 1)
    figure = drawn(figures.class_histogram(labels, CLASSES))
    (axes,) = figure.axes
    names = tick_labels(axes, "y")
    assert len(names) == 104 and set(names) == set(CLASSES)
    # The top bar is the most frequent class; barh draws the first value on top.
    widths = [patch.get_width() for patch in axes.patches]
    assert widths == sorted(widths, reverse=True) and widths[0] == 7
    assert "104 classes, 1 to 7 per class" in figure.get_suptitle()
    # 104 names need a tall figure (about 0.14 inch each) to stay legible.
    assert figure.get_figheight() >= 14


def test_per_class_f1_marks_the_worst_in_red():
    rows = [(3, 0.2, 5), (1, 0.5, 9), (0, 0.9, 7), (2, 1.0, 4)]
    figure = drawn(figures.per_class_f1(rows, ["a", "b", "c", "d"], "tiny", worst=2))
    (axes,) = figure.axes
    assert tick_labels(axes, "y") == ["d (5)", "b (9)", "a (7)", "c (4)"]  # top first
    colors = [tuple(patch.get_facecolor()) for patch in axes.patches]
    assert colors[0] == colors[1] != colors[2] == colors[3]
    assert "tiny" in figure.get_suptitle() and "2 worst in red" in figure.get_suptitle()


def test_samples_title_validation_by_class_and_test_by_id():
    images = np.zeros((3, 8, 8, 3), np.uint8)
    figure = figures.samples(images, [0, 1, 2], images, ["a1", "b2", "c3"], CLASSES, count=2)
    titles = [axes.get_title() for axes in image_axes(figure)]
    assert [title.replace("\n", " ") for title in titles] == [
        f"val: {CLASSES[0]}",
        f"val: {CLASSES[1]}",
        "test id a1",
        "test id b2",
    ]


def test_schedule_is_labelled_with_whole_epochs_and_its_peak():
    figure = drawn(figures.schedule([1e-5, 2e-4, 4e-4, 3e-4, 2e-4, 1e-4, 5e-5]))
    (axes,) = figure.axes
    assert axes.get_title() == "Learning-rate schedule"
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("epoch", "learning rate")
    assert all(float(tick).is_integer() for tick in axes.get_xticks())
    assert any("peak" in text.get_text() and "epoch 3" in text.get_text() for text in axes.texts)


def test_training_curves_panels_labels_model_and_integer_epochs():
    figure = drawn(figures.training_curves(HISTORY, "densenet201"))
    assert isinstance(figure, Figure)
    assert "densenet201" in figure.get_suptitle()
    # loss and accuracy, not the learning rate that Keras also records
    assert [axes.get_title() for axes in figure.axes] == ["loss (cross-entropy)", "accuracy"]
    for axes in figure.axes:
        assert axes.get_xlabel() == "epoch" and axes.get_ylabel()
        assert all(float(tick).is_integer() for tick in axes.get_xticks())
        assert [text.get_text() for text in axes.get_legend().get_texts()] == [
            "training",
            "validation",
        ]
        training, validation = axes.get_lines()
        assert list(training.get_xdata()) == [1, 2, 3, 4, 5]
    loss_axes = figure.axes[0]
    assert list(loss_axes.get_lines()[1].get_ydata()) == HISTORY["val_loss"]


def test_training_curves_without_validation_show_training_only():
    figure = figures.training_curves({"loss": [1.0, 0.5], "accuracy": [0.5, 0.7]})
    assert figure.get_suptitle() == "Training curves"
    assert all(len(axes.get_lines()) == 1 for axes in figure.axes)


def confusion_matrix(classes, pairs, correct=50):
    """A matrix with `correct` on the diagonal and the given {(true, predicted): count}."""
    matrix = np.eye(classes, dtype=int) * correct
    for (true, predicted), count in pairs.items():
        matrix[true, predicted] = count
    return matrix


def test_most_confused_ranks_off_diagonal_cells_by_count():
    matrix = confusion_matrix(104, {(3, 5): 7, (40, 2): 12, (1, 0): 3, (5, 3): 7})
    pairs = figures.most_confused(matrix, np.arange(104), CLASSES, count=3)
    assert pairs == [
        (CLASSES[40], CLASSES[2], 12),
        (CLASSES[3], CLASSES[5], 7),
        (CLASSES[5], CLASSES[3], 7),
    ]
    # Fewer confusions than asked for: only real ones, never a diagonal cell.
    assert len(figures.most_confused(matrix, np.arange(104), CLASSES, count=50)) == 4


def test_confusion_of_few_classes_names_rows_and_columns_with_a_colour_bar():
    classes = np.array([0, 1, 2, 7])
    matrix = confusion_matrix(4, {(0, 1): 3})
    figure = drawn(
        figures.confusion(
            matrix,
            classes,
            CLASSES,
            model_name="tiny",
            scores={"f1": 0.9, "precision": 0.91, "recall": 0.89},
        )
    )
    (axes,) = image_axes(figure)
    assert axes.images[0].colorbar is not None
    assert axes.images[0].colorbar.ax.get_ylabel() == "share of the true class's images"
    assert tick_labels(axes, "x")[3] == "bird of paradise"  # class 7
    assert tick_labels(axes, "y")[1] == "hard-leaved\npocket orchid"
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("predicted class", "true class")
    assert "tiny" in figure.get_suptitle() and "macro F1 0.900" in figure.get_suptitle()
    # Rows are normalised by the true class: 3 of 53 images of class 0 went to class 1.
    assert axes.images[0].get_array()[0, 1] == pytest.approx(3 / 53)


def test_confusion_of_104_classes_ranks_pairs_instead_of_104_tick_labels():
    matrix = confusion_matrix(104, {(3, 5): 7, (40, 2): 12, (1, 0): 3})
    figure = drawn(figures.confusion(matrix, np.arange(104), CLASSES, model_name="blend"))
    (matrix_axes,) = image_axes(figure)
    assert matrix_axes.images[0].colorbar is not None
    assert not any(name in tick_labels(matrix_axes, "x") for name in CLASSES)
    assert matrix_axes.get_xlabel().startswith("predicted") and matrix_axes.get_ylabel()
    (pairs_axes,) = [axes for axes in figure.axes if axes.patches]
    # Read top to bottom, the bars rank the pairs, most confused first.
    ranked = sorted(
        zip(pairs_axes.get_yticks(), tick_labels(pairs_axes, "y"), strict=True), reverse=True
    )
    assert [label for _, label in ranked] == [
        f"{CLASSES[40]} → {CLASSES[2]}",
        f"{CLASSES[3]} → {CLASSES[5]}",
        f"{CLASSES[1]} → {CLASSES[0]}",
    ]
    widths = sorted(((bar.get_y(), bar.get_width()) for bar in pairs_axes.patches), reverse=True)
    assert [width for _, width in widths] == [12, 7, 3]
    assert pairs_axes.get_xlabel() and pairs_axes.get_ylabel() == "true → predicted"


def test_mistakes_first_keeps_the_order_within_each_group():
    order = figures.mistakes_first([0, 1, 2, 3, 4, 5], [0, 2, 2, 0, 4, 1])
    assert list(order) == [1, 3, 5, 0, 2, 4]


def test_predictions_show_mistakes_first_with_true_and_predicted_names():
    images = np.stack([np.full((8, 8, 3), index, np.uint8) for index in range(6)])
    true_labels = np.array([0, 1, 2, 3, 4, 5])
    predicted = np.array([0, 1, 6, 3, 1, 5])  # images 2 and 4 are wrong
    figure = figures.predictions(
        images, true_labels, predicted, CLASSES, count=4, model_name="blend"
    )
    shown = image_axes(figure)
    assert [int(axes.images[0].get_array()[0, 0, 0]) for axes in shown] == [2, 4, 0, 1]
    titles = [axes.get_title() for axes in shown]
    assert titles[0] == "predicted: moon orchid\ntrue: canterbury bells"
    assert [axes.title.get_color() for axes in shown] == ["red", "red", "green", "green"]
    assert titles[2] == "right: pink primrose"
    assert "blend" in figure.get_suptitle() and "2 wrong of 6" in figure.get_suptitle()


def test_long_names_are_wrapped_under_images():
    labels = np.array([CLASSES.index("hard-leaved pocket orchid"), 0])
    figure = figures.batch(np.zeros((2, 8, 8, 3), np.uint8), labels, CLASSES)
    title = image_axes(figure)[0].get_title()
    assert "\n" in title and max(map(len, title.splitlines())) <= figures.NAME_WIDTH
    assert figure.get_suptitle() == "A training batch"


def test_augmentation_shows_the_original_then_each_draw():
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    calls = []

    def shift(batch, training):
        calls.append((batch.shape, batch.dtype, training))
        return batch + np.arange(len(batch))[:, None, None, None]  # draw n: image + n

    figure = figures.augmentation(image, shift, draws=3)
    assert calls == [((3, 4, 4, 3), np.float32, True)]
    shown = image_axes(figure)
    assert [axes.get_title() for axes in shown] == ["original", "draw 1", "draw 2", "draw 3"]
    assert np.array_equal(shown[0].images[0].get_array(), image)
    assert np.array_equal(shown[3].images[0].get_array(), image + 2)
    assert "3 random draws" in figure.get_suptitle()
