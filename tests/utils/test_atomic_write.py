"""atomic_write: a file is replaced whole or not at all."""

from __future__ import annotations

import os

import pytest

from od2.utils.atomic_write import atomic_write


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
