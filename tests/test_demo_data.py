import os
import shutil

import pytest

from kit import demo_data
from kit.demo_data import submission_scores, write_demo_dataset
from petals import data
from tests.conftest import TINY_SIZE


def test_layout_naming_and_refusal_to_overwrite(tmp_path):
    folder = write_demo_dataset(str(tmp_path), image_size=48, shards=3, limit=60)
    assert os.path.basename(folder) == "tfrecords-jpeg-48x48"
    for split in data.SPLITS:
        names = sorted(os.listdir(os.path.join(folder, split)))
        assert [name[:9] for name in names] == ["00-48x48-", "01-48x48-", "02-48x48-"]
    counts = [data.find_split(str(tmp_path), 48, split).count for split in data.SPLITS]
    assert counts == [36, 12, 12]
    assert [entry for entry in os.listdir(tmp_path) if entry.startswith(".")] == []
    assert sorted(os.listdir(folder)) == ["classes.txt", "test", "test_labels.csv", "train", "val"]
    with pytest.raises(FileExistsError, match="already exists; delete it to regenerate"):
        write_demo_dataset(str(tmp_path), image_size=48, limit=60)


def test_test_records_carry_no_class(tmp_path):
    import tensorflow as tf

    write_demo_dataset(str(tmp_path), image_size=32, shards=1, limit=20)
    path = data.find_split(str(tmp_path), 32, "test").files[0]
    record = next(iter(tf.data.TFRecordDataset(path)))
    example = tf.train.Example.FromString(record.numpy())
    assert sorted(example.features.feature) == ["id", "image"]


def test_test_labels_are_held_out_beside_the_records(tmp_path):
    """test_labels.csv lists the test ids in record order with their digit: the images written
    for those ids are the digits' images (checked against a classifier fitted on train)."""
    import numpy as np

    from kit.demo_data import CLASS_NAMES

    write_demo_dataset(str(tmp_path), image_size=32, shards=2, limit=300)
    held_out = demo_data.held_out_labels(str(tmp_path), 32)
    test_files = data.find_split(str(tmp_path), 32, "test").files
    assert list(held_out) == data.record_ids(test_files)
    assert data.class_names(str(tmp_path), 32) == list(CLASS_NAMES)
    # The labels belong to the images: nearest neighbours on train images agree with them.
    train_files = data.find_split(str(tmp_path), 32, "train").files
    train_images = np.concatenate(
        [images.numpy() for images, _ in data.evaluation_dataset(train_files, 32, 1)]
    )
    test_images = np.concatenate(
        [images.numpy() for images in data.test_dataset(test_files, 32, 1, len(held_out))]
    )
    gray = [
        images.astype(np.float32).mean(axis=-1).reshape(len(images), -1)
        for images in (train_images, test_images)
    ]
    gray = [
        (vectors - vectors.mean(1, keepdims=True)) / vectors.std(1, keepdims=True)
        for vectors in gray
    ]
    nearest = np.argmax(gray[1] @ gray[0].T, axis=1)
    agreement = np.mean(data.labels(train_files)[nearest] == np.array(list(held_out.values())))
    assert agreement > 0.8


def test_the_command_keeps_a_current_folder_and_refuses_an_outdated_one(tmp_path, capsys):
    from kit.demo_data import main

    main([str(tmp_path), "--image-size", "32", "--shards", "1", "--limit", "30"])
    main([str(tmp_path), "--image-size", "32"])
    assert "exists; kept as it is" in capsys.readouterr().out
    os.remove(tmp_path / "tfrecords-jpeg-32x32" / "test_labels.csv")
    with pytest.raises(SystemExit, match="made by an older version .* delete it"):
        main([str(tmp_path), "--image-size", "32"])


def write_submission(path, ids, labels):
    path.write_text(
        "id,label\n" + "".join(f"{i},{label}\n" for i, label in zip(ids, labels, strict=True))
    )
    return str(path)


def test_submission_scores_against_held_out_labels(tmp_path):
    held_out = {f"id{index}": index % 4 for index in range(40)}
    held_out.update({f"extra{index}": 0 for index in range(10)})  # class 0: 20 of 50
    ids = list(held_out)
    right = write_submission(tmp_path / "right.csv", ids, held_out.values())
    assert submission_scores(right, held_out) == {"accuracy": 1.0, "chance": 0.4, "images": 50}
    # The same labels against the wrong ids: what a misaligned submission looks like.
    shifted = write_submission(tmp_path / "shifted.csv", ids, list(held_out.values())[1:] + [0])
    assert submission_scores(shifted, held_out)["accuracy"] < 0.4
    missing = write_submission(tmp_path / "missing.csv", ids[1:], list(held_out.values())[1:])
    with pytest.raises(ValueError, match="49 ids are not the 50 held-out test ids"):
        submission_scores(missing, held_out)


def test_held_out_labels_are_the_test_records_labels(tiny_dataset, tmp_path):
    held_out = demo_data.held_out_labels(tiny_dataset, TINY_SIZE)
    assert list(held_out) == data.record_ids(data.find_split(tiny_dataset, TINY_SIZE, "test").files)
    bare = tmp_path / "bare"
    shutil.copytree(tiny_dataset, bare, ignore=shutil.ignore_patterns("*.csv"))
    with pytest.raises(ValueError, match="no held-out test labels"):
        demo_data.held_out_labels(str(bare), TINY_SIZE)
