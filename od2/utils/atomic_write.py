"""Write a file so that readers and crashes only ever see the old content or the new, never half of it."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The temporary files atomic_write makes: .<name>.<pid>-<8 hex digits>.tmp
TEMPORARY = re.compile(r"\..+\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp")


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for the block to write; when the block ends, the temporary file
    replaces ``path`` in one ``os.replace`` (atomic on POSIX and Windows). On an error the temporary file is
    removed and ``path`` is left as it was. Missing parent folders are made.

    ``with atomic_write(out) as tmp: torch.save(state, tmp)`` (or ``tmp.write_text(...)``, ``fig.savefig(tmp)``).

    Raises:
        OSError: a write that failed (a full disk, a file-size limit, a read-only folder), with the errno and OS
            reason of the failure and ``path`` as its file name (not the temporary's).
    """
    path = Path(path)
    # Same folder, so the rename stays on one file system; a random part so concurrent writers never share a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"atomic_write({path}): the block wrote nothing to {tmp}")
        os.replace(tmp, path)
    except OSError as error:
        if error.errno is None:  # not from the OS (e.g. the FileNotFoundError above): nothing to add
            raise
        raise OSError(error.errno, f"cannot write {path}: {error.strerror}", str(path)) from error
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write` left in ``folder`` when its process was killed mid-write
    (those of processes still running stay). Call it before this process writes into ``folder``: its own process
    id counts as finished, since a restarted container may give the new process the killed one's id.

    Returns:
        The removed files.
    """
    removed = []
    for path in Path(folder).glob(".*.tmp") if Path(folder).is_dir() else ():
        match = TEMPORARY.fullmatch(path.name)
        if match and not _running(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
