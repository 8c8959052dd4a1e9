"""A small dataset in the exact competition format, made offline from real images.

The images are scikit-learn's handwritten digits (8x8 scans of real handwriting), upscaled and
tinted to RGB JPEGs: stand-in classes 0-9, not flowers. The layout, shard naming with counts,
record schema and 9-hex-character ids are the competition's, so the notebook runs on it unchanged.
Beside the splits, the size folder carries what the competition's data does not: `classes.txt`
(the digits' names, which the notebook uses when CLASS_NAMES is None) and `test_labels.csv`, the
test split's labels kept out of the test records (which stay unlabelled, like the
competition's), so a smoke test can score a submission (`submission_scores`).
"""

import argparse
import csv
import io
import os
import shutil
import sys
import tempfile

import numpy as np
from PIL import Image

# The demo's test labels, held out of its test records: what the tests score submissions with.
TEST_LABELS_FILE = "test_labels.csv"

SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
CLASS_NAMES = tuple(str(digit) for digit in range(10))


def digit_images(image_size, seed=0):
    """Digits as uint8 RGB [N, S, S, 3] with their labels, each tinted a random colour."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    random = np.random.default_rng(seed)
    images = []
    for pixels in digits.images:
        gray = Image.fromarray((pixels * (255 / 16)).astype(np.uint8))
        gray = np.asarray(gray.resize((image_size, image_size), Image.BILINEAR), np.float32) / 255
        ink = random.uniform(0.4, 1.0, size=3)
        paper = random.uniform(0.0, 0.3, size=3)
        rgb = paper + gray[..., None] * (ink - paper)
        images.append((rgb * 255).round().astype(np.uint8))
    return np.stack(images), digits.target.astype(np.int64)


def unique_ids(count, random):
    """`count` distinct 9-hex-character ids like the competition's (e.g. a762df180)."""
    ids = set()
    while len(ids) < count:
        ids.add(f"{int(random.integers(0, 16**9)):09x}")
    # Sorted first: a set's order varies between interpreter runs, the seeded shuffle does not.
    return [str(record_id) for record_id in random.permutation(sorted(ids))]


def encode_jpeg(image, quality=95):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def serialize(jpeg, record_id, label=None):
    """One tf.train.Example with the competition's schema (test records carry no class)."""
    import tensorflow as tf

    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[record_id.encode()])),
    }
    if label is not None:
        feature["class"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_split(folder, image_size, images, labels, ids, shards):
    """Write `shards` files named NN-SxS-COUNT.tfrec, as the competition names them."""
    import tensorflow as tf

    os.makedirs(folder)
    for index, part in enumerate(np.array_split(np.arange(len(images)), shards)):
        name = f"{index:02d}-{image_size}x{image_size}-{len(part)}.tfrec"
        with tf.io.TFRecordWriter(os.path.join(folder, name)) as writer:
            for row in part:
                label = None if labels is None else labels[row]
                writer.write(serialize(encode_jpeg(images[row]), ids[row], label))


def write_held_out_files(folder, test_ids, test_labels):
    """classes.txt and test_labels.csv (id,label in test order) in the size folder."""
    from petals.data import CLASS_NAMES_FILE

    with open(os.path.join(folder, CLASS_NAMES_FILE), "w") as handle:
        handle.write("".join(f"{name}\n" for name in CLASS_NAMES))
    with open(os.path.join(folder, TEST_LABELS_FILE), "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "label"])
        writer.writerows(zip(test_ids, (int(label) for label in test_labels), strict=True))


def write_demo_dataset(root, image_size=32, shards=4, limit=None, seed=0):
    """Write `root/tfrecords-jpeg-SxS/{train,val,test}/` and its held-out files; return the folder.

    `limit` keeps only the first N digits (tiny datasets for smoke tests). The folder is built
    beside its destination and renamed into place, so a failed run leaves nothing half-written.
    An existing folder is never overwritten.
    """
    destination = os.path.join(root, f"tfrecords-jpeg-{image_size}x{image_size}")
    if os.path.exists(destination):
        raise FileExistsError(f"{destination} already exists; delete it to regenerate")
    images, labels = digit_images(image_size, seed)
    random = np.random.default_rng(seed)
    order = random.permutation(len(images))[:limit]
    ids = unique_ids(len(order), random)
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".demo-", dir=root)
    try:
        start = 0
        for split, fraction in SPLIT_FRACTIONS.items():
            stop = len(order) if split == "test" else start + round(fraction * len(order))
            rows = order[start:stop]
            # The test records carry no class, as in the competition; their labels are held out.
            split_labels = None if split == "test" else labels[rows]
            write_split(
                os.path.join(staging, split),
                image_size,
                images[rows],
                split_labels,
                ids[start:stop],
                shards,
            )
            if split == "test":
                write_held_out_files(staging, ids[start:stop], labels[rows])
            start = stop
        os.rename(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def held_out_labels(root, image_size):
    """{test id: label} from the demo's test_labels.csv in the size folder of `root`."""
    from petals.data import size_folder

    path = os.path.join(size_folder(root, image_size), TEST_LABELS_FILE)
    if not os.path.exists(path):
        raise ValueError(
            f"{path} does not exist: this dataset has no held-out test labels "
            "(kit.demo_data writes them)"
        )
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0] != ["id", "label"]:
        raise ValueError(f"{path} does not start with the header id,label")
    return {record_id: int(label) for record_id, label in rows[1:]}


def submission_scores(submission_path, held_out):
    """Accuracy of a submission file against held-out test labels ({id: label}), and chance.

    `chance` is the accuracy of always answering the most frequent class: no better can be
    expected from predictions that do not line up with their ids (a shuffle scores about
    sum(p_k²) ≤ max(p_k) on average). Refuses a submission whose ids differ from the labels'.
    """
    from petals.submission import SubmissionError, read_submission

    ids, predicted = read_submission(submission_path)
    if sorted(ids) != sorted(held_out):
        raise SubmissionError(
            f"{submission_path}: its {len(ids)} ids are not the {len(held_out)} held-out test ids"
        )
    truth = np.array([held_out[record_id] for record_id in ids])
    frequencies = np.unique(truth, return_counts=True)[1] / len(truth)
    return {
        "accuracy": float(np.mean(truth == predicted)),
        "chance": float(frequencies.max()),
        "images": len(ids),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder that will hold tfrecords-jpeg-SxS/")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--shards", type=int, default=4, help="shards per split")
    parser.add_argument("--limit", type=int, default=None, help="keep only the first N images")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    # TensorFlow writes the records; its start-up banner says nothing a user can act on.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    destination = os.path.join(
        arguments.root, f"tfrecords-jpeg-{arguments.image_size}x{arguments.image_size}"
    )
    if os.path.isdir(destination):
        if not os.path.exists(os.path.join(destination, TEST_LABELS_FILE)):
            sys.exit(
                f"error: {destination} was made by an older version (no {TEST_LABELS_FILE} "
                "or class names); delete it and run this again"
            )
        print(f"{destination} exists; kept as it is")
        return
    print(
        "wrote",
        write_demo_dataset(
            arguments.root, arguments.image_size, arguments.shards, arguments.limit, arguments.seed
        ),
    )


if __name__ == "__main__":
    main()
