"""Writing the report's files so that a reader never sees half of one, with the permissions
a plainly created file gets (the umask's), so that a group sharing the outputs can read them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from trainlab.record import umask_mode


def write_atomic(path: Path, write) -> None:
    """Call write(tmp_path), then rename over `path`. mkstemp makes its file 0600, which the
    rename would keep: the file gets the umask's mode first."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
