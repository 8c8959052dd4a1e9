"""Competition TFRecords: find them, count them, check them, and stream them with tf.data.

TensorFlow is used here for `tf.data` only; training runs on whichever Keras backend is active.
The datasets take the global batch size. When several processes share a run (petals.hosts),
each process reads its share of the records and yields its share of every batch: training
takes an equal share of every source (`TrainingData.share`: whole shards where there are enough
of them, records of the rest), validation and test every P-th record (process p keeps records
p, p + P, ...: every process then runs the same number of steps, and `hosts.in_record_order`
restores the record order of the gathered predictions).
"""

import collections
import hashlib
import math
import os
import re
import struct
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from petals import COMPETITION, hosts
from petals.parameters import DATASET_SLUG, SIZE_FOLDER, is_url, register_notebook_check

# Where Kaggle mounts the competition data, newest first (older kernels used the two later ones).
KAGGLE_DATA_ROOTS = (
    f"/kaggle/input/competitions/{COMPETITION}",
    f"/kaggle/input/{COMPETITION}",
    "/kaggle/input/flower-classification-with-tpus",
)
# Where Kaggle mounts an attached dataset `owner/name`: /kaggle/input/datasets/owner/name since
# 2026, /kaggle/input/name before. Both are searched.
KAGGLE_INPUT = "/kaggle/input"
SPLITS = ("train", "val", "test")
# A shard's name carries its record count: `NN-SxS-COUNT.tfrec`.
SHARD_NAME = re.compile(r"^\d+-(\d+)x(\d+)-(\d+)\.tfrec$")
# Serialized records are small (a JPEG each), so a deep shuffle buffer costs megabytes, not the
# gigabytes that shuffling decoded float32 images costs.
SHUFFLE_RECORDS = 2048
# Files a dataset's size folder may carry beside its splits (the demo dataset writes both): the
# class names, one per line, and the test split's labels, kept out of the test records as the
# competition keeps them.
CLASS_NAMES_FILE = "classes.txt"
# A training record's position, file index << 32 | record index, keys the records left out.
POSITION_BITS = 32

LABELED_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "class": tf.io.FixedLenFeature([], tf.int64),
    # Some labelled records carry no id; an empty id never matches an exclusion.
    "id": tf.io.FixedLenFeature([], tf.string, default_value=""),
}
UNLABELED_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "id": tf.io.FixedLenFeature([], tf.string),
}


class DataError(ValueError):
    """A problem with the dataset on disk, told in one line with what to do."""


@dataclass(frozen=True)
class Split:
    """The shards of one split and the record count their names declare."""

    name: str
    files: tuple
    count: int


def find_data_root(data_dir=None, candidates=KAGGLE_DATA_ROOTS):
    """Return the dataset root: `data_dir` if given, else the first Kaggle mount that exists.

    A given `data_dir` must hold at least one `tfrecords-jpeg-SxS` folder: an empty or wrong
    folder is a DATA_DIR mistake, told as one (not as a missing image size).
    """
    if data_dir is not None:
        dataset_sizes(data_dir)
        return str(data_dir)
    for candidate in candidates:
        if os.path.isdir(candidate):
            return candidate
    gcs_path = _kaggle_gcs_path()
    if gcs_path:
        return gcs_path
    raise DataError(
        "no competition data found; searched "
        + ", ".join(candidates)
        + " and KaggleDatasets().get_gcs_path(); attach the "
        f"'{COMPETITION}' competition or set DATA_DIR"
    )


def _kaggle_gcs_path():
    """The GCS path legacy TPU-node kernels read from, where Kaggle's helper module exists."""
    try:
        from kaggle_datasets import KaggleDatasets
    except ImportError:  # Not on Kaggle: there is no GCS copy to fall back to.
        return None
    return KaggleDatasets().get_gcs_path(COMPETITION)


def available_sizes(root):
    """Image sizes for which `root` holds a `tfrecords-jpeg-SxS` folder, ascending."""
    sizes = []
    for entry in tf.io.gfile.listdir(root):
        match = SIZE_FOLDER.match(entry.rstrip("/"))
        if match and match.group(1) == match.group(2):
            sizes.append(int(match.group(1)))
    return sorted(sizes)


