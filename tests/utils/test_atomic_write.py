"""atomic_write: a file is replaced whole or not at all."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from od2.utils.atomic_write import atomic_write, remove_stale_temporaries


def test_the_file_appears_whole_and_no_temporary_stays(tmp_path):
    path = tmp_path / "new" / "folder" / "result.json"  # missing folders are made
    with atomic_write(path) as tmp:
        tmp.write_text("first")
        assert not path.exists()  # nothing at the destination until the block ends
    with atomic_write(path) as tmp:
        tmp.write_text("second")
    assert path.read_text() == "second"
    assert os.listdir(path.parent) == ["result.json"]


def test_an_error_keeps_the_previous_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "model.pth"
    path.write_text("previous")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "previous"
    assert os.listdir(tmp_path) == ["model.pth"]


def test_a_block_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="wrote nothing"):
        with atomic_write(tmp_path / "x.txt"):
            pass
    assert os.listdir(tmp_path) == []


def test_the_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "summary.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(umask)
    # as open() makes it (0o666 less the umask), not the owner-only 0o600 of a mkstemp file
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("failing", ["write", "replace"])
def test_an_os_error_names_the_destination_and_the_reason(tmp_path, monkeypatch, failing):
    path = tmp_path / "model.pth"
    path.write_text("previous")
    if failing == "replace":  # e.g. the folder was made read-only mid-run
        def read_only(*args):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(OSError) as raised:
        with atomic_write(path) as tmp:
            tmp.write_text("half")
            if failing == "write":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    reason = os.strerror(errno.ENOSPC if failing == "write" else errno.EROFS)
    assert str(path) in str(raised.value) and reason in str(raised.value)
    assert raised.value.errno == (errno.ENOSPC if failing == "write" else errno.EROFS)
    assert path.read_text() == "previous"
    assert os.listdir(tmp_path) == ["model.pth"]


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead = int(finished.stdout)
    stale = [tmp_path / f".model_0000005.pth.{dead}-0a1b2c3d.tmp", tmp_path / f".last_checkpoint.{dead}-00ff00ff.tmp"]
    kept = [tmp_path / "model_0000005.pth", tmp_path / ".notes.tmp",  # not the helper's naming
            tmp_path / f".model_0000010.pth.{os.getppid()}-0a1b2c3d.tmp"]  # a writer still running
    for path in stale + kept:
        path.write_text("x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in kept)
    assert remove_stale_temporaries(tmp_path / "missing") == []
