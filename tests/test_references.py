"""The docs, docstrings and comments name only od2 modules, classes and functions that exist."""

from __future__ import annotations

import importlib
import io
import re
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOTTED_NAME = re.compile(r"(?<![\w/])od2(?:\.[A-Za-z_]\w*)+")


def _prose(path: Path) -> str:
    """A Markdown file's text, or a Python file's strings and comments (code may hold a variable called od2)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return text
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return "\n".join(t.string for t in tokens if t.type in (tokenize.STRING, tokenize.COMMENT))


def _resolves(name: str) -> bool:
    """Whether ``name`` (``od2.pkg.module.attr``) is an importable module followed by existing attributes."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


def test_every_od2_name_in_docs_and_docstrings_exists():
    paths = [*REPO.glob("od2/**/*.py"), *REPO.glob("docs/*.md"), REPO / "README.md"]
    mentions = {(name, str(path.relative_to(REPO))) for path in paths for name in DOTTED_NAME.findall(_prose(path))}
    missing = sorted((name, where) for name, where in mentions if not _resolves(name))
    assert not missing, missing
