"""keep_freed_memory: the mallopt calls od2 makes, and (slow, in a process of its own) their effect on glibc."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from od2.utils.cpu_heap import keep_freed_memory

# From glibc's malloc.h, the independent reference for the parameters od2 passes.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


class FakeGlibc:
    """Records mallopt calls; mallopt returns 1 on success and 0 on failure, as glibc's does."""

    def __init__(self, mallopt_result: int = 1):
        self.calls: list[tuple[int, int]] = []
        self.mallopt_result = mallopt_result

    def gnu_get_libc_version(self) -> bytes:
        return b"2.39"

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.mallopt_result


class FakeMusl:
    """A C library without glibc's symbols (musl, macOS's libSystem)."""

    def mallopt(self, param: int, value: int) -> int:
        raise AssertionError("mallopt must not be called off glibc")


def test_keep_freed_memory_disables_mmap_and_trimming(monkeypatch):
    libc = FakeGlibc()
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc)
    assert keep_freed_memory() is True
    # MALLOC_MMAP_MAX_=0: no allocation is mapped on its own; MALLOC_TRIM_THRESHOLD_: the largest int mallopt takes.
    assert sorted(libc.calls) == sorted([(M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1)])


def test_keep_freed_memory_reports_a_refused_setting(monkeypatch):
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeGlibc(mallopt_result=0))
    assert keep_freed_memory() is False


def test_keep_freed_memory_changes_nothing_off_glibc(monkeypatch):
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeMusl())
    assert keep_freed_memory() is False


# Twelve rounds, like training steps, each allocating three 64 MiB tensors (above glibc's largest mmap threshold,
# 32 MiB), writing every page and freeing them; prints the minor page faults of the last round. With the setting,
# the heap took 3 to 6 rounds before freed chunks fitted the next round's tensors (10 processes), so the check
# after 6 rounds failed about one run in six; 12 leave a margin.
_FAULTS_OF_A_LATER_ROUND = """
import resource, sys, torch
from od2.utils.cpu_heap import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensors = [torch.empty(16 * 2**20).fill_(1.0) for _ in range(3)]
    del tensors
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    glibc_defaults = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", _FAULTS_OF_A_LATER_ROUND, mode], capture_output=True, text=True,
                         check=True, env=glibc_defaults)
    return int(out.stdout.split()[-1])


# Slow (two fresh processes that import torch and fault in over 2 GiB): it checks the real C library, so it runs in
# CI's slow step, where it still shows whether the setting od2 bench relies on (docs/benchmarks.md) has its effect.
@pytest.mark.slow
@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"), reason="needs glibc")
def test_glibc_reuses_freed_memory_without_page_faults():
    pages = 3 * 64 * 2**20 // 4096
    assert _faults("default") > pages // 2  # glibc's default: mapped afresh, faulted in page by page
    assert _faults("keep") < pages // 100
