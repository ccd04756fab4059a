"""Write a file so that readers and crashes only ever see the old content or the new, never half of it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for the block to write; when the block ends, the temporary file
    replaces ``path`` in one ``os.replace`` (atomic on POSIX and Windows). On an error the temporary file is
    removed and ``path`` is left as it was. Missing parent folders are made.

    ``with atomic_write(out) as tmp: torch.save(state, tmp)`` (or ``tmp.write_text(...)``, ``fig.savefig(tmp)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so the rename stays on one file system; a random part so concurrent writers never share a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"atomic_write({path}): the block wrote nothing to {tmp}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
