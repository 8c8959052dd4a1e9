"""The image on record: Kaggle's build files, the versions, the devices, and its fingerprint."""

import importlib.metadata

from petals import image


def test_the_record_names_the_build_the_versions_and_the_devices(tmp_path):
    (tmp_path / "git_commit").write_text("0123abcd\n")
    (tmp_path / "build_date").write_text("20260301-120000\n")
    files = {"git_commit": tmp_path / "git_commit", "build_date": tmp_path / "build_date"}
    document = image.record("TPU v5 lite", 8, 1, image_files=files)
    assert document["git_commit"] == "0123abcd" and document["build_date"] == "20260301-120000"
    for name in ("jax", "jaxlib", "keras"):
        assert document[name] == importlib.metadata.version(name)
    assert {"python", "libtpu", "keras_hub", "tensorflow"} <= set(document)
    assert (document["device_kind"], document["device_count"], document["process_count"]) == (
        "TPU v5 lite",
        8,
        1,
    )


def test_missing_build_files_are_none(tmp_path):
    document = image.record("cpu", 1, 1, image_files={"git_commit": tmp_path / "absent"})
    assert document["git_commit"] is None


def test_the_fingerprint_names_the_image():
    document = image.record("cpu", 1, 1, image_files={})
    fingerprinted = image.fingerprinted(document)
    assert len(fingerprinted["fingerprint"]) == image.FINGERPRINT_LENGTH
    # The same record, read again or with its fingerprint in it, has the same fingerprint.
    assert image.fingerprint(fingerprinted) == fingerprinted["fingerprint"]
    assert image.fingerprint(image.record("cpu", 1, 1, image_files={})) == image.fingerprint(
        document
    )
    # Another jaxlib, or another topology, is another image.
    assert image.fingerprint({**document, "jaxlib": "0.0.1"}) != fingerprinted["fingerprint"]
    assert image.fingerprint({**document, "device_count": 8}) != fingerprinted["fingerprint"]


def test_the_line_names_the_fingerprint_and_versions():
    document = image.fingerprinted(image.record("cpu", 1, 1, image_files={}))
    text = image.line(document)
    assert text.startswith(f"image {document['fingerprint']}: jax {document['jax']}")
    assert "cpu × 1" in text
