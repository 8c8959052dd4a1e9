import os
import shutil

import numpy as np
import pytest

from petals import data
from tests.conftest import TINY_SIZE


def test_count_records_reads_the_names_only(tmp_path):
    names = ["00-192x192-798.tfrec", "01-192x192-798.tfrec", "15-192x192-783.tfrec"]
    for name in names:
        (tmp_path / name).write_bytes(b"")  # empty files: counting must not open them
    assert data.count_records([str(tmp_path / name) for name in names]) == 798 + 798 + 783


def test_count_records_rejects_an_unnamed_shard():
    with pytest.raises(data.DataError, match="NN-SxS-COUNT"):
        data.count_records(["/x/train.tfrec"])


def test_find_data_root_lists_searched_paths(tmp_path):
    with pytest.raises(data.DataError) as error:
        data.find_data_root(None, candidates=(str(tmp_path / "a"), str(tmp_path / "b")))
    assert str(tmp_path / "a") in str(error.value) and str(tmp_path / "b") in str(error.value)
    assert data.find_data_root(None, candidates=(str(tmp_path / "a"), str(tmp_path))) \
        == str(tmp_path)
    with pytest.raises(data.DataError, match="not a folder"):
        data.find_data_root(str(tmp_path / "missing"))


def test_missing_size_lists_sizes_found(tiny_dataset):
    with pytest.raises(data.DataError, match=f"sizes found: {TINY_SIZE}"):
        data.find_split(tiny_dataset, 512, "train")


def test_splits_and_counts(tiny_dataset):
    splits = {name: data.find_split(tiny_dataset, TINY_SIZE, name) for name in data.SPLITS}
    assert sum(split.count for split in splits.values()) == 240
    for split in splits.values():
        data.check_split(split)
        assert len(split.files) == 2


def test_empty_split(tiny_dataset, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset, root)
    for path in (root / f"tfrecords-jpeg-{TINY_SIZE}x{TINY_SIZE}" / "val").iterdir():
        path.unlink()
    with pytest.raises(data.DataError, match="split 'val' is empty"):
        data.find_split(str(root), TINY_SIZE, "val")


def test_truncated_and_miscounted_shards_are_named(tiny_dataset, tmp_path):
    split = data.find_split(tiny_dataset, TINY_SIZE, "train")
    truncated = tmp_path / os.path.basename(split.files[0])
    content = open(split.files[0], "rb").read()
    truncated.write_bytes(content[: len(content) - 100])
    with pytest.raises(data.DataError, match=f"{truncated}.*truncated"):
        data.check_shard(str(truncated))
    count = data.count_records([split.files[0]])
    miscounted = tmp_path / f"00-{TINY_SIZE}x{TINY_SIZE}-{count + 1}.tfrec"
    miscounted.write_bytes(content)
    with pytest.raises(data.DataError, match=f"holds {count} records but its name says"):
        data.check_shard(str(miscounted))


def test_schema_and_decoding(tiny_dataset):
    split = data.find_split(tiny_dataset, TINY_SIZE, "val")
    images, labels = next(iter(data.evaluation_dataset(split.files, TINY_SIZE, 8)))
    assert images.shape == (8, TINY_SIZE, TINY_SIZE, 3) and images.dtype.name == "uint8"
    assert labels.dtype.name == "int32"
    expected = data.labels(split.files)
    assert list(labels.numpy()) == list(expected[:8])
    assert len(expected) == split.count and set(expected) <= set(range(10))
    ids = data.record_ids(split.files, labeled=True)
    assert len(set(ids)) == split.count and all(len(i) == 9 and int(i, 16) >= 0 for i in ids)


def test_test_split_has_ids_in_file_order(tiny_dataset):
    import tensorflow as tf

    split = data.find_split(tiny_dataset, TINY_SIZE, "test")
    ids = data.record_ids(split.files)
    assert len(ids) == split.count == len(set(ids))
    # Shard after shard, record after record: what the predictions' order must match.
    expected = [tf.train.Example.FromString(record.numpy()).features.feature["id"]
                .bytes_list.value[0].decode()
                for path in split.files for record in tf.data.TFRecordDataset(path)]
    assert ids == expected
    batch = 20  # does not divide the split
    batches = list(data.test_dataset(split.files, TINY_SIZE, batch, len(ids)))
    # Full batches only (data parallelism needs them): the last one is padded with blanks.
    assert all(len(images) == batch for images in batches)
    assert len(batches) == -(-len(ids) // batch)
    padding = len(batches) * batch - len(ids)
    assert padding > 0 and not batches[-1].numpy()[batch - padding:].any()
    flipped = next(iter(data.test_dataset(split.files, TINY_SIZE, batch, len(ids), flip=True)))
    np.testing.assert_array_equal(flipped.numpy(), batches[0].numpy()[:, :, ::-1])


def test_exclusion_filter_drops_listed_ids(tiny_dataset):
    split = data.find_split(tiny_dataset, TINY_SIZE, "val")
    ids = data.record_ids(split.files, labeled=True)
    excluded = ids[:3]
    kept = data.labels(split.files, excluded)
    assert len(kept) == split.count - 3
    all_labels = data.labels(split.files)
    np.testing.assert_array_equal(kept, all_labels[3:])
    padded = list(data.evaluation_dataset(split.files, TINY_SIZE, 16, excluded,
                                          count=len(kept)))
    evaluated = np.concatenate([labels.numpy() for _, labels in padded])
    np.testing.assert_array_equal(evaluated[:len(kept)], kept)
    assert len(evaluated) % 16 == 0 and not evaluated[len(kept):].any()
    dropped = sum(len(labels) for _, labels in
                  data.evaluation_dataset(split.files, TINY_SIZE, 16, excluded))
    assert dropped == len(kept) // 16 * 16


def test_training_batches_are_static_and_exclusions_never_appear(tiny_dataset):
    split = data.find_split(tiny_dataset, TINY_SIZE, "train")
    ids = data.record_ids(split.files, labeled=True)
    labels = data.labels(split.files)
    # Exclude every record of one class: that class must never be trained on.
    excluded = [record_id for record_id, label in zip(ids, labels, strict=True)
                if label == labels[0]]
    dataset = data.training_dataset(split.files, TINY_SIZE, 16, excluded, seed=1)
    seen = set()
    for images, batch_labels in dataset.take(20):  # > one epoch: the stream repeats
        assert images.shape == (16, TINY_SIZE, TINY_SIZE, 3)
        seen.update(batch_labels.numpy().tolist())
    assert labels[0] not in seen and len(seen) >= 5
