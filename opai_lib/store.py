"""Files that are either complete or absent: the one atomic-write helper of the project.

Records, checkpoints and caches are written through ``atomic_write``: the bytes go to a
temporary file unique to this process and call, are flushed to disk, and the file is then
renamed over the target. A reader (or a crash) never sees half a file, and two writers of
the same path never share a temporary name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, content: bytes | str | Callable[[Path], None]) -> Path:
    """Write ``content`` to ``path`` atomically and return the path.

    ``content`` is bytes, text (UTF-8), or a function that writes the file it is given
    (e.g. ``lambda p: torch.save(state, p)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if callable(content):
            content(tmp)
        else:
            tmp.write_bytes(content.encode() if isinstance(content, str) else content)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
