"""The package layers of docs/architecture.md depend one way: no od2 module imports from a layer above its own.

Every import is read from the source (top-level, inside functions and under TYPE_CHECKING alike), so a lazy import
cannot hide an arrow that runs back up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "od2"

# Lowest first. A module may import from its own package and from packages of a lower rank.
LAYERS: dict[str, int] = {
    "utils": 0,        # leaf helpers: comm (distributed), cfg_node, visualize, cpu_heap, atomic writes
    "layers": 1,
    "modeling": 2,
    "config": 3,       # the schema includes the sections that backbone and neck registrations own
    "models": 4,       # builders without YAML: od2.models.retinanet(...), efficientdet_d0(...)
    "data": 4,         # the training pipeline only
    "evaluation": 5,
    "export": 5,
    "engine": 6,
    "tools": 7,        # the application layer: od2 data|model-info|lr-plot|report
    "detector": 7,     # od2.Detector: a trained model loaded from a run or config, called on images
    "benchmark": 7,
    "cli": 8,
    "__init__": 9,     # od2/__init__.py: the package's public names (od2.Detector), imported on first use
}
# Pairs that the ranks would allow but the design rules out: the trainer gets its evaluator as a hook.
FORBIDDEN = {("engine", "evaluation")}


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "od2" and len(parts) > 1 else None


def _imports(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, imported od2 module) for every import in ``source`` of ``module``, relative imports resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            # `from od2 import tools` imports the package named by the alias
            targets = [f"od2.{alias.name}" for alias in node.names] if target == "od2" else [target]
            found += [(node.lineno, name) for name in targets]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("od2.")]


def _module_imports(path: Path) -> list[tuple[int, str]]:
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return _imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")


def _violations(own: str, imports: list[tuple[int, str]], forbidden: set[tuple[str, str]] = FORBIDDEN) -> list[str]:
    bad = []
    for line, name in imports:
        target = _package_of(name)
        if target is None or target == own:
            continue
        if LAYERS[target] >= LAYERS[own] or (own, target) in forbidden:
            bad.append(f"line {line}: {name} ({own} -> {target})")
    return bad


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if _package_of(".".join(p.relative_to(PACKAGE.parent).parts)))


def test_every_package_has_a_layer():
    packages = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
    assert packages <= set(LAYERS), f"give {sorted(packages - set(LAYERS))} a layer in LAYERS and the docs"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_import_runs_back_up(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    upward = _violations(own, _module_imports(path))
    assert not upward, f"{path.relative_to(PACKAGE.parent)} imports against the layers: {upward}"


def test_the_checker_sees_lazy_relative_and_aliased_imports():
    source = """
from ..evaluation import evaluate
def f():
    from od2 import tools
    import od2.engine.trainer
from . import comm
"""
    imports = _imports(source, "od2.data.setup", is_package=False)
    assert sorted(name for _, name in imports) == ["od2.data", "od2.engine.trainer", "od2.evaluation", "od2.tools"]
    assert len(_violations("data", imports)) == 3
    assert _violations("engine", [(1, "od2.evaluation.evaluate")], forbidden={("engine", "evaluation")})
