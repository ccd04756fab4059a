"""CI's contract (.ci/run and the Makefile's test targets): the quick suite and the slow tests both run, and CI
fails when either step fails, "no tests collected" (pytest's exit 5) included."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not (shutil.which("make") and shutil.which("bash")), reason="needs make and bash")


def stub(path: Path, body: str) -> Path:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("test_rc,slow_rc,ci_fails", [(0, 0, False), (2, 0, True), (0, 2, True), (1, 1, True)])
def test_ci_runs_both_steps_and_fails_when_either_fails(tmp_path, test_rc, slow_rc, ci_fails):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "make.log"
    stub(bin_dir / "make", f'echo "$*" >> {log}\n[ "$1" = test ] && exit {test_rc}\n[ "$1" = test-slow ] && '
                           f"exit {slow_rc}\nexit 99\n")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(REPO / ".ci/run")], env=env, capture_output=True, text=True)
    assert log.read_text().split("\n")[:2] == ["test", "test-slow"]
    assert (result.returncode != 0) is ci_fails, result.stdout


@pytest.mark.parametrize("target,selection", [("test", []), ("test-slow", ["-m", "slow"])])
@pytest.mark.parametrize("pytest_rc,make_fails", [(0, False), (1, True), (5, True)])
def test_make_test_targets_select_and_treat_no_tests_as_failure(tmp_path, target, selection, pytest_rc, make_fails):
    args = tmp_path / "pytest.args"
    python = stub(tmp_path / "python", f'printf "%s\\n" "$@" > {args}\nexit {pytest_rc}\n')
    # -o: take the venv as installed, so that make runs only the tests (with the stub as its Python)
    result = subprocess.run(["make", "-s", "-C", str(REPO), "-o", ".venv/.od2-installed", target, f"PY={python}"],
                            capture_output=True, text=True)
    assert args.read_text().split() == ["-m", "pytest", "-q", *selection]
    assert (result.returncode != 0) is make_fails, result.stdout + result.stderr
    assert ("collected no tests" in result.stdout) is (pytest_rc == 5)