def dataset_sizes(data_dir):
    """The image sizes a DATA_DIR holds; a DataError saying how to fix DATA_DIR if none."""
    if not tf.io.gfile.isdir(data_dir):
        raise DataError(
            f"DATA_DIR {data_dir!r} is not a folder; point it at the folder "
            "holding tfrecords-jpeg-SxS/"
        )
    sizes = available_sizes(data_dir)
    if sizes:
        return sizes
    name = os.path.basename(os.path.normpath(data_dir))
    hint = (
        "set DATA_DIR to its parent folder"
        if SIZE_FOLDER.match(name) or name in SPLITS
        else "point DATA_DIR at the folder that holds them (e.g. data/demo)"
    )
    raise DataError(f"DATA_DIR {data_dir!r} holds no tfrecords-jpeg-SxS folder; {hint}")


def size_folder(root, image_size):
    """The folder of `image_size` images under `root`, or a DataError listing the sizes found."""
    folder = os.path.join(root, f"tfrecords-jpeg-{image_size}x{image_size}")
    if not tf.io.gfile.isdir(folder):
        sizes = available_sizes(root)
        if not sizes:
            raise DataError(
                f"{root} holds no tfrecords-jpeg-SxS folder; point DATA_DIR at the "
                "folder that holds them"
            )
        raise DataError(
            f"no {image_size}x{image_size} images under {root} (sizes found: "
            f"{', '.join(map(str, sizes))}); set IMAGE_SIZE to one of them"
        )
    return folder


def count_records(files):
    """Total records, read from the shard names (`NN-SxS-COUNT.tfrec`), without opening them."""
    total = 0
    for path in files:
        match = SHARD_NAME.match(os.path.basename(path))
        if not match:
            raise DataError(
                f"shard {path} is not named NN-SxS-COUNT.tfrec, so its records "
                "cannot be counted; rename it"
            )
        total += int(match.group(3))
    return total


def find_split(root, image_size, split):
    """The shards of `split` at `image_size`, sorted so that test predictions keep file order."""
    folder = os.path.join(size_folder(root, image_size), split)
    files = tuple(sorted(tf.io.gfile.glob(os.path.join(folder, "*.tfrec"))))
    if not files:
        raise DataError(f"split '{split}' is empty: no *.tfrec files in {folder}")
    return Split(split, files, count_records(files))


def check_shard(path):
    """Walk a shard's record framing (headers only) and check it holds what its name says.

    A truncated or corrupt shard otherwise fails deep inside training with an error that does not
    name the file. Each record is: 8-byte length, 4-byte CRC, data, 4-byte CRC.
    """
    declared = count_records([path])
    size = tf.io.gfile.stat(path).length
    records = 0
    position = 0
    with tf.io.gfile.GFile(path, "rb") as shard:
        while position < size:
            header = shard.read(12)
            if len(header) < 12:
                raise DataError(
                    f"shard {path} is truncated after {records} records; download it again"
                )
            (length,) = struct.unpack("<Q", header[:8])
            position += 12 + length + 4
            if position > size:
                raise DataError(
                    f"shard {path} is truncated or corrupt at record {records}; download it again"
                )
            shard.seek(position)
            records += 1
    if records != declared:
        raise DataError(
            f"shard {path} holds {records} records but its name says {declared}; download it again"
        )


def check_split(split):
    """Check every shard of a split (fast: reads record headers only)."""
    for path in split.files:
        check_shard(path)


def parse_labeled(serialized):
    """Parse a train/val record into (JPEG bytes, class, id) without decoding the image."""
    example = tf.io.parse_single_example(serialized, LABELED_FEATURES)
    return example["image"], tf.cast(example["class"], tf.int32), example["id"]


def parse_unlabeled(serialized):
    """Parse a test record into (JPEG bytes, id)."""
    example = tf.io.parse_single_example(serialized, UNLABELED_FEATURES)
    return example["image"], example["id"]


def decode_image(jpeg, image_size):
    """Decode to a static [S, S, 3] uint8 tensor.

    Static shapes let XLA compile one program; uint8 keeps host memory and host-to-device traffic
    at a quarter of float32 (the model casts on the accelerator).
    """
    image = tf.io.decode_jpeg(jpeg, channels=3)
    return tf.reshape(image, [image_size, image_size, 3])


