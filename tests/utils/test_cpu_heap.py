"""keep_freed_memory: after it, large tensors freed and allocated again soon cost no page faults."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"), reason="needs glibc")

# Six rounds, like training steps, each allocating three 64 MiB tensors (above glibc's largest mmap threshold,
# 32 MiB), writing every page and freeing them; prints the minor page faults of the last round.
_FAULTS_OF_A_LATER_ROUND = """
import resource, sys, torch
from od2.utils.cpu_heap import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
for _ in range(6):
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


def test_freed_memory_is_reused_without_page_faults():
    pages = 3 * 64 * 2**20 // 4096
    assert _faults("default") > pages // 2  # glibc's default: mapped afresh, faulted in page by page
    assert _faults("keep") < pages // 100
