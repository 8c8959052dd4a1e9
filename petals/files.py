"""Writing a file atomically: the one way the package and the kit write results and state.

The file is written to a temporary name beside its destination and renamed into place, so a
failed or killed write leaves no partial file that looks valid; it is left readable by all
(0644), like any ordinary file, although `mkstemp` makes it private. When several processes
share a run (petals.hosts), only process 0 writes, and every process learns whether it could:
if not, all of them raise, so that none waits for process 0 in the next collective.
"""

import os
import tempfile

from petals import hosts


def write_atomically(path, write, overwrite=False, binary=False):
    """Call write(file) on a temporary file beside `path`, then rename it to `path` (mode 0644).

    Results are never overwritten (FileExistsError); state files, and a run replacing its own
    provisional results, pass `overwrite=True`. `binary`: the file is opened in bytes mode.
    When several processes share a run (petals.hosts), every one of them calls this at the same
    point: process 0 writes, the others, which computed the same results, write nothing, and if
    process 0's write fails every process raises (`hosts.on_writer`).
    """
    hosts.on_writer(lambda: _write(path, write, overwrite, binary), f"to write {path}")
    return path


def _write(path, write, overwrite, binary):
    """write_atomically's write, on the one process that writes."""
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists; results are never overwritten")
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=".partial-", dir=folder)
    try:
        with (
            os.fdopen(descriptor, "wb") if binary else os.fdopen(descriptor, "w", newline="")
        ) as handle:
            write(handle)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; these are ordinary files
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
