"""No test reads the machine it runs on (issue 16): the CPU's name, the core count, the terminal's width or the
locale would make a test pass on one machine and fail on another (the bench section's wrap moved with the CPU name).
A test that needs such a value sets it (monkeypatch, an env of its own) instead of reading it."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# module.function calls whose answer depends on the machine, the terminal or the locale
MACHINE_CALLS = {
    ("os", "cpu_count"), ("os", "sched_getaffinity"), ("multiprocessing", "cpu_count"), ("os", "get_terminal_size"),
    ("shutil", "get_terminal_size"), ("platform", "processor"), ("platform", "node"), ("platform", "uname"),
    ("socket", "gethostname"), ("locale", "getlocale"), ("locale", "getpreferredencoding"),
    ("locale", "getencoding"),
}
MACHINE_STRINGS = ("/proc/cpuinfo", "COLUMNS", "LINES")


def machine_reads(source: str) -> list[str]:
    """``name (line N)`` for each read of a machine property in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value,
                                                                                              ast.Name):
            if (node.func.value.id, node.func.attr) in MACHINE_CALLS:
                found.append(f"{node.func.value.id}.{node.func.attr}() (line {node.lineno})")
        elif isinstance(node, ast.Constant) and node.value in MACHINE_STRINGS:
            found.append(f"{node.value!r} (line {node.lineno})")
    return found


def test_the_scan_finds_machine_reads():
    source = "import os, shutil\nn = os.cpu_count()\nw = shutil.get_terminal_size()\nc = open('/proc/cpuinfo')\n"
    assert machine_reads(source) == ["os.cpu_count() (line 2)", "shutil.get_terminal_size() (line 3)",
                                     "'/proc/cpuinfo' (line 4)"]
    assert machine_reads("import os\nos.environ['COLUMNS']\n") == ["'COLUMNS' (line 2)"]
    assert machine_reads("import os\nos.getpid()\n") == []


def test_no_test_reads_the_machine():
    offenders = {str(path.relative_to(TESTS)): reads for path in sorted(TESTS.rglob("*.py"))
                 if path.name != Path(__file__).name and (reads := machine_reads(path.read_text(encoding="utf-8")))}
    assert offenders == {}
