"""petals.files: one atomic write, readable by all, nothing partial left on failure."""

import os
import stat

import pytest

from petals.files import write_atomically


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_file_is_written_whole_and_readable_by_all(tmp_path):
    path = tmp_path / "metrics.json"
    assert write_atomically(path, lambda handle: handle.write("{}\n")) == path
    assert path.read_text() == "{}\n" and mode(path) == 0o644
    write_atomically(path, lambda handle: handle.write(b"\x00\x01"), overwrite=True, binary=True)
    assert path.read_bytes() == b"\x00\x01" and mode(path) == 0o644
    assert [entry.name for entry in tmp_path.iterdir()] == ["metrics.json"]


def test_results_are_never_overwritten_unless_asked(tmp_path):
    path = tmp_path / "submission.csv"
    path.write_text("id,label\n")
    with pytest.raises(FileExistsError, match="results are never overwritten"):
        write_atomically(path, lambda handle: handle.write("other"))
    assert path.read_text() == "id,label\n"


def test_a_failed_write_leaves_no_partial_file_and_the_old_one_intact(tmp_path):
    path = tmp_path / "pushes.json"
    path.write_text("old")

    def write(handle):
        handle.write("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        write_atomically(path, write, overwrite=True)
    assert path.read_text() == "old"
    assert [entry.name for entry in tmp_path.iterdir()] == ["pushes.json"]
    with pytest.raises(RuntimeError, match="killed mid-write"):
        write_atomically(tmp_path / "new.json", write)
    assert [entry.name for entry in tmp_path.iterdir()] == ["pushes.json"]
