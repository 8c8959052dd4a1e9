import os
import shutil

import numpy as np
import pytest

from petals import data, hosts
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
    with pytest.raises(data.DataError, match="no competition data found; searched") as error:
        data.find_data_root(None, candidates=(str(tmp_path / "a"), str(tmp_path / "b")))
    assert str(tmp_path / "a") in str(error.value) and str(tmp_path / "b") in str(error.value)
    assert data.find_data_root(None, candidates=(str(tmp_path / "a"), str(tmp_path))) == str(
        tmp_path
    )
    with pytest.raises(data.DataError, match="not a folder"):
        data.find_data_root(str(tmp_path / "missing"))


def test_missing_size_lists_sizes_found(tiny_dataset):
    with pytest.raises(data.DataError, match=f"sizes found: {TINY_SIZE}"):
        data.find_split(tiny_dataset, 512, "train")


def test_a_wrong_data_dir_says_to_fix_data_dir(tiny_dataset, tmp_path):
    with pytest.raises(data.DataError, match="holds no tfrecords-jpeg-SxS folder; point DATA_DIR"):
        data.find_data_root(str(tmp_path))
    size_folder = os.path.join(tiny_dataset, f"tfrecords-jpeg-{TINY_SIZE}x{TINY_SIZE}")
    with pytest.raises(data.DataError, match="set DATA_DIR to its parent"):
        data.find_data_root(size_folder)
    assert data.dataset_sizes(tiny_dataset) == [TINY_SIZE]


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
    expected = [
        tf.train.Example.FromString(record.numpy())
        .features.feature["id"]
        .bytes_list.value[0]
        .decode()
        for path in split.files
        for record in tf.data.TFRecordDataset(path)
    ]
    assert ids == expected
    batch = 20  # does not divide the split
    batches = list(data.test_dataset(split.files, TINY_SIZE, batch, len(ids)))
    # Full batches only (data parallelism needs them): the last one is padded with blanks.
    assert all(len(images) == batch for images in batches)
    assert len(batches) == -(-len(ids) // batch)
    padding = len(batches) * batch - len(ids)
    assert padding > 0 and not batches[-1].numpy()[batch - padding :].any()


def test_exclusion_filter_drops_listed_ids(tiny_dataset):
    split = data.find_split(tiny_dataset, TINY_SIZE, "val")
    ids = data.record_ids(split.files, labeled=True)
    excluded = ids[:3]
    kept = data.labels(split.files, excluded)
    assert len(kept) == split.count - 3
    all_labels = data.labels(split.files)
    np.testing.assert_array_equal(kept, all_labels[3:])
    padded = list(data.evaluation_dataset(split.files, TINY_SIZE, 16, excluded, count=len(kept)))
    evaluated = np.concatenate([labels.numpy() for _, labels in padded])
    np.testing.assert_array_equal(evaluated[: len(kept)], kept)
    assert len(evaluated) % 16 == 0 and not evaluated[len(kept) :].any()
    dropped = sum(
        len(labels) for _, labels in data.evaluation_dataset(split.files, TINY_SIZE, 16, excluded)
    )
    assert dropped == len(kept) // 16 * 16


def splits_of(root, size=TINY_SIZE):
    return {name: data.find_split(root, size, name) for name in data.SPLITS}


def test_training_batches_are_static_and_exclusions_never_appear(tiny_dataset):
    splits = splits_of(tiny_dataset)
    files = splits["train"].files
    ids = data.record_ids(files, labeled=True)
    labels = data.labels(files)
    # Exclude every record of one class: that class must never be trained on.
    excluded = [
        record_id for record_id, label in zip(ids, labels, strict=True) if label == labels[0]
    ]
    training = data.training_data(splits, TINY_SIZE, excluded_ids=excluded)
    assert training.count == len(ids) - len(excluded)
    assert training.sources[0].excluded == len(excluded)
    dataset = data.training_dataset(training, TINY_SIZE, 16, seed=1)
    seen = set()
    for images, batch_labels in dataset.take(20):  # > one epoch: the stream repeats
        assert images.shape == (16, TINY_SIZE, TINY_SIZE, 3)
        seen.update(batch_labels.numpy().tolist())
    assert labels[0] not in seen and len(seen) >= 5


def read_examples(files):
    """(id, JPEG bytes, class) of every record, in file order."""
    import tensorflow as tf

    examples = []
    for path in files:
        for record in tf.data.TFRecordDataset(path):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            examples.append(
                (
                    feature["id"].bytes_list.value[0].decode(),
                    feature["image"].bytes_list.value[0],
                    feature["class"].int64_list.value[0] if "class" in feature else None,
                )
            )
    return examples


def write_records(folder, examples, name=f"extra-{TINY_SIZE}x{TINY_SIZE}.tfrec"):
    import tensorflow as tf

    from kit.demo_data import serialize

    os.makedirs(folder, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(folder, name)) as writer:
        for record_id, jpeg, label in examples:
            writer.write(serialize(jpeg, record_id, label))


def one_pass_ids(training, seed=3, process=hosts.SINGLE):
    """The ids of one pass of the training stream (records left out must be absent)."""
    return sorted(
        data.parse_labeled(record)[2].numpy().decode()
        for record in data.training_records(training, seed=seed, process=process)
    )


@pytest.fixture
def extra_data(tiny_dataset, tmp_path):
    """Extra records beside the tiny dataset: 2 copying a val id, 2 copying a test image under a
    new id, and 8 new ones, in two layouts (a size folder's train/, and a flat folder)."""
    splits = splits_of(tiny_dataset)
    val = read_examples(splits["val"].files)
    test = read_examples(splits["test"].files)
    train = read_examples(splits["train"].files)
    fresh = [(f"new{index:06d}", jpeg, 50) for index, (_, jpeg, _) in enumerate(train[:8])]
    # A train image under a new id and class 50: only the test and val images are guarded.
    same_id = [
        (record_id, train[-1 - index][1], 60) for index, (record_id, _, _) in enumerate(val[:2])
    ]
    same_image = [(f"copy{index:05d}", jpeg, 60) for index, (_, jpeg, _) in enumerate(test[:2])]
    nested = tmp_path / "extra" / "flowers" / f"tfrecords-jpeg-{TINY_SIZE}x{TINY_SIZE}" / "train"
    write_records(str(nested), fresh[:5] + same_id)
    flat = tmp_path / "flat"
    write_records(str(flat), fresh[5:] + same_image)
    return {
        "splits": splits,
        "folders": [str(tmp_path / "extra"), str(flat)],
        "fresh": [record_id for record_id, _, _ in fresh],
        "train": [e[0] for e in train],
    }


def test_extra_records_join_training_and_the_leakage_guard_drops_copies(extra_data):
    splits = extra_data["splits"]
    training = data.training_data(splits, TINY_SIZE, extra_data=extra_data["folders"])
    names = [source.name for source in training.sources]
    assert names == ["train", extra_data["folders"][0] + "/flowers", extra_data["folders"][1]]
    counts = [(source.records, source.duplicates, source.images) for source in training.sources]
    assert counts == [(splits["train"].count, 0, splits["train"].count), (7, 2, 5), (5, 2, 3)]
    assert training.count == splits["train"].count + 8
    summary = training.summary()
    assert summary["training_images"] == training.count
    assert [source["duplicates"] for source in summary["training_sources"]] == [0, 2, 2]
    # One pass of the stream: train + the 8 new records, none of the copies.
    assert one_pass_ids(training) == sorted(extra_data["train"] + extra_data["fresh"])
    labels = {
        int(label)
        for _, label in data.training_dataset(training, TINY_SIZE, 16, seed=1)
        .unbatch()
        .take(5 * training.count)
        .as_numpy_iterator()
    }
    assert 50 in labels and 60 not in labels
    # Extras join training only; validation and test shards are never trained on.
    assert not set(training.files) & set(splits["val"].files + splits["test"].files)


def test_excluded_ids_apply_to_extras_and_val_when_trained_on(extra_data):
    splits = extra_data["splits"]
    val_ids = data.record_ids(splits["val"].files, labeled=True)
    excluded = [extra_data["fresh"][0], val_ids[5], extra_data["train"][0]]
    training = data.training_data(
        splits,
        TINY_SIZE,
        train_on_validation=True,
        extra_data=extra_data["folders"],
        excluded_ids=excluded,
    )
    assert [source.name for source in training.sources][:2] == ["train", "val"]
    assert [source.excluded for source in training.sources] == [1, 1, 1, 0]
    # With val trained on, an extra copying a val id is still dropped (it is the same record).
    assert [source.duplicates for source in training.sources] == [0, 0, 2, 2]
    assert training.count == (splits["train"].count + splits["val"].count + 8 - 3)
    expected = set(extra_data["train"] + val_ids + extra_data["fresh"]) - set(excluded)
    assert one_pass_ids(training) == sorted(expected)


def test_shares_split_every_source_by_shard_then_by_record():
    """Of 7 shards and 3 processes, 2 whole shards each and every third record of the last;
    a source of one shard (one record left out) by record: each process's share of each
    source within one shard of records (one record) of every other's."""
    train = data.Source("train", tuple(f"train-{index}" for index in range(7)), (10,) * 7)
    val = data.Source("val", ("val-0",), (9,))
    training = data.TrainingData(
        train.files + val.files, (train, val), frozenset({7 << data.POSITION_BITS | 4})
    )
    assert training.records_per_process(3) == [
        {"train": 24, "val": 3},
        {"train": 23, "val": 3},
        {"train": 23, "val": 2},
    ]
    # Process 1: shards 2 and 3 whole; of shard 6's records and val's kept ones, k = 1, 4, 7.
    assert training.share(hosts.Process(1, 3)).reads == ((2, 0, 1), (3, 0, 1), (6, 2, 3), (7, 2, 3))
    assert training.records_per_process() == [{"train": 70, "val": 8}]
    assert training.summary(3)["records_per_process"] == training.records_per_process(3)
    # A process with nothing to read would end its stream while the others wait for it.
    single = data.TrainingData(("only",), (data.Source("extra", ("only",), (1,)),))
    with pytest.raises(data.DataError, match=r"process 1 of 2 has no training.*\(1 in all"):
        data.training_records(single, process=hosts.Process(1, 2))


def test_every_process_reads_an_equal_share_of_every_source(tiny_dataset):
    """TRAIN_ON_VALIDATION (train, then val) on 2 and 3 processes: each process's pass holds
    its share of each source, as records_per_process says, whatever the shuffle; together
    they hold every record kept, each once."""
    splits = splits_of(tiny_dataset)
    val_ids = data.record_ids(splits["val"].files, labeled=True)
    training = data.training_data(splits, TINY_SIZE, True, excluded_ids=val_ids[-2:])
    for count in (2, 3):
        expected = training.records_per_process(count)
        seen = []
        for index in range(count):
            ids = [one_pass_ids(training, seed, hosts.Process(index, count)) for seed in (3, 4)]
            assert ids[0] == ids[1]
            in_val = sum(record_id in val_ids for record_id in ids[0])
            assert {"train": len(ids[0]) - in_val, "val": in_val} == expected[index]
            seen += ids[0]
        assert sorted(seen) == one_pass_ids(training)
        # Within one shard of records by shard (2 processes, 2 shards a source), within one
        # record by record (3 processes).
        for source in training.sources:
            shares = [records[source.name] for records in expected]
            limit = max(source.file_records) if count == 2 else 1
            assert max(shares) - min(shares) <= limit, (count, source.name, shares)


def test_extra_data_is_found_by_slug_and_refused_with_one_line(extra_data, tmp_path):
    splits = extra_data["splits"]
    mounts = tmp_path / "input"
    os.makedirs(mounts / "datasets" / "someone")
    shutil.copytree(extra_data["folders"][0], mounts / "datasets" / "someone" / "more-flowers")
    shutil.copytree(extra_data["folders"][1], mounts / "older-mount")
    assert data.find_extra_folder("someone/more-flowers", str(mounts)) == str(
        mounts / "datasets" / "someone" / "more-flowers"
    )
    assert data.find_extra_folder("owner/older-mount", str(mounts)) == str(mounts / "older-mount")
    sources = data.extra_sources("someone/more-flowers", TINY_SIZE, str(mounts))
    assert [name for name, _ in sources] == ["someone/more-flowers/flowers"]
    with pytest.raises(data.DataError, match="attach the dataset nobody/nothing"):
        data.training_data(splits, TINY_SIZE, extra_data=["nobody/nothing"], input_root=str(mounts))
    with pytest.raises(
        data.DataError,
        match=f"no tfrecords-jpeg-64x64 folder .found: tfrecords-jpeg-{TINY_SIZE}x{TINY_SIZE}",
    ):
        data.extra_sources(extra_data["folders"][0], 64)
    # A flat folder of records of another size is refused when its records are read.
    with pytest.raises(data.DataError, match=f"record 0 is {TINY_SIZE}x{TINY_SIZE}, not 64x64"):
        list(
            data.scan_records(
                data.extra_sources(extra_data["folders"][1], 64)[0][1], labeled=True, image_size=64
            )
        )
    unlabeled = tmp_path / "unlabeled"
    shutil.copytree(os.path.dirname(splits["test"].files[0]), unlabeled)
    with pytest.raises(data.DataError, match="cannot be read as competition records"):
        data.training_data(splits, TINY_SIZE, extra_data=[str(unlabeled)])


def test_class_names(tiny_dataset, tmp_path):
    assert data.class_names(tiny_dataset, TINY_SIZE) == [str(digit) for digit in range(10)]
    bare = tmp_path / "bare"
    shutil.copytree(tiny_dataset, bare, ignore=shutil.ignore_patterns("*.txt", "*.csv"))
    assert data.class_names(str(bare), TINY_SIZE) is None