def read_records(files):
    """Serialized records of many shards, in file order (evaluation, test)."""
    return tf.data.Dataset.from_tensor_slices(list(files)).interleave(
        tf.data.TFRecordDataset,
        cycle_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def exclusion_filter(excluded_ids):
    """A tf.data predicate on parsed records (id last) dropping excluded ids; None if none."""
    if not excluded_ids:
        return None
    excluded = tf.constant(sorted(excluded_ids), dtype=tf.string)

    def keep(*record):
        return tf.logical_not(tf.reduce_any(tf.equal(record[-1], excluded)))

    return keep


def labeled_images(records, image_size, excluded_ids=(), deterministic=True, process=hosts.SINGLE):
    """Serialized train/val records → (uint8 image, class), excluded ids dropped.

    Parsing and decoding share one map stage: every stage costs per-element overhead, and one
    stage measured 10-20 % faster than two at 192 px (benchmarks/input_pipeline.py). Excluded
    records are decoded before being dropped; they are few, so that costs next to nothing.
    One `process` of several keeps every count-th record after the exclusions, and decodes
    only those.
    """

    def parse_and_decode(serialized):
        jpeg, label, record_id = parse_labeled(serialized)
        return decode_image(jpeg, image_size), label, record_id

    options = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": deterministic}
    keep = exclusion_filter(excluded_ids)
    if process.count > 1:
        parsed = records.map(parse_labeled, **options)
        if keep is not None:
            parsed = parsed.filter(keep)
        return parsed.shard(process.count, process.index).map(
            lambda jpeg, label, record_id: (decode_image(jpeg, image_size), label), **options
        )
    if keep is None:
        return records.map(lambda serialized: parse_and_decode(serialized)[:2], **options)
    return (
        records.map(parse_and_decode, **options)
        .filter(keep)
        .map(lambda image, label, record_id: (image, label), **options)
    )


@dataclass(frozen=True)
class Source:
    """One source of training records and what was left out of it.

    `file_records`: the records of each of `files`. `excluded`: records whose id is in
    EXCLUDED_IDS. `duplicates`: extra records whose id or JPEG bytes equal a validation or test
    record's (the leakage guard).
    """

    name: str
    files: tuple
    file_records: tuple
    excluded: int = 0
    duplicates: int = 0

    @property
    def records(self):
        """Records in the source's files."""
        return sum(self.file_records)

    @property
    def images(self):
        """Records trained on."""
        return self.records - self.excluded - self.duplicates


@dataclass(frozen=True)
class Share:
    """What one process of several reads of a TrainingData, one pass.

    `reads`: (file index, offset, stride) per file read; of the file's records that are not
    left out, it keeps the k-th when (k + offset) % stride == 0 (stride 1: all of them).
    `records`: source name → the records kept.
    """

    reads: tuple
    records: dict


@dataclass(frozen=True)
class TrainingData:
    """Every shard trained on, the positions of the records left out, and the per-source counts.

    `dropped` holds file index << 32 | record index, indices into `files`.
    """

    files: tuple
    sources: tuple
    dropped: frozenset = field(default_factory=frozenset)

    @property
    def count(self):
        """The number of training images, after every exclusion: what steps per epoch need."""
        return sum(source.images for source in self.sources)

    def share(self, process=hosts.SINGLE):
        """What `process` reads: an equal share of every source, deterministically.

        Of a source's n shards, the first P × (n // P) go whole, n // P to each process (a
        contiguous block); each process reads the other n % P (fewer than P) too, and keeps
        every P-th of their records, counted across them in file order. So each process's share
        of a source is within one shard of records of every other's (one record where the
        source has fewer shards than processes), and no record is read twice.
        """
        left_out = collections.Counter(position >> POSITION_BITS for position in self.dropped)
        reads, records = [], {}
        first = 0
        for source in self.sources:
            kept = [
                count - left_out[first + index] for index, count in enumerate(source.file_records)
            ]
            whole = len(kept) // process.count
            mine = range(process.index * whole, (process.index + 1) * whole)
            reads += [(first + index, 0, 1) for index in mine]
            shared = 0  # records kept in the source's shared shards so far
            for index in range(whole * process.count, len(kept)):
                offset = (shared - process.index) % process.count
                reads.append((first + index, offset, process.count))
                shared += kept[index]
            records[source.name] = sum(kept[index] for index in mine) + len(
                range(process.index, shared, process.count)
            )
            first += len(source.files)
        return Share(tuple(reads), records)

    def records_per_process(self, process_count=1):
        """Per process, the records of each source in its share (one pass): [{source: records}]."""
        return [
            self.share(hosts.Process(index, process_count)).records
            for index in range(process_count)
        ]

    def summary(self, process_count=1):
        """`training_images`, `training_sources` and `records_per_process` (for
        `process_count` processes) for metrics.json."""
        return {
            "training_images": self.count,
            "training_sources": [
                {
                    "name": source.name,
                    "files": len(source.files),
                    "records": source.records,
                    "excluded": source.excluded,
                    "duplicates": source.duplicates,
                    "images": source.images,
                }
                for source in self.sources
            ],
            "records_per_process": self.records_per_process(process_count),
        }

    def lines(self):
        """One printable line per source, then the total."""
        lines = []
        for source in self.sources:
            left_out = [
                f"{count} {what}"
                for count, what in (
                    (source.excluded, "excluded by id"),
                    (source.duplicates, "dropped: same id or image as a val/test record"),
                )
                if count
            ]
            lines.append(
                f"  {source.images:6} images from {source.name}"
                + (f" ({'; '.join(left_out)})" if left_out else "")
            )
        return [*lines, f"  {self.count:6} training images in all"]


def training_data(
    splits,
    image_size,
    train_on_validation=False,
    extra_data=(),
    excluded_ids=(),
    input_root=KAGGLE_INPUT,
):
    """What to train on: train (+ val with `train_on_validation`) + the EXTRA_DATA records.

    `splits` maps 'train', 'val', 'test' to their Split. Extra records join training only. The
    leakage guard drops every extra record whose id, or whose JPEG bytes (compared by SHA-256),
    equal a validation or test record's; EXCLUDED_IDS are dropped from every source. Competition
    shards are counted from their names and read only when there are ids to exclude; extra shards
    and, when there are extras, the val and test shards are read once (records are not decoded).
    """
    excluded_ids = set(excluded_ids)
    competition = [splits["train"]] + ([splits["val"]] if train_on_validation else [])
    extras = [
        source for entry in extra_data for source in extra_sources(entry, image_size, input_root)
    ]
    held_out_ids, held_out_digests = set(), set()
    if extras:
        for split in (splits["val"], splits["test"]):
            for record in scan_records(split.files, labeled=split.name != "test", digests=True):
                held_out_ids.add(record.id)
                held_out_digests.add(record.digest)
        held_out_ids.discard("")  # an empty id is no id
    files, sources, dropped = [], [], set()
    # (name, shards, is extra): competition shards are read only when there are ids to exclude.
    for name, source_files, extra in [(split.name, split.files, False) for split in competition] + [
        (name, source_files, True) for name, source_files in extras
    ]:
        first_index = len(files)
        files.extend(source_files)
        if not extra and not excluded_ids:
            counts = tuple(count_records([path]) for path in source_files)
            sources.append(Source(name, tuple(source_files), counts))
            continue
        file_records = collections.Counter()
        excluded = duplicates = 0
        for record in scan_records(
            source_files, labeled=True, digests=extra, image_size=image_size if extra else None
        ):
            file_records[record.file_index] += 1
            if record.id in excluded_ids:
                excluded += 1
            elif extra and (record.id in held_out_ids or record.digest in held_out_digests):
                duplicates += 1
            else:
                continue
            dropped.add((first_index + record.file_index) << POSITION_BITS | record.index)
        counts = tuple(file_records[index] for index in range(len(source_files)))
        sources.append(Source(name, tuple(source_files), counts, excluded, duplicates))
    return TrainingData(tuple(files), tuple(sources), frozenset(dropped))


def training_records(training, seed=None, process=hosts.SINGLE):
    """One pass over the serialized records of a TrainingData, shards shuffled, left-outs dropped.

    The records left out are dropped by a static hash-table lookup of their position, before
    parsing: no Python runs per record, and nothing left out is ever decoded. One `process` of
    several reads its share of every source (`TrainingData.share`); a shard that the processes
    share is read in its own order, so the records each keeps do not depend on the interleaving.
    """
    share = training.share(process)
    if process.count > 1 and not sum(share.records.values()):
        raise DataError(
            f"process {process.index} of {process.count} has no training records to read "
            f"({training.count} in all); train on more data or on fewer processes"
        )
    indices, offsets, strides = (list(column) for column in zip(*share.reads, strict=True))
    left_out = None
    if training.dropped:
        positions = tf.constant(sorted(training.dropped), dtype=tf.int64)
        left_out = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(positions, tf.ones_like(positions)),
            default_value=tf.constant(0, tf.int64),
        )

    def read(path, file_index, offset, stride):
        records = tf.data.TFRecordDataset(path)
        if left_out is not None:
            first = tf.bitwise.left_shift(file_index, POSITION_BITS)
            records = (
                records.enumerate()
                .filter(lambda index, record: tf.equal(left_out.lookup(first + index), 0))
                .map(lambda index, record: record)
            )
        if process.count > 1:
            records = (
                records.enumerate()
                .filter(lambda index, record: tf.equal((index + offset) % stride, 0))
                .map(lambda index, record: record)
            )
        return records

    files = [training.files[index] for index in indices]
    return (
        tf.data.Dataset.from_tensor_slices(
            (files, *(tf.constant(column, tf.int64) for column in (indices, offsets, strides)))
        )
        .shuffle(len(files), seed=seed)
        .interleave(
            read,
            cycle_length=tf.data.AUTOTUNE,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False,
        )
    )


