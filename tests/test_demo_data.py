import os

import pytest

from petals import data
from petals.demo_data import write_demo_dataset


def test_layout_naming_and_refusal_to_overwrite(tmp_path):
    folder = write_demo_dataset(str(tmp_path), image_size=48, shards=3, limit=60)
    assert os.path.basename(folder) == "tfrecords-jpeg-48x48"
    for split in data.SPLITS:
        names = sorted(os.listdir(os.path.join(folder, split)))
        assert [name[:9] for name in names] == ["00-48x48-", "01-48x48-", "02-48x48-"]
    counts = [data.find_split(str(tmp_path), 48, split).count for split in data.SPLITS]
    assert counts == [36, 12, 12]
    assert [entry for entry in os.listdir(tmp_path) if entry.startswith(".")] == []
    with pytest.raises(FileExistsError):
        write_demo_dataset(str(tmp_path), image_size=48, limit=60)


def test_test_records_carry_no_class(tmp_path):
    import tensorflow as tf

    write_demo_dataset(str(tmp_path), image_size=32, shards=1, limit=20)
    path = data.find_split(str(tmp_path), 32, "test").files[0]
    record = next(iter(tf.data.TFRecordDataset(path)))
    example = tf.train.Example.FromString(record.numpy())
    assert sorted(example.features.feature) == ["id", "image"]
