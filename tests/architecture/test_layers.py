"""The layering written in docs/ARCHITECTURE.md, checked on the import statements.

Module-level imports only (imports inside functions are deliberate lazy loads). Each rule
names the package that must not reach into another; the cycle check covers every module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "model_export")

# (importer prefix, forbidden prefix): lower layers never import upper ones.
FORBIDDEN = [
    ("service.imaging", "service.api"),
    ("service.imaging", "service.inference"),
    ("service.inference", "service.api"),
    ("service", "torch"),
    ("model_export.ssacl", "model_export.data"),
    ("model_export.ssacl", "model_export.export"),
    ("model_export.data", "model_export.export"),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top_level_imports(path: Path, module: str) -> set[str]:
    """Absolute names imported at module level (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    return {m: _top_level_imports(p, m) for m, p in modules.items()}


GRAPH = _graph()


@pytest.mark.parametrize(("importer", "forbidden"), FORBIDDEN)
def test_no_upward_imports(importer: str, forbidden: str) -> None:
    bad = sorted(
        f"{m} imports {name}"
        for m, names in GRAPH.items()
        if m == importer or m.startswith(importer + ".")
        for name in names
        if name == forbidden or name.startswith(forbidden + ".")
    )
    assert not bad, bad


def test_no_import_cycles() -> None:
    edges = {m: {n for n in names if n in GRAPH and n != m} for m, names in GRAPH.items()}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(m: str, stack: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(edges[m]):
            if n.startswith(m + "."):  # a package importing its own submodule is no cycle
                continue
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n] if n in stack else [m, n]
            if n not in state and (cycle := visit(n, [*stack, n])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m, [m])):
            pytest.fail(" -> ".join(cycle))


def test_the_report_stages_have_their_modules() -> None:
    """decode -> preprocess -> encode/generate -> ground -> respond, one module each."""
    for module in (
        "service.imaging.decode",
        "service.imaging.preprocess",
        "service.inference.engine",
        "service.inference.search",
        "service.inference.grounding",
        "service.inference.heatmaps",
        "service.api.responses",
    ):
        assert module in GRAPH, module
    assert not any(
        n.startswith("service.inference.heatmaps") for n in GRAPH["service.imaging.preprocess"]
    )