def training_dataset(training, image_size, batch_size, seed=None, process=None):
    """Endless, shuffled batches of (uint8 image, class) from a TrainingData, static batch size.

    `batch_size` is the global batch; one `process` of several (default: this one, see
    petals.hosts) yields its share of it, from its share of every source.
    """
    process = process or hosts.current()
    records = training_records(training, seed, process).repeat().shuffle(SHUFFLE_RECORDS, seed=seed)
    dataset = labeled_images(records, image_size, deterministic=False)
    # drop_remainder keeps every batch the same shape, so the compiled step is reused.
    return dataset.batch(hosts.process_batch(batch_size, process), drop_remainder=True).prefetch(
        tf.data.AUTOTUNE
    )


def full_batches(dataset, batch_size, count, blank, process=hosts.SINGLE):
    """Batch `count` elements in full batches, padding the last one with `blank` elements.

    Data parallelism splits every batch evenly across the replicas and refuses a remainder
    (the test split's 7382 images leave one), and one batch shape means one compiled program.
    Callers keep the first `count` predictions. `batch_size` is the global batch; one `process`
    of several holds its share of the `count` records and is padded to as many batches of its
    share of the batch as every other process.
    """
    local_batch = hosts.process_batch(batch_size, process)
    padding = math.ceil(count / batch_size) * local_batch - hosts.record_share_size(count, process)
    if padding:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(blank).repeat(padding))
    return dataset.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(files, image_size, batch_size, excluded_ids=(), count=None, process=None):
    """Ordered batches of (uint8 image, class) for validation.

    With `count` (the number of records kept) the last batch is padded for predictions; without
    it the remainder is dropped, which is what per-epoch validation during training needs.
    `batch_size` is the global batch: one `process` of several (default: this one) yields its
    share of the records, for the model; `process=hosts.SINGLE` yields every record, e.g. to
    show images.
    """
    process = process or hosts.current()
    dataset = labeled_images(read_records(files), image_size, excluded_ids, process=process)
    if count is None:
        return dataset.batch(
            hosts.process_batch(batch_size, process), drop_remainder=True
        ).prefetch(tf.data.AUTOTUNE)
    blank = (tf.zeros([image_size, image_size, 3], tf.uint8), tf.constant(0, tf.int32))
    return full_batches(dataset, batch_size, count, blank, process)


def test_dataset(files, image_size, batch_size, count, process=None):
    """Ordered, padded batches of uint8 test images; ids come from `record_ids` in that order.

    `batch_size` is the global batch; one `process` of several (default: this one) yields its
    share of the records.
    """
    process = process or hosts.current()
    dataset = (
        read_records(files)
        .shard(process.count, process.index)
        .map(
            lambda serialized: decode_image(parse_unlabeled(serialized)[0], image_size),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    )
    return full_batches(
        dataset, batch_size, count, tf.zeros([image_size, image_size, 3], tf.uint8), process
    )


def _fields(files, parse, field_indices, excluded_ids=()):
    """Some fields of every record, in file order, without decoding any image: one array per
    index in `field_indices`, from one pass over the files."""
    dataset = read_records(files).map(parse)
    keep = exclusion_filter(excluded_ids)
    if keep is not None:
        dataset = dataset.filter(keep)
    records = list(dataset.as_numpy_iterator())
    return [np.array([record[index] for record in records]) for index in field_indices]


def labels(files, excluded_ids=()):
    """Classes of a labelled split, in the order `evaluation_dataset` yields them."""
    return labels_and_ids(files, excluded_ids)[0]


def labels_and_ids(files, excluded_ids=()):
    """(classes, record ids as str) of a labelled split, in the order `evaluation_dataset`
    yields them, read in one pass."""
    classes, ids = _fields(files, parse_labeled, (1, 2), excluded_ids)
    return classes.astype(np.int64), [value.decode() for value in ids]


def record_ids(files, labeled=False, excluded_ids=()):
    """Record ids as str, in file order (test ids for the submission)."""
    if labeled:
        return labels_and_ids(files, excluded_ids)[1]
    (ids,) = _fields(files, parse_unlabeled, (1,), excluded_ids)
    return [value.decode() for value in ids]


# --- Extra training data (EXTRA_DATA) ---------------------------------------------------------


def find_extra_folder(entry, input_root=KAGGLE_INPUT):
    """The folder an EXTRA_DATA entry names: a folder path or URL, or an attached Kaggle dataset."""
    folder = entry if is_url(entry) else os.path.expanduser(entry)
    if tf.io.gfile.isdir(folder):
        return folder
    searched = []
    if DATASET_SLUG.fullmatch(entry):
        owner, name = entry.split("/")
        searched = [
            os.path.join(input_root, "datasets", owner, name),
            os.path.join(input_root, name),
        ]
        for candidate in searched:
            if os.path.isdir(candidate):
                return candidate
    raise DataError(
        f"EXTRA_DATA entry {entry!r} is not a folder"
        + (
            f" nor an attached Kaggle dataset (searched {', '.join(searched)}); "
            f"attach the dataset {entry} to the kernel"
            if searched
            else ""
        )
        + "; give a folder path or an attached dataset's owner/name"
    )


def extra_sources(entry, image_size, input_root=KAGGLE_INPUT):
    """The sources of one EXTRA_DATA entry at `image_size`: [(name, shard paths)].

    Every `tfrecords-jpeg-SxS` folder of that size, at any depth, is one source: the *.tfrec in
    it and in its train/ and val/ (a test/ folder is unlabelled and left out). So the
    competition's own layout works, and so do sets of several sources such as
    `tf-flower-photo-tfrec/{imagenet,oxford_102,…}/tfrecords-jpeg-SxS/*.tfrec`. A folder without
    any size folder is one source of its own *.tfrec (their images' size is checked on reading).
    """
    folder = find_extra_folder(entry, input_root)
    wanted = f"tfrecords-jpeg-{image_size}x{image_size}"
    sources, sizes = [], set()
    for parent, folders, _ in sorted(tf.io.gfile.walk(folder)):
        for name in sorted(folders):
            match = SIZE_FOLDER.match(name.rstrip("/"))
            if not match:
                continue
            sizes.add(match.group(0))
            if name.rstrip("/") != wanted:
                continue
            size_path = os.path.join(parent, name)
            files = sorted(
                path
                for subfolder in ("", "train", "val")
                for path in tf.io.gfile.glob(os.path.join(size_path, subfolder, "*.tfrec"))
            )
            if not files:
                raise DataError(
                    f"EXTRA_DATA {entry!r}: {size_path} holds no *.tfrec (looked "
                    "in it and in its train/ and val/)"
                )
            relative = os.path.relpath(parent, folder)
            sources.append((entry if relative == "." else f"{entry}/{relative}", tuple(files)))
    if sources:
        return sources
    if sizes:
        raise DataError(
            f"EXTRA_DATA {entry!r} has no {wanted} folder (found: "
            f"{', '.join(sorted(sizes))}); use records of the run's IMAGE_SIZE"
        )
    files = tuple(sorted(tf.io.gfile.glob(os.path.join(folder, "*.tfrec"))))
    if not files:
        raise DataError(
            f"EXTRA_DATA {entry!r} ({folder}) holds no {wanted} folder and no "
            "*.tfrec file; point it at records in the competition's schema"
        )
    return [(entry, files)]


@dataclass(frozen=True)
class ScannedRecord:
    """What a scan reads of one record: where it is, its id and its JPEG bytes' SHA-256 (or
    None when the scan was not asked for digests)."""

    file_index: int
    index: int
    id: str
    digest: bytes | None


def scan_records(files, labeled, image_size=None, digests=False):
    """Yield a ScannedRecord per record of `files`, in order, without decoding any image.

    With `digests`, each record's JPEG bytes are hashed (SHA-256), for the leakage guard.
    With `image_size`, each record must be a labelled JPEG of that size with a class in
    0..103 (checked from the JPEG header); extra data is checked so, once, before training.
    """
    from petals import NUM_CLASSES

    features = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "id": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    if labeled:
        features["class"] = tf.io.FixedLenFeature([], tf.int64)

    def parse(serialized):
        example = tf.io.parse_single_example(serialized, features)
        shape = (
            tf.image.extract_jpeg_shape(example["image"]) if image_size else tf.zeros([3], tf.int32)
        )
        return (
            example["image"],
            example["id"],
            example.get("class", tf.constant(0, tf.int64)),
            shape,
        )

    for file_index, path in enumerate(files):
        records = tf.data.TFRecordDataset(path).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        index = 0
        try:
            for jpegs, ids, classes, shapes in records.batch(256).as_numpy_iterator():
                for jpeg, record_id, label, shape in zip(jpegs, ids, classes, shapes, strict=True):
                    if image_size and (shape[0], shape[1]) != (image_size, image_size):
                        raise DataError(
                            f"{path} record {index} is {shape[1]}x{shape[0]}, not "
                            f"{image_size}x{image_size}; use records of the run's "
                            "IMAGE_SIZE"
                        )
                    if not 0 <= label < NUM_CLASSES:
                        raise DataError(
                            f"{path} record {index} has class {label}, not one of "
                            f"0..{NUM_CLASSES - 1}"
                        )
                    yield ScannedRecord(
                        file_index,
                        index,
                        record_id.decode(),
                        hashlib.sha256(jpeg).digest() if digests else None,
                    )
                    index += 1
        except tf.errors.OpError as error:
            reason = error.message.strip().splitlines()[0] if error.message else type(error)
            raise DataError(
                f"{path} cannot be read as competition records after {index} "
                f"records ({reason}); check the file and its schema "
                "(image, class, id)"
            ) from None


# --- What a dataset may carry beside its records ----------------------------------------------


def class_names(root, image_size):
    """The class names a dataset's size folder lists in classes.txt, or None without the file."""
    path = os.path.join(size_folder(root, image_size), CLASS_NAMES_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as handle:
        names = [line.strip() for line in handle if line.strip()]
    if not names:
        raise DataError(f"{path} lists no class names; one name per line, in label order")
    return names


def _check_data_dir(parameters):
    """The sizes TensorFlow finds in DATA_DIR (gs:// too), checked against IMAGE_SIZE."""
    if parameters["DATA_DIR"] is None:
        return
    sizes = dataset_sizes(parameters["DATA_DIR"])
    if parameters["IMAGE_SIZE"] not in sizes:
        raise ValueError(
            f"IMAGE_SIZE = {parameters['IMAGE_SIZE']!r} is not valid: expected one of "
            f"{', '.join(map(str, sizes))} (the sizes in {parameters['DATA_DIR']})"
        )


def _check_extra_data(parameters):
    """Each EXTRA_DATA entry found: a folder, or a Kaggle dataset attached to the kernel."""
    for entry in parameters["EXTRA_DATA"]:  # their records are read in the data step
        extra_sources(entry, parameters["IMAGE_SIZE"])


register_notebook_check("DATA_DIR", _check_data_dir)
register_notebook_check("EXTRA_DATA", _check_extra_data)
